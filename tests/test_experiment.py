"""The search loop: budgets, failures, config checks, Ctrl-C, parallel slots, end to end."""

from __future__ import annotations

import json
import math
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch.nn as nn

import nasforge
from nasforge import estimators, spaces
from nasforge.errors import NasforgeError, RunDirError, UnknownNameError
from nasforge.estimators.base import Estimator, Result
from nasforge.executors import InProcessExecutor, PoolExecutor, run_trial
from nasforge.experiment import SearchResult, parse_duration, resume, search
from nasforge.spaces.base import Choice, SearchSpace
from nasforge.store import RunStore

SPACE = "toy-exp"
EST = "fake-exp"


class ToySpace(SearchSpace):
    """Four choices of four options: 256 archs, nothing to build."""

    name = SPACE

    def __init__(self, n: int = 4) -> None:
        self.n = n

    def config(self) -> dict[str, Any]:
        return {"n": self.n}

    def choices(self) -> tuple[Choice, ...]:
        return tuple(Choice(f"c{i}", tuple(range(self.n))) for i in range(4))

    def build(self, arch, input_shape, num_classes) -> nn.Module:
        return nn.Flatten()


def _score(text: str) -> float:
    return (zlib.crc32(text.encode()) % 1000) / 1000


class FakeEstimator(Estimator):
    """A deterministic score per arch; fails (raise, or NaN) for archs whose hash says so."""

    name = EST
    needs_data = False

    def __init__(self, sleep: float = 0.0, fail_mod: int = 0, nan_mod: int = 0,
                 interrupt_at: int = 0, seed: int = 0) -> None:
        self.sleep, self.fail_mod, self.nan_mod = sleep, fail_mod, nan_mod
        self.interrupt_at, self.seed = interrupt_at, seed
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def config(self) -> dict[str, Any]:
        return {"sleep": self.sleep, "fail_mod": self.fail_mod, "nan_mod": self.nan_mod,
                "seed": self.seed}

    def _evaluate(self, arch, space, data, fidelity) -> Result:
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            call = self.calls
        try:
            if self.interrupt_at and call == self.interrupt_at:
                raise KeyboardInterrupt
            h = zlib.crc32(arch.text.encode())
            if self.fail_mod and h % self.fail_mod == 0:
                raise RuntimeError(f"boom on {arch.text}")
            if self.sleep:
                time.sleep(self.sleep)
            acc = float("nan") if self.nan_mod and h % self.nan_mod == 1 else _score(arch.text)
            return Result({"val_accuracy": acc, "params": float(sum(arch.values))},
                          report={"test_accuracy": acc / 2})
        finally:
            with self._lock:
                self.active -= 1


if SPACE not in spaces.registry:
    spaces.register(SPACE)(ToySpace)
if EST not in estimators.registry:
    estimators.register(EST)(FakeEstimator)

FAST = dict(space=SPACE, estimator=EST, progress=False)
EVO = {"population_size": 4, "sample_size": 2}


# --------------------------------------------------------------------------- durations
@pytest.mark.parametrize("text, secs", [
    ("45", 45.0), (45, 45.0), (45.5, 45.5), ("90s", 90.0), ("10m", 600.0), ("1h30m", 5400.0),
    ("1h", 3600.0), (" 2m 30s ", 150.0), ("1.5h", 5400.0), ("10min", 600.0), ("1d", 86400.0),
])
def test_parse_duration(text, secs):
    assert parse_duration(text) == pytest.approx(secs)


@pytest.mark.parametrize("bad", ["", "ten", "10x", "m", "1h30", "-5", "0", 0, -1.0, True,
                                 "nan", None, "5mm"])
def test_parse_duration_garbage(bad):
    with pytest.raises(NasforgeError):
        parse_duration(bad)


