"""Resume is exact: an interrupted search (Ctrl-C or kill -9) continues as if never stopped."""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    ToySpaceBase,
    assert_kept,
    register_toys,
    sigkill_after_trials,
    stored_after_kill,
)

from nasforge.estimators.base import Estimator, Result
from nasforge.experiment import resume, search
from nasforge.store import LOCK_NAME, RunStore
from nasforge.strategies.evolution import RegularizedEvolution

SPACE = "toy-resume"
EST = "fake-resume"
EVO = {"population_size": 4, "sample_size": 2}
TESTS_DIR = Path(__file__).resolve().parent


class ToySpace(ToySpaceBase):
    """A tiny made-up space; nothing to build."""

    name = SPACE


class SlowFake(Estimator):
    """Deterministic per-arch score after ``sleep`` seconds; some archs fail."""

    name = EST
    needs_data = False

    def __init__(self, sleep: float = 0.0, fail_mod: int = 0, interrupt_at: int = 0) -> None:
        self.sleep, self.fail_mod, self.interrupt_at = sleep, fail_mod, interrupt_at
        self.calls = 0

    def config(self) -> dict[str, Any]:  # interrupt_at is test plumbing, not part of the run
        return {"sleep": self.sleep, "fail_mod": self.fail_mod}

    def _evaluate(self, arch, space, data, fidelity) -> Result:
        self.calls += 1
        if self.interrupt_at and self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        h = zlib.crc32(arch.text.encode())
        if self.sleep:
            time.sleep(self.sleep)
        if self.fail_mod and h % self.fail_mod == 0:
            raise RuntimeError("unlucky arch")
        return Result({"val_accuracy": (h % 997) / 997})


class InterruptedEvolution(RegularizedEvolution):
    """Evolution that is 'killed' during its k-th ask: after a finished trial, before the next."""

    def __init__(self, *a: Any, stop_at_ask: int = 0, **k: Any) -> None:
        super().__init__(*a, **k)
        self.stop_at_ask, self.asks = stop_at_ask, 0

    def ask(self):
        self.asks += 1
        if self.asks == self.stop_at_ask:
            self.space.sample(self.rng)  # advance the rng in memory: must not leak into the run
            raise KeyboardInterrupt
        return super().ask()


register_toys(ToySpace, SlowFake)

N = 14


def _archs(trials) -> list[str]:
    return [t.arch for t in trials]


def _reference(tmp_path: Path, fail_mod: int = 0, n: int = N) -> list[str]:
    """The archs of an uninterrupted run, in trial order."""
    res = search("digits", space=SPACE, strategy="evolution", strategy_options=EVO,
                 estimator=EST, estimator_options={"fail_mod": fail_mod}, trials=n, seed=3,
                 out=tmp_path / "reference", progress=False)
    assert len(res.trials) == n
    return _archs(res.trials)


@pytest.mark.parametrize("k", [1, 5, 6, 11])
def test_resume_after_interrupted_trial_is_exact(tmp_path, k):
    """Ctrl-C during the k-th evaluation (the trial is stored as running), then resume."""
    ref = _reference(tmp_path, fail_mod=4)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        search("digits", space=SPACE, strategy="evolution", strategy_options=EVO,
               estimator=SlowFake(fail_mod=4, interrupt_at=k), trials=N, seed=3, out=out,
               progress=False)
    with RunStore.open(out) as s:
        assert s.n_completed() == k - 1 and len(s.trials("running")) == 1
    res = resume(out, progress=False)
    assert _archs(res.trials) == ref
    assert any(t.status == "failed" for t in res.trials)  # failures resume exactly too
    assert [t.attempt for t in res.trials] == [2 if t.id == k else 1 for t in res.trials]


@pytest.mark.parametrize("k", [2, 6, 9])
def test_resume_after_interrupt_between_trials_is_exact(tmp_path, k):
    """Killed inside ask (after trial k-1 finished): the state of the last tell is used."""
    ref = _reference(tmp_path)
    out = tmp_path / "run"
    sp = ToySpace()
    strat = InterruptedEvolution(sp, seed=3, stop_at_ask=k, **EVO)
    with pytest.raises(KeyboardInterrupt):
        search("digits", space=sp, strategy=strat, estimator=EST, trials=N, seed=3, out=out,
               progress=False, estimator_options={"fail_mod": 0})
    with RunStore.open(out) as s:
        assert s.n_completed() == k - 1 and s.counts()["running"] == 0
    assert _archs(resume(out, progress=False).trials) == ref


def test_several_interruptions_and_budget_extension(tmp_path):
    ref = _reference(tmp_path, n=N + 4)
    out = tmp_path / "run"
    common = dict(space=SPACE, strategy="evolution", strategy_options=EVO, seed=3, out=out,
                  progress=False)
    with pytest.raises(KeyboardInterrupt):
        search("digits", estimator=SlowFake(interrupt_at=3), trials=N, **common)
    with pytest.raises(KeyboardInterrupt):  # resumed, and interrupted again
        search("digits", estimator=SlowFake(interrupt_at=4), trials=N, resume=True, **common)
    res = resume(out, progress=False)
    assert _archs(res.trials) == ref[:N]
    # a finished run extended to a larger total continues the same sequence
    res = resume(out, trials=N + 4, progress=False)
    assert _archs(res.trials) == ref


# ------------------------------------------------------------------------ kill -9
def child_search(out: str, trials: int) -> None:
    """Run in a subprocess by the kill test (imports this module to register the fakes)."""
    search("digits", space=SPACE, strategy="evolution", strategy_options=EVO, estimator=EST,
           estimator_options={"sleep": 0.2}, trials=trials, seed=3, out=out, progress=False)


def test_sigkill_then_resume_loses_nothing_and_duplicates_nothing(tmp_path):
    out = tmp_path / "run"
    code = (f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_resume as t; "
            f"t.child_search({str(out)!r}, {N})")
    sigkill_after_trials(code, out, 4, poll=0.05)
    before, running = stored_after_kill(out)
    assert 4 <= len(before) < N
    assert (out / LOCK_NAME).exists()  # stale lock of the dead pid, taken over below

    res = resume(out, progress=False)
    done = [t for t in res.trials if t.done]
    assert len(done) == N == len(res.trials)
    assert len({t.arch for t in done}) == N  # no arch evaluated twice
    assert len({t.id for t in done}) == N
    after = {t.id: t for t in done}
    assert_kept(before, after)  # every trial completed before the kill is kept as it was
    for t in running:  # the trial cut off by the kill was redone under its own id
        assert after[t.id].arch == t.arch and after[t.id].attempt == 2
    # and the whole run is the one an uninterrupted search makes
    ref = search("digits", space=SPACE, strategy="evolution", strategy_options=EVO,
                 estimator=EST, trials=N, seed=3, out=tmp_path / "ref", progress=False)
    assert _archs(res.trials) == _archs(ref.trials)
    assert not (out / LOCK_NAME).exists()
