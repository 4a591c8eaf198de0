"""One search loop (``Run``) for every caller: its stores, its callbacks, its ports."""

from __future__ import annotations

import math
from typing import Any

import pytest

from nasforge import spaces, strategies
from nasforge.errors import RunDirError
from nasforge.estimators.base import Estimator, Result
from nasforge.execution.local import InProcessExecutor
from nasforge.run.loop import Callback, Run, _Loop, run_in_memory
from nasforge.run.setup import _Setup
from nasforge.run.stores import MemoryStore, Store
from nasforge.store import RunStore


class _Ops(Estimator):
    """A deterministic score of an NB201 cell (fixed cost), failing on mostly-empty cells."""

    name = "ops-score"
    needs_data = False

    def _evaluate(self, arch, space, data, fidelity) -> Result:
        text = arch.text
        if text.count("none") >= 3:
            return Result.failed("mostly empty cell", cost=0.5)
        v = (text.count("conv_3x3") * 7 + text.count("conv_1x1") * 3 + len(text) % 5) / 50
        return Result(metrics={"val_accuracy": v}, cost=1.0, report={"test_accuracy": v / 2})


def _search(store: Store, seed: int, trials: int, callbacks: list[Callback] = ()) -> Run:
    space = spaces.get("nb201")
    strat = strategies.get("evolution", space=space, seed=seed, population_size=8,
                           sample_size=3)  # fmt: skip
    run = Run(store, _Setup({}, space, strat, _Ops(), None), None, {"trials": trials},
              InProcessExecutor(), callbacks=callbacks)
    run.run()
    return run


def _plain(store: Store) -> list[dict[str, Any]]:
    """The trials without their wall-clock times (the only thing two runs cannot share)."""
    return [{k: v for k, v in t.to_dict().items() if k not in ("started_at", "finished_at")}
            for t in store.trials()]


def test_run_store_and_memory_store_record_the_same_search(tmp_path) -> None:
    mem = MemoryStore()
    with RunStore.create(tmp_path / "run", {"space": "nb201"}) as disk:
        _search(disk, seed=3, trials=40)
        _search(mem, seed=3, trials=40)
        assert isinstance(disk, Store) and isinstance(mem, Store)
        got, want = _plain(mem), _plain(disk)
        assert len(want) == 40 and any(t["status"] == "failed" for t in want)
        assert got == want
        assert mem.strategy_state() == disk.strategy_state()
        assert mem.n_completed() == disk.n_completed() == 40
        assert mem.counts() == disk.counts()
        for mode in ("max", "min"):
            assert mem.best("val_accuracy", mode).id == disk.best("val_accuracy", mode).id
        assert mem.best("nothing") is None and disk.best("nothing") is None
        assert mem.get_meta("elapsed_s") > 0 and mem.get_meta("missing", 7) == 7


def test_memory_store_trial_steps() -> None:
    s = MemoryStore({"a": 1})
    assert s.config == {"a": 1} and s.strategy_state() == (None, 0) and s.best() is None
    note = {"parent": [1, 2]}
    tid = s.start_trial("x", {"arch": "x"}, {"epochs": 2}, {"k": 1}, 0, meta={"m": 1}, note=note)
    note["parent"].append(3)  # the store keeps what it was given, not a live reference
    assert tid == 1 and s.trials("running")[0].note == {"parent": [1, 2]}
    s.restart_trial(tid)
    s.finish_trial(tid, Result(metrics={"val_accuracy": 0.5}, cost=2.0), {"k": 2}, 1, attempts=2)
    rec = s.trial(tid)
    assert (rec.status, rec.attempt, rec.told, rec.cost) == ("ok", 3, 1, 2.0)
    assert s.strategy_state() == ({"k": 2}, 1) and s.get_meta("m") == 1
    with pytest.raises(RunDirError):
        s.finish_trial(tid, Result.failed("again"), {}, 2)
    with pytest.raises(RunDirError):
        s.restart_trial(99)
    s.trials()[0].metrics["val_accuracy"] = 9.0  # a copy
    assert s.best().metrics["val_accuracy"] == 0.5
    with pytest.raises(ValueError):
        s.best(mode="up")