# ------------------------------------------------------------------------------ basics
def test_exact_number_of_trials(tmp_path):
    res = search("digits", strategy="evolution", strategy_options=EVO, trials=9,
                 out=tmp_path / "r", **FAST)
    assert isinstance(res, SearchResult)
    assert len(res.trials) == 9 and all(t.status == "ok" for t in res.trials)
    assert len({t.arch for t in res.trials}) == 9  # evolution does not repeat archs
    best = max(res.trials, key=lambda t: (t.metrics["val_accuracy"], -t.id))
    assert res.best_arch is not None and res.best_arch.text == best.arch
    assert res.best_metrics["val_accuracy"] == best.metrics["val_accuracy"]
    assert res.best_metrics["val_accuracy"] == _score(best.arch)
    # a table-like estimator (needs_data False): no final training, report as test metrics
    assert res.model_dir is None and not (tmp_path / "r" / "best").exists()
    assert res.test_metrics == {"test_accuracy": best.metrics["val_accuracy"] / 2}
    df = res.to_dataframe()
    assert len(df) == 9 and set(df["status"]) == {"ok"}
    with RunStore.open(tmp_path / "r") as s:
        assert s.n_completed() == 9 and s.counts()["running"] == 0
        meta = s.meta()
        assert meta["status"] == "finished"
        assert meta["elapsed_s"] > 0
        cfg = meta["config"]
        assert cfg["space"] == {"name": SPACE, "options": {"n": 4}}
        assert cfg["strategy"]["name"] == "evolution"
        assert cfg["strategy"]["options"]["population_size"] == 4
        assert cfg["estimator"]["options"]["seed"] == 0
        assert cfg["budget"] == {"trials": 9, "time_budget": None}
        state, n_told = s.strategy_state()
        assert n_told == 9 and state["n_told"] == 9


def test_failing_trials_do_not_stop_the_search(tmp_path):
    res = search("digits", strategy="random", trials=16, out=tmp_path / "r",
                 estimator_options={"fail_mod": 3, "nan_mod": 5}, **FAST)
    assert len(res.trials) == 16
    failed = [t for t in res.trials if t.status == "failed"]
    ok = [t for t in res.trials if t.ok]
    assert failed and ok
    for t in failed:
        h = zlib.crc32(t.arch.encode())
        assert (h % 3 == 0 and "boom" in t.error) or (h % 5 == 1 and "non-finite" in t.error)
    for t in ok:
        assert math.isfinite(t.metrics["val_accuracy"])
    assert res.best_arch.text == max(ok, key=lambda t: t.metrics["val_accuracy"]).arch


def test_objects_instead_of_names(tmp_path):
    sp = ToySpace(n=3)
    strat = nasforge.strategies.get("random", space=sp, seed=5)
    res = search("digits", space=sp, strategy=strat, estimator=FakeEstimator(), trials=4,
                 out=tmp_path / "r", progress=False)
    assert len(res.trials) == 4
    cfg = RunStore.open(tmp_path / "r").config
    assert cfg["space"] == {"name": SPACE, "options": {"n": 3}}
    assert cfg["strategy"]["options"]["seed"] == 5
    # the stored names + options rebuild everything: resume extends it from the store alone
    res2 = resume(tmp_path / "r", trials=6, progress=False)
    assert len(res2.trials) == 6 and all(a.values[0] < 3 for a in [res2.best_arch])


def test_default_out_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = search("digits", strategy="random", trials=2, **FAST)
    assert res.run_dir.parent == Path("runs")
    assert res.run_dir.name.startswith(f"{SPACE}-random-")
    assert RunStore.exists(tmp_path / res.run_dir)


# ------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kw, err, text", [
    ({"space": "nope"}, UnknownNameError, "Valid spaces"),
    ({"strategy": "evolutoin"}, UnknownNameError, "evolution"),
    ({"estimator": "nope"}, UnknownNameError, "Valid estimators"),
    ({"trials": None}, NasforgeError, "no budget"),
    ({"trials": 0}, NasforgeError, "positive"),
    ({"time_budget": "soon"}, NasforgeError, "not a duration"),
    ({"strategy_options": {"popsize": 3}}, NasforgeError, "population_size"),
    ({"space_options": {"m": 3}}, NasforgeError, "unknown option"),
    ({"final_epochs": 0}, NasforgeError, "final_epochs"),
    ({"resume": True, "out": None}, NasforgeError, "out="),
])
def test_bad_input_is_a_clear_error_and_leaves_no_run(tmp_path, monkeypatch, kw, err, text):
    monkeypatch.chdir(tmp_path)
    args = {**FAST, "strategy": "evolution", "out": tmp_path / "r", "trials": 3, **kw}
    with pytest.raises(err, match=text):
        search("digits", **args)
    assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()


