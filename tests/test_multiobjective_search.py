"""Multi-objective, constrained and multi-fidelity search through the loop (search/resume/CLI).

Fast: a toy space with a fake estimator whose metrics are known functions of the
architecture (so the feasible set and the front can be brute-forced), and a tiny cnn on
digits where a real retrain/export is needed.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import ToySpaceBase, register_toys

import nasforge
from nasforge import spaces
from nasforge.errors import NasforgeError, RunDirError
from nasforge.estimators.base import Estimator, Result
from nasforge.experiment import resume, search
from nasforge.objectives import Constraint, Objective
from nasforge.store import RunStore, TrialRecord
from nasforge.strategies.multifidelity import highest_fidelity_best
from nasforge.strategies.nsga2 import NSGA2

SPACE = "toy-mo"
EST = "fake-mo"


class ToySpace(ToySpaceBase):
    """Four choices of five options (625 archs); nothing to build."""

    name = SPACE


def accuracy_of(text: str, size: int) -> float:
    """Larger networks tend to be more accurate (as in real life), plus a hash 'noise'."""
    return 0.3 * (zlib.crc32(text.encode()) % 1000) / 1000 + 0.04 * size


class FakeMO(Estimator):
    """Known metrics: accuracy from a hash, latency and params grow with the choices.

    With a fidelity, accuracy *drops* by ``fidelity_penalty`` per epoch, so a low-fidelity
    score always looks better than a high-fidelity one (mixing them would be caught).
    ``interrupt_at`` raises KeyboardInterrupt on that call (test plumbing, not config).
    """

    name = EST
    needs_data = False

    def __init__(self, fidelity_penalty: float = 0.0, interrupt_at: int = 0) -> None:
        self.fidelity_penalty = fidelity_penalty
        self.interrupt_at = interrupt_at
        self.calls: list[tuple[str, Any]] = []

    def config(self) -> dict[str, Any]:
        return {"fidelity_penalty": self.fidelity_penalty}

    def _evaluate(self, arch, space, data, fidelity) -> Result:
        self.calls.append((arch.text, dict(fidelity)))
        if self.interrupt_at and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        s = sum(arch.values)
        acc = accuracy_of(arch.text, s) - self.fidelity_penalty * float(fidelity.get("epochs", 0))
        return Result({"val_accuracy": acc, "latency_ms": 1.0 + 0.5 * s,
                       "params": 1000.0 * (1 + s)}, report={"test_accuracy": acc})


register_toys(ToySpace, FakeMO)

FAST = dict(space=SPACE, estimator=EST, progress=False)
NSGA = {"population_size": 6}
OBJS = ["val_accuracy:max", "latency_ms:min"]


def brute_front(trials: list[TrialRecord], objectives: list[Objective],
                constraints: list[Constraint]) -> list[int]:
    """Ids of feasible ok trials that no other feasible ok trial dominates (O(n^2))."""
    pool = [t for t in trials if t.ok and all(c.satisfied(t.metrics) for c in constraints)]

    def costs(t: TrialRecord) -> list[float]:
        return [o.minimized(t.metrics) for o in objectives]

    front = []
    for a in pool:
        ca = costs(a)
        dominated = any(all(x <= y for x, y in zip(costs(b), ca, strict=True))
                        and any(x < y for x, y in zip(costs(b), ca, strict=True))
                        for b in pool if b is not a)
        if not dominated:
            front.append(a.id)
    return sorted(front)


# ------------------------------------------------------------------------ constrained front
def test_constrained_nsga2_returns_feasible_best_and_stores_the_front(tmp_path):
    limit = 4.0  # latency 1 + 0.5 * sum(choices): about half of the space is feasible
    res = search("digits", objectives=OBJS, constraints="latency_ms<=4", trials=24,
                 strategy_options=NSGA, out=tmp_path / "r", **FAST)
    assert res.feasible and res.message is None
    feas = [t for t in res.trials if t.ok and t.metrics["latency_ms"] <= limit]
    infeas = [t for t in res.trials if t.ok and t.metrics["latency_ms"] > limit]
    assert feas and infeas  # the constraint binds
    # the returned architecture is the most accurate feasible trial, not the most accurate
    want = max(feas, key=lambda t: (t.metrics["val_accuracy"], -t.id))
    assert res.best_arch.text == want.arch
    assert res.best_metrics["latency_ms"] <= limit
    # the constraint changed the answer: the most accurate trial overall is infeasible
    assert max(t.metrics["val_accuracy"] for t in res.trials if t.ok) > want.metrics["val_accuracy"]
    # the stored front is the brute-force front of the feasible trials
    objs = [Objective("val_accuracy", "max"), Objective("latency_ms", "min")]
    cons = [Constraint("latency_ms", "<=", limit)]
    front = brute_front(res.trials, objs, cons)
    assert res.pareto_ids == front and len(front) >= 2
    with RunStore.open(tmp_path / "r") as s:
        cfg = s.config
        pareto = s.get_meta("pareto")
    assert pareto["trial_ids"] == front
    assert pareto["objectives"] == OBJS and pareto["constraints"] == ["latency_ms<=4"]
    # several objectives and no strategy chosen: NSGA-II, given the goals
    assert cfg["strategy"]["name"] == "nsga2"
    assert cfg["objectives"] == OBJS and cfg["constraints"] == ["latency_ms<=4"]
    assert cfg["strategy"]["options"]["objectives"] == OBJS
    assert cfg["strategy"]["options"]["constraints"] == ["latency_ms<=4"]
    md = (tmp_path / "r" / "pareto.md").read_text()
    assert (tmp_path / "r" / "pareto.png").stat().st_size > 1000
    for tid in front:
        assert f"{tid}: " in md
    assert "latency_ms<=4" in md


def test_keyword_constraints_and_single_objective_strategy(tmp_path):
    # one objective on a single-metric strategy sets its metric/mode; a dict of bounds works
    res = search("digits", strategy="random", objectives=["latency_ms:min"],
                 constraints={"max_params": "4k", "min_val_accuracy": 0.2}, trials=15,
                 out=tmp_path / "r", **FAST)
    ok = [t for t in res.trials if t.ok]
    feas = [t for t in ok if t.metrics["params"] <= 4000 and t.metrics["val_accuracy"] >= 0.2]
    assert feas and len(feas) < len(ok)
    want = min(feas, key=lambda t: (t.metrics["latency_ms"], t.id))
    assert res.best_arch.text == want.arch
    with RunStore.open(tmp_path / "r") as s:
        cfg = s.config
    assert cfg["strategy"]["options"]["metric"] == "latency_ms"
    assert cfg["strategy"]["options"]["mode"] == "min"
    assert cfg["constraints"] == ["params<=4k", "val_accuracy>=0.2"]
    # a constrained single-objective run is reported against the constrained metrics
    assert (tmp_path / "r" / "pareto.md").is_file()


def test_unconstrained_single_objective_run_is_unchanged(tmp_path):
    res = search("digits", strategy="random", trials=8, out=tmp_path / "r", **FAST)
    want = max((t for t in res.trials if t.ok), key=lambda t: (t.metrics["val_accuracy"], -t.id))
    assert res.best_arch.text == want.arch and res.feasible
    assert not (tmp_path / "r" / "pareto.md").exists()
    with RunStore.open(tmp_path / "r") as s:
        assert s.get_meta("pareto") is None
        assert s.config["objectives"] is None and s.config["constraints"] is None


@pytest.mark.parametrize("kw, text", [
    ({"strategy": "evolution", "objectives": OBJS}, "single metric"),
    ({"objectives": ["val_accuracy:up"]}, "direction"),
    ({"constraints": "latency_ms<2ms"}, "constraint"),
    ({"constraints": {"maximum_params": 3}}, "max_<metric>"),
])
def test_bad_goals_are_clear_errors_and_leave_no_run(tmp_path, kw, text):
    with pytest.raises(NasforgeError, match=text):
        search("digits", trials=2, out=tmp_path / "r", **FAST, **kw)
    assert not RunStore.exists(tmp_path / "r")


def test_infeasible_everything_returns_no_model(tmp_path):
    res = search("digits", objectives=OBJS, constraints=["latency_ms<=0.5"], trials=6,
                 strategy_options=NSGA, out=tmp_path / "r", **FAST)
    assert not res.feasible and res.best_arch is None and res.model_dir is None
    assert "no feasible model" in res.message and "latency_ms<=0.5" in res.message
    assert "best latency_ms seen 1" in res.message  # says how close the search got
    assert res.pareto_ids == []
    assert "no feasible model" in (tmp_path / "r" / "pareto.md").read_text()


# ------------------------------------------------------------------------------- resume
def test_objectives_and_constraints_survive_resume(tmp_path):
    out = tmp_path / "r"
    search("digits", objectives=OBJS, constraints="params<=8k", trials=8,
           strategy_options=NSGA, out=out, **FAST)
    res = resume(out, trials=16, progress=False)
    assert len(res.trials) == 16
    with RunStore.open(out) as s:
        cfg = s.config
        state, _ = s.strategy_state()
    assert cfg["objectives"] == OBJS and cfg["constraints"] == ["params<=8k"]
    assert state["own"]["objectives"] == OBJS and state["own"]["constraints"] == ["params<=8k"]
    feas = [t for t in res.trials if t.ok and t.metrics["params"] <= 8000]
    assert res.best_arch.text == max(feas, key=lambda t: (t.metrics["val_accuracy"], -t.id)).arch
    assert res.pareto_ids == brute_front(
        res.trials, [Objective("val_accuracy", "max"), Objective("latency_ms", "min")],
        [Constraint("params", "<=", 8000)])
    # search(resume=True) with other goals is refused, naming what differs
    with pytest.raises(RunDirError, match="constraints"):
        search("digits", objectives=OBJS, constraints="params<=9k", trials=20,
               strategy_options=NSGA, out=out, resume=True, **FAST)
    with pytest.raises(RunDirError, match="objectives"):
        search("digits", strategy="nsga2", objectives=["val_accuracy:max", "params:min"],
               constraints="params<=8k", trials=20, strategy_options=NSGA, out=out,
               resume=True, **FAST)
    # ... and the same goals continue it
    again = search("digits", objectives=OBJS, constraints="params<=8k", trials=18,
                   strategy_options=NSGA, out=out, resume=True, **FAST)
    assert len(again.trials) == 18


def test_optuna_nsga2_gets_metrics_and_directions(tmp_path):
    pytest.importorskip("optuna")
    res = search("digits", strategy="optuna-nsga2", objectives=OBJS, constraints="params<=9k",
                 trials=8, out=tmp_path / "r", **FAST)
    with RunStore.open(tmp_path / "r") as s:
        opts = s.config["strategy"]["options"]
    assert opts["metrics"] == ["val_accuracy", "latency_ms"]
    assert opts["directions"] == ["maximize", "minimize"]
    feas = [t for t in res.trials if t.ok and t.metrics["params"] <= 9000]
    assert res.best_arch.text == max(feas, key=lambda t: (t.metrics["val_accuracy"], -t.id)).arch


def test_strategy_object_must_match_objectives(tmp_path):
    sp = ToySpace()
    strat = NSGA2(sp, objectives=["val_accuracy:max", "params:min"])
    with pytest.raises(NasforgeError, match="optimizes"):
        search("digits", space=sp, strategy=strat, estimator=FakeMO(), objectives=OBJS,
               trials=2, out=tmp_path / "r", progress=False)
    res = search("digits", space=sp, strategy=NSGA2(sp, objectives=OBJS), estimator=FakeMO(),
                 objectives=OBJS, trials=3, out=tmp_path / "r2", progress=False)
    assert len(res.trials) == 3


# ------------------------------------------------------------------------- multi-fidelity
HB = {"min_resource": 1, "max_resource": 9, "eta": 3}


def test_multifidelity_best_comes_from_the_highest_fidelity(tmp_path):
    res = search("digits", strategy="hyperband", strategy_options=HB, trials=20,
                 estimator_options={"fidelity_penalty": 0.05}, out=tmp_path / "r", **FAST)
    ok = [t for t in res.trials if t.ok]
    top = max(t.fidelity["epochs"] for t in ok)
    assert top == 9  # the first bracket reached its top rung
    # precondition: the best raw score is at a lower fidelity (a mix would pick it)
    assert max(ok, key=lambda t: t.metrics["val_accuracy"]).fidelity["epochs"] < top
    i = highest_fidelity_best(res.trials)
    assert res.best_arch.text == res.trials[i].arch
    best_rec = next(t for t in ok if t.arch == res.best_arch.text and t.fidelity["epochs"] == top)
    assert res.best_metrics == best_rec.metrics


def test_multifidelity_constrained_falls_back_to_feasible(tmp_path):
    res = search("digits", strategy="hyperband", strategy_options=HB, trials=20,
                 constraints="params<=9k", estimator_options={"fidelity_penalty": 0.05},
                 out=tmp_path / "r", **FAST)
    ok = [t for t in res.trials if t.ok and t.metrics["params"] <= 9000]
    top = max(t.fidelity["epochs"] for t in ok)
    at_top = [t for t in ok if t.fidelity["epochs"] == top]
    want = max(at_top, key=lambda t: (t.metrics["val_accuracy"], -t.id))
    assert res.best_arch.text == want.arch


def _sequence(run_dir: Path) -> list[tuple[str, Any]]:
    with RunStore.open(run_dir) as s:
        return [(t.arch, t.fidelity, t.status) for t in s.trials()]


@pytest.mark.parametrize("strategy", ["hyperband", "bohb"])
def test_multifidelity_interrupted_and_resumed_through_the_loop(tmp_path, strategy, capsys):
    n = 22
    opts = dict(HB, **({"min_points_in_model": 3} if strategy == "bohb" else {}))
    ref = search("digits", strategy=strategy, strategy_options=opts, trials=n,
                 out=tmp_path / "ref", **FAST)
    want = _sequence(tmp_path / "ref")
    assert len(want) == n and len({f["epochs"] for _, f, _ in want}) >= 2  # promotions happened
    out = tmp_path / "cut"
    # Ctrl-C during the 7th evaluation, then again during the 6th of the resumed session
    with pytest.raises(KeyboardInterrupt):
        search("digits", space=SPACE, strategy=strategy, strategy_options=opts,
               estimator=FakeMO(interrupt_at=7), trials=n, out=out, progress=False)
    assert len(_sequence(out)) == 7  # 6 done + the interrupted one, still 'running'
    with RunStore.open(out, write=True) as s:
        cfg = s.config
    assert cfg["strategy"]["name"] == strategy
    with pytest.raises(KeyboardInterrupt):
        search("digits", space=SPACE, strategy=strategy, strategy_options=opts,
               estimator=FakeMO(interrupt_at=6), trials=n, out=out, resume=True, progress=False)
    res = resume(out, progress=False)  # from the store alone
    assert _sequence(out) == want
    assert res.best_arch == ref.best_arch
    with RunStore.open(out) as s1, RunStore.open(tmp_path / "ref") as s2:
        assert s1.strategy_state()[0]["own"] == s2.strategy_state()[0]["own"]


# --------------------------------------------------------- real retrain: tiny cnn on digits
CNN = {"max_blocks": 2, "widths": [8, 16], "stem_widths": [8]}
TRAIN = {"epochs": 1, "data_fraction": 0.3, "batch_size": 64, "latency_repeats": 3}


def _params_bound(n_trials: int, k: int) -> float:
    """The k-th smallest params count among the archs seed-0 random search will try."""
    from nasforge import strategies

    sp = spaces.get("cnn", **CNN)
    strat = strategies.get("random", space=sp, seed=0)
    counts = sorted(sum(p.numel() for p in sp.build(strat.ask().arch, (1, 8, 8), 10).parameters())
                    for _ in range(n_trials))
    return float(counts[k - 1])


@pytest.fixture(scope="module")
def digits() -> Any:
    return nasforge.load_dataset("digits", seed=0)


@pytest.mark.slow
def test_tiny_cnn_params_constraint_holds_for_the_exported_model(tmp_path, digits, monkeypatch):
    from nasforge.run import finalize

    bound = _params_bound(6, 3)
    out = tmp_path / "r"
    # the final model's re-measured latency of the first choice is "too slow" after
    # retraining: it must not be exported; the next feasible candidate is retrained instead
    seen: dict[str, Any] = {}
    real = finalize._cost_metrics

    def noisy(model, input_shape, *, onnx, **kw):
        m = real(model, input_shape, onnx=onnx, **kw)
        if onnx and seen.get("first") is None:
            seen["first"] = m["params"]
        if onnx and m["params"] == seen["first"]:
            m["latency_ms"] = 1e6
        return m

    monkeypatch.setattr(finalize, "_cost_metrics", noisy)
    res = search(digits, space="cnn", strategy="random", estimator="train", trials=6,
                 space_options=CNN, estimator_options=TRAIN, final_epochs=1, out=out,
                 constraints={"max_params": bound, "max_latency_ms": 1e5}, progress=False)
    ok = [t for t in res.trials if t.ok]
    feas = sorted((t for t in ok if t.metrics["params"] <= bound),
                  key=lambda t: (-t.metrics["val_accuracy"], t.id))
    # the bound binds: breaking archs are refused before training (never ok, never trained)
    refused = [t for t in res.trials if "infeasible before training" in (t.error or "")]
    assert len(feas) >= 2 and refused and len(feas) == len(ok), "the params bound must bind"
    assert feas[0].metrics["params"] != feas[1].metrics["params"]
    assert res.feasible and res.model_dir == out / "best"
    assert res.best_arch.text == feas[1].arch  # first choice rejected after retraining
    summary = json.loads((out / "best" / "summary.json").read_text())
    assert summary["arch"] == feas[1].arch
    assert summary["metrics"]["params"] <= bound
    assert summary["constraints"] == [f"params<={nasforge.objectives.format_number(bound)}",
                                      "latency_ms<=100k"]
    # torch and ONNX Runtime latencies at batch 1 and 32, threads and runtimes, always
    for k in ("latency_ms", "latency_ms_b32", "onnx_latency_ms", "onnx_latency_ms_b32"):
        assert math.isfinite(summary["metrics"][k]) and summary["metrics"][k] > 0, k
    lat = summary["latency"]
    assert lat["threads"] == summary["metrics"]["latency_threads"] >= 1
    assert "torch" in lat["runtimes"]["torch"] and "onnxruntime" in lat["runtimes"]["onnx"]
    assert lat["onnx_file"] == "model.onnx"
    assert not (out / ".best-staging").exists()
    with RunStore.open(out) as s:
        final = s.get_meta("final")
    assert final["trial_id"] == feas[1].id and final["first_choice"] == feas[0].arch
    assert len(final["rejected"]) == 1 and f"trial {feas[0].id}" in final["rejected"][0]
    # a resumed finished run keeps that answer without retraining
    monkeypatch.setattr(finalize, "_final_train", None)
    again = search(digits, space="cnn", strategy="random", estimator="train", trials=6,
                   space_options=CNN, estimator_options=TRAIN, final_epochs=1, out=out,
                   constraints={"max_params": bound, "max_latency_ms": 1e5}, progress=False,
                   resume=True)
    assert again.best_arch.text == feas[1].arch and again.test_metrics == res.test_metrics


def test_cli_infeasible_run_exits_2_and_exports_nothing(tmp_path, capsys):
    from nasforge.cli import main

    out = tmp_path / "r"
    with pytest.raises(SystemExit) as e:
        main(["search", "-d", "digits", "--space", "cnn", "--trials", "2", "--out", str(out),
              "--space-opt", f"max_blocks={CNN['max_blocks']}", "--space-opt", "widths=[8]",
              "--space-opt", "stem_widths=[8]", "--data-fraction", "0.2",
              "--estimator-opt", "batch_size=64", "--final-epochs", "1",
              "--max-params", "10", "--no-progress"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "no feasible model" in err and "params<=10" in err
    assert not (out / "best").exists() and not (out / ".best-staging").exists()
    with RunStore.open(out) as s:
        assert s.config["constraints"] == ["params<=10"]
        assert s.get_meta("status") == "finished"


def test_cli_objectives_constraints_and_show_front(tmp_path, capsys):
    from nasforge.cli import main

    out = tmp_path / "r"
    with pytest.raises(SystemExit) as e:
        main(["search", "-d", "digits", "--space", SPACE, "--estimator", EST, "--trials", "12",
              "--out", str(out), "--objective", "val_accuracy:max", "--objective",
              "latency:min", "--max-latency-ms", "4", "--max-params", "8k",
              "--constraint", "val_accuracy>=0.1", "--strategy-opt", "population_size=4",
              "--no-progress"])
    assert e.value.code == 0
    with RunStore.open(out) as s:
        cfg = s.config
        pareto = s.get_meta("pareto")
    assert cfg["strategy"]["name"] == "nsga2"
    assert cfg["objectives"] == OBJS
    assert cfg["constraints"] == ["val_accuracy>=0.1", "latency_ms<=4", "params<=8k"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["show", str(out)])
    assert e.value.code == 0
    text = capsys.readouterr().out
    section = text[text.index("Pareto front"):text.index("Best architecture")]
    cells = [ln.split("\u2502")[1].strip() for ln in section.splitlines()
             if ln.count("\u2502") >= 3]  # the first cell of each table row: the trial id
    assert sorted(int(c) for c in cells if c.isdigit()) == pareto["trial_ids"]
    assert len(pareto["trial_ids"]) >= 2


def test_cli_early_stopping_flag_sets_the_estimator_option(tmp_path, monkeypatch):
    from nasforge import cli

    got: dict[str, Any] = {}

    def fake_search(*a: Any, **kw: Any) -> Any:
        got.update(kw)
        raise NasforgeError("stop here")

    monkeypatch.setattr("nasforge.experiment.search", fake_search)
    with pytest.raises(SystemExit) as e:
        cli.main(["search", "-d", "digits", "--early-stopping", "--out", str(tmp_path / "r"),
                  "--objective", "accuracy", "--no-progress"])
    assert e.value.code == 2
    assert got["estimator_options"]["early_stopping"] is True
    assert got["objectives"] == ["val_accuracy:max"] and got["constraints"] is None


# ------------------------------------------------------------------------ early stopping
def test_early_stopping_references_are_rebuilt_from_the_store(digits):
    from nasforge.estimators.training import TrainingEstimator

    sp = spaces.get("cnn", **CNN)
    opts = {"min_trials": 2, "grace_epochs": 1}
    live = TrainingEstimator(epochs=3, data_fraction=0.3, batch_size=64, measure_latency=False,
                             early_stopping=True, early_stopping_options=opts)
    rng = np.random.default_rng(3)
    recs = []
    for i in range(6):
        r = live.evaluate(sp.sample(rng), sp, digits, {"epochs": 3} if i % 2 else None)
        assert r.ok, r.error
        recs.append(TrialRecord(id=i + 1, arch=f"a{i}", fidelity={"epochs": 3} if i % 2 else None,
                                status="ok", metrics=r.metrics, report=r.report,
                                finished_at=float(i)))
    stopped = [r for r in recs if r.metrics.get("early_stopped")]
    for r in stopped:  # a stopped trial reports fewer epochs and its curve so far
        assert r.metrics["epochs"] < 3
        assert sum(k.startswith("curve_val_accuracy_") for k in r.report) == r.metrics["epochs"]
    fresh = TrainingEstimator(epochs=3, data_fraction=0.3, batch_size=64, measure_latency=False,
                              early_stopping=True, early_stopping_options=opts)
    fresh.restore(reversed(recs))  # order comes from finished_at, not from the argument
    assert fresh.stopper.curves == live.stopper.curves
    assert len(fresh.stopper.curves) == 6
    assert {c["group"] for c in fresh.stopper.curves} == {live._group(live.settings(None))}