class _Log(Callback):
    def __init__(self, stop_after: int | None = None) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.stop_after = stop_after

    def on_trial_start(self, trial_id, suggestion) -> None:
        self.events.append(("start", trial_id, suggestion.arch.text))

    def on_trial_end(self, trial_id, suggestion, result) -> bool | None:
        self.events.append(("end", trial_id, result.status))
        return None if self.stop_after is None else trial_id < self.stop_after

    def on_session_end(self) -> None:
        self.events.append(("session_end",))


def test_callbacks_see_every_trial_and_can_stop_the_run() -> None:
    quiet, stopper = _Log(), _Log(stop_after=7)
    store = MemoryStore()
    run = _search(store, seed=0, trials=30, callbacks=[quiet, stopper])
    assert run.stopped and store.n_completed() == 7  # the stop came after trial 7's tell
    assert quiet.events == stopper.events
    ids = [e[1] for e in quiet.events if e[0] == "start"]
    assert ids == list(range(1, 8))
    first = store.trial(1)
    assert quiet.events[:2] == [("start", 1, first.arch), ("end", 1, first.status)]
    assert quiet.events[-1] == ("session_end",) and quiet.events.count(("session_end",)) == 1
    assert run.strategy_s > 0
    assert _Loop is Run  # the old name still works


def test_session_end_is_called_when_the_loop_raises() -> None:
    class Boom(Callback):
        def on_trial_end(self, trial_id, suggestion, result) -> bool | None:
            raise RuntimeError("boom")

    log = _Log()
    with pytest.raises(RuntimeError, match="boom"):
        _search(MemoryStore(), seed=0, trials=5, callbacks=[Boom(), log])
    assert log.events[-1] == ("session_end",)


def test_base_callback_hooks_do_nothing() -> None:
    run = run_in_memory(strategies.get("random", space=spaces.get("nb201"), seed=1),
                        spaces.get("nb201"), _Ops(), trials=5, callbacks=[Callback()])
    assert run.n_done == 5 and not run.stopped and run.store.n_completed() == 5


def test_queries_to_target_matches_a_plain_ask_tell_loop() -> None:
    from nasforge.proxy_eval import queries_to_target

    space = spaces.get("nb201")
    lookup = _Scores()
    for name in ("evolution", "random", "local-search"):
        for seed in range(2):
            target = set(_first_asks(name, seed, 120)[60:62])  # found after ~60 queries
            want = _plain_queries(strategies.get(name, space=space, seed=seed), lookup,
                                  target, 150)
            got = queries_to_target(strategies.get(name, space=space, seed=seed), lookup,
                                    target, 150)
            assert got == want and got is not None
    assert queries_to_target(strategies.get("random", space=space, seed=0), lookup,
                             {"not an arch"}, 20) is None


class _Scores(dict):
    """A made-up validation accuracy (percent) for any arch string."""

    def __missing__(self, text: str) -> float:
        return float(sum(map(ord, text)) % 97)


def _first_asks(name: str, seed: int, n: int) -> list[str]:
    st = strategies.get(name, space=spaces.get("nb201"), seed=seed)
    out = []
    for _ in range(n):
        s = st.ask()
        out.append(s.arch.text)
        st.tell(s, Result(metrics={"val_accuracy": _Scores()[s.arch.text] / 100.0}))
    return out


def _plain_queries(strategy: Any, lookup: Any, target: set[str], max_queries: int) -> int | None:
    """The loop ``queries_to_target`` had before it used ``Run``."""
    for q in range(1, max_queries + 1):
        s = strategy.ask()
        strategy.tell(s, Result(metrics={"val_accuracy": lookup[s.arch.text] / 100.0}))
        if s.arch.text in target:
            return q
    return None


def test_memory_store_best_skips_non_finite() -> None:
    s = MemoryStore()
    for v in (math.nan, 0.3, math.inf, 0.3):
        tid = s.start_trial("a", {}, None, {}, 0)
        s.finish_trial(tid, Result(metrics={"val_accuracy": v}), {}, tid)
    assert s.best().id == 2 and s.best(mode="min").id == 2