def test_existing_run_needs_resume_and_same_config(tmp_path):
    out = tmp_path / "r"
    search("digits", strategy="random", trials=3, out=out, **FAST)
    with pytest.raises(RunDirError, match="nasforge resume"):
        search("digits", strategy="random", trials=3, out=out, **FAST)
    with pytest.raises(RunDirError, match="different configuration") as e:
        search("digits", strategy="random", trials=5, out=out, resume=True, seed=1, **FAST)
    assert "seed" in str(e.value)
    with pytest.raises(RunDirError, match="strategy"):
        search("digits", strategy="evolution", trials=5, out=out, resume=True, **FAST)
    # the refusals left the run untouched and unlocked; the same config continues it
    res = search("digits", strategy="random", trials=5, out=out, resume=True, **FAST)
    assert len(res.trials) == 5
    assert RunStore.open(out).config["budget"]["trials"] == 5


def test_resume_of_missing_run(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        resume(tmp_path / "none")


# ---------------------------------------------------------------------------- budgets
def test_time_budget_is_total_over_resumes(tmp_path):
    out = tmp_path / "r"
    t0 = time.monotonic()
    res = search("digits", strategy="random", trials=None, time_budget=0.6, out=out,
                 estimator_options={"sleep": 0.05}, **FAST)
    wall = time.monotonic() - t0
    n1 = len(res.trials)
    assert 2 <= n1 <= 14  # ~0.6 s of 0.05 s trials, with generous slack for a busy machine
    assert wall < 10
    el1 = RunStore.open(out).get_meta("elapsed_s")
    # stopped asking once the budget was spent (the budget is the whole job: loading the
    # data counts too, so the search itself gets a little less than 0.6 s)
    assert 0.4 <= el1 < 0.6 + 2.0
    # the budget is spent: resuming with the same budget runs nothing more
    assert len(resume(out, progress=False).trials) == n1
    # a larger total budget continues from the elapsed time already spent
    res2 = resume(out, time_budget=1.2, progress=False)
    assert len(res2.trials) > n1
    el2 = RunStore.open(out).get_meta("elapsed_s")
    assert 0.9 <= el2 < 1.2 + 2.0


def test_trials_and_time_whichever_first(tmp_path):
    res = search("digits", strategy="random", trials=3, time_budget="1h", out=tmp_path / "r",
                 **FAST)
    assert len(res.trials) == 3


# --------------------------------------------------------------------------- Ctrl-C
def test_keyboard_interrupt_keeps_everything_and_says_how_to_resume(tmp_path, capsys):
    out = tmp_path / "r"
    est = FakeEstimator(interrupt_at=4)
    with pytest.raises(KeyboardInterrupt):
        search("digits", estimator=est, space=SPACE, strategy="evolution", strategy_options=EVO,
               trials=8, out=out, progress=False)
    err = capsys.readouterr().err
    assert f"nasforge resume {out}" in err
    assert "3 completed trials" in err
    with RunStore.open(out, write=True) as s:  # the lock was released
        assert s.counts() == {"running": 1, "ok": 3, "failed": 0}
        assert s.get_meta("status") == "interrupted"
        running = s.trials("running")[0]
    res = resume(out, progress=False)
    assert len(res.trials) == 8 and all(t.ok for t in res.trials)
    redone = next(t for t in res.trials if t.id == running.id)
    assert redone.arch == running.arch and redone.attempt == 2


# -------------------------------------------------------------------------- executors
def test_in_process_executor_returns_done_futures():
    ex = InProcessExecutor()
    f = ex.submit(lambda a, b: a + b, 1, 2)
    assert f.done() and f.result() == 3
    g = ex.submit(lambda: 1 / 0)
    assert g.done() and isinstance(g.exception(), ZeroDivisionError)
    with pytest.raises(KeyboardInterrupt):
        ex.submit(_raise_interrupt)


def _raise_interrupt() -> None:
    raise KeyboardInterrupt


def test_run_trial_turns_exceptions_into_failures():
    class Broken(FakeEstimator):
        def evaluate(self, *a, **k):  # overrides the safety net of Estimator.evaluate
            raise ValueError("bad")

    sp = ToySpace()
    arch = sp.sample(np.random.default_rng(0))
    res = run_trial(Broken(), sp, None, arch, None)
    assert res.status == "failed" and "ValueError: bad" in res.error
    assert run_trial(FakeEstimator(), sp, None, arch, None).metrics["val_accuracy"] == \
        _score(arch.text)


def test_thread_pool_keeps_slots_full(tmp_path):
    est = FakeEstimator(sleep=0.15)
    with PoolExecutor(max_workers=2, kind="thread") as ex:
        res = search("digits", space=SPACE, estimator=est, strategy="random", trials=6,
                     out=tmp_path / "r", progress=False, executor=ex)
    assert len(res.trials) == 6 and est.calls == 6
    assert est.max_active == 2  # two trials in flight, never more
    assert len({t.arch for t in res.trials}) == 6


def test_progress_output_has_summary_table(tmp_path, capsys):
    search("digits", space=SPACE, estimator=EST, strategy="random", trials=3,
           out=tmp_path / "r", progress=True)
    err = capsys.readouterr().err
    assert "top 3 of 3 ok trials" in err and "val_accuracy" in err


# -------------------------------------------------------------------- real end to end
@pytest.mark.slow
def test_end_to_end_digits_cnn_train_with_final_retrain_and_export(tmp_path):
    """SLOW-ish (~15 s): real cnn space + train estimator on digits, final retrain, export."""
    # CPU time, not wall time: "under a minute" must not fail because other jobs share the
    # cores (the whole search, final retrain and export run in this process)
    t0 = time.process_time()
    out = tmp_path / "run"
    res = search(
        "digits", space="cnn", strategy="evolution", estimator="train", trials=4, seed=0,
        out=out, progress=False,
        space_options={"max_blocks": 2, "widths": [16, 32], "stem_widths": [16]},
        strategy_options={"population_size": 2, "sample_size": 2},
        estimator_options={"epochs": 1, "data_fraction": 0.25, "batch_size": 32,
                           "latency_repeats": 3},
        final_epochs=4,
    )
    cpu = time.process_time() - t0
    assert cpu < 60
    assert len(res.trials) == 4 and sum(t.ok for t in res.trials) >= 1
    ok = [t for t in res.trials if t.ok]
    assert res.best_arch.text == max(ok, key=lambda t: (t.metrics["val_accuracy"], -t.id)).arch
    tm = res.test_metrics
    for k in ("test_accuracy", "test_loss", "params", "flops", "latency_ms"):
        assert k in tm and math.isfinite(tm[k])
    assert "val_accuracy" not in tm  # the final model trains on the validation split too
    assert tm["epochs"] == 4
    assert tm["test_accuracy"] > 0.3  # 10 classes: well above chance after 4 epochs
    assert res.model_dir == out / "best"
    for f in ("arch.json", "weights.safetensors", "model.onnx", "summary.json"):
        assert (res.model_dir / f).is_file(), f
    summary = json.loads((res.model_dir / "summary.json").read_text())
    assert summary["arch"] == res.best_arch.text
    with RunStore.open(out) as s:
        final = s.get_meta("final")
    assert final["metrics"]["test_accuracy"] == tm["test_accuracy"]
    assert final["arch"] == res.best_arch.text
    # the exported model predicts the test split as well as the retrained one scored it
    data = nasforge.load_dataset("digits", seed=0)
    model = nasforge.load(res.model_dir)
    model_acc = _accuracy(model, data)
    assert model_acc == pytest.approx(tm["test_accuracy"], abs=0.01)
    # resuming a finished run does not retrain (same best): same metrics, instantly
    again = resume(out, progress=False)
    assert again.test_metrics == tm and again.model_dir == res.model_dir


def _accuracy(loaded: Any, data: Any) -> float:
    import torch

    net = loaded.module.eval()  # data.x_test is already normalized like the training data
    with torch.no_grad():
        pred = net(torch.as_tensor(data.x_test)).argmax(1).numpy()
    return float((pred == data.y_test).mean())
