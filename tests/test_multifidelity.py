"""Successive halving, Hyperband and BOHB: schedules, rung bookkeeping, resume, determinism."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import GridSpace

from nasforge import strategies
from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.spaces.base import Arch
from nasforge.strategies.base import History, Suggestion
from nasforge.strategies.multifidelity import (
    BOHB,
    Hyperband,
    SuccessiveHalving,
    highest_fidelity_best,
    hyperband_schedule,
    successive_halving_schedule,
)


def quality(arch: Arch) -> float:
    x = np.array(arch.values, dtype=float)
    return float(x.sum() / (len(x) * 4))


def evaluate(sug: Suggestion) -> Result:
    """Quality plus a bonus that *shrinks* with budget: low budgets look deceptively good."""
    r = float(next(iter(v for k, v in sug.fidelity.items() if k in ("epochs", "data_fraction"))))
    return Result({"val_accuracy": quality(sug.arch) + 0.5 / (1.0 + r)})


def _run(strategy, n, outstanding=1, queue=None, stop_after=None, fail=None):
    """Ask/tell loop with ``outstanding`` asks in flight (told oldest first); returns the
    told (arch, fidelity) pairs, and with ``stop_after`` also the asks still in flight."""
    told, queue = [], list(queue or [])
    asked = len(queue)
    while len(told) < (stop_after if stop_after is not None else n):
        while len(queue) < outstanding and asked < n:
            queue.append(strategy.ask())
            asked += 1
        s = queue.pop(0)
        res = Result.failed("boom") if fail and fail(s) else evaluate(s)
        strategy.tell(s, res)
        told.append((s.arch.text, json.dumps(s.fidelity, sort_keys=True)))
    return (told, queue) if stop_after is not None else told


# -- schedules -----------------------------------------------------------------------------------
def test_hyperband_schedule_matches_the_paper_table():
    # Li et al. 2018, Table 1: R = 81, eta = 3
    table = [
        [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
        [(34, 3), (11, 9), (3, 27), (1, 81)],
        [(15, 9), (5, 27), (1, 81)],
        [(8, 27), (2, 81)],
        [(5, 81)],
    ]
    got = hyperband_schedule(1, 81, 3)
    assert [[(n, pytest.approx(r)) for n, r in b] for b in got] == table


@pytest.mark.parametrize(("lo", "hi", "eta"), [(1, 27, 3), (1, 16, 2), (2, 50, 3), (0.1, 1, 3),
                                               (1, 2, 3), (1, 100, 4)])
def test_hyperband_schedule_follows_the_formula(lo, hi, eta):
    s_max = 0
    while lo * eta ** (s_max + 1) <= hi * (1 + 1e-9):
        s_max += 1
    got = hyperband_schedule(lo, hi, eta)
    assert len(got) == s_max + 1
    for b, s in zip(got, range(s_max, -1, -1), strict=True):
        n = math.ceil((s_max + 1) / (s + 1) * eta**s)
        assert len(b) == s + 1
        for i, (n_i, r_i) in enumerate(b):
            assert n_i == math.floor(n / eta**i + 1e-9)
            assert r_i == pytest.approx(hi * eta ** (i - s))
        assert b[-1][1] == pytest.approx(hi) and b[0][1] >= lo * (1 - 1e-9)


def test_successive_halving_schedule():
    assert successive_halving_schedule(1, 27, 3) == [(27, 1), (9, 3), (3, 9), (1, 27)]
    assert successive_halving_schedule(1, 9, 3, n_configs=10) == [(10, 1), (3, 3), (1, 9)]
    with pytest.raises(NasforgeError, match="eta"):
        successive_halving_schedule(1, 9, 1)
    with pytest.raises(NasforgeError, match="min_resource"):
        hyperband_schedule(9, 1, 3)


# -- successive halving bookkeeping ----------------------------------------------------------------
def test_successive_halving_rungs_and_promotions():
    space = GridSpace()
    sh = strategies.get("successive-halving", space=space, seed=0, max_resource=9)
    assert isinstance(sh, SuccessiveHalving)
    told = _run(sh, 13)
    epochs = [json.loads(f)["epochs"] for _, f in told]
    assert epochs == [1] * 9 + [3] * 3 + [9]
    b = sh.brackets[0]
    assert b["done"] and [len(r["members"]) for r in b["rungs"]] == [9, 3, 1]
    for lower, upper in zip(b["rungs"], b["rungs"][1:], strict=False):
        ranked = sorted(range(len(lower["members"])), key=lambda k: -lower["scores"][k])
        assert upper["members"] == [lower["members"][k] for k in ranked[: len(upper["members"])]]
    # the next ask starts a new bracket at the lowest budget, with an unseen arch
    nxt = sh.ask()
    assert nxt.fidelity == {"epochs": 1} and nxt.arch.text not in {t for t, _ in told}
    # best comes from the top budget even though 1-epoch scores are inflated
    best = sh.best()
    assert best["fidelity"] == {"epochs": 9} and best["arch"].text == b["rungs"][2]["members"][0]
    assert max(b["rungs"][0]["scores"]) > best["score"]  # the budget decides, not the score
    assert sh.rung_summary()[0] == [(1, 9, 9), (3, 3, 3), (9, 1, 1)]


def test_failures_are_never_promoted():
    space = GridSpace()
    sh = SuccessiveHalving(space, seed=1, max_resource=9)
    first = [sh.ask() for _ in range(9)]
    good = max(first, key=lambda s: quality(s.arch))
    for s in first:
        sh.tell(s, Result.failed("oom") if s is good else evaluate(s))
    rung1 = sh.brackets[0]["rungs"][1]["members"]
    assert len(rung1) == 3 and good.arch.text not in rung1
    # a rung where everything fails ends its bracket; the next ask opens a new one
    sh2 = SuccessiveHalving(space, seed=2, max_resource=9)
    for _ in range(9):
        sh2.tell(sh2.ask(), Result.failed("boom"))
    assert sh2.brackets[0]["done"]
    assert sh2.ask().fidelity == {"epochs": 1} and len(sh2.brackets) == 2
    assert sh2.best() is None


def test_asks_while_waiting_open_new_brackets():
    space = GridSpace()
    sh = SuccessiveHalving(space, seed=0, max_resource=9)
    asks = [sh.ask() for _ in range(12)]  # bracket 0 needs 9 results before it can promote
    assert [len(b["rungs"][0]["members"]) for b in sh.brackets] == [9, 3]
    assert len({a.arch.text for a in asks}) == 12
    for s in reversed(asks[:9]):  # out of order
        sh.tell(s, evaluate(s))
    nxt = sh.ask()
    assert nxt.fidelity == {"epochs": 3}  # bracket 0 promoted first
    assert nxt.arch.text in sh.brackets[0]["rungs"][1]["members"]


def test_resource_options_and_errors():
    space = GridSpace()
    hb = Hyperband(space, resource="data_fraction", eta=3, fidelity={"epochs": 2})
    s = hb.ask()
    assert s.fidelity["epochs"] == 2 and s.fidelity["data_fraction"] == pytest.approx(1 / 9)
    assert isinstance(s.fidelity["data_fraction"], float)
    hb.tell(s, evaluate(s))
    assert hb.brackets[0]["rungs"][0]["scores"][0] is not None
    with pytest.raises(NasforgeError, match="at most 1"):
        Hyperband(space, resource="data_fraction", max_resource=2)
    with pytest.raises(NasforgeError, match="min_resource and max_resource"):
        Hyperband(space, resource="resolution")
    with pytest.raises(NasforgeError, match="must not fix"):
        Hyperband(space, fidelity={"epochs": 3})
    with pytest.raises(NasforgeError, match="eta"):
        Hyperband(space, eta=1)


# -- resume ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["successive-halving", "hyperband", "bohb", "hb-evolution"])
def test_resume_asks_the_same_as_an_uninterrupted_run(name):
    space = GridSpace()
    opts = {"max_resource": 9, "seed": 3}
    if name == "bohb":
        opts["min_points_in_model"] = 4
    if name == "hb-evolution":  # a strategy as the sampler: its state must travel too
        name = "hyperband"
        opts.update(sampler="evolution", sampler_options={"population_size": 4, "sample_size": 2})

    def fail(s):  # some deterministic failures to exercise -inf bookkeeping
        return s.arch.values[0] == 0

    ref = _run(strategies.get(name, space=space, **opts), 60, outstanding=3, fail=fail)
    for k in (5, 13, 14, 31, 47):
        history = History()
        a = history.watch(strategies.get(name, space=space, **opts))
        first, in_flight = _run(a, 60, outstanding=3, stop_after=k, fail=fail)
        state = json.loads(json.dumps(a.state_dict(), allow_nan=False))
        b = strategies.get(name, space=space, **opts)
        b.load_state_dict(state, history.trials)
        if k == 47:  # the finished brackets, rebuilt from the trials' notes
            assert b.rung_summary() == a.rung_summary() and b.results == a.results
        in_flight = [Suggestion.from_json(x.to_json(), space) for x in in_flight]
        rest = _run(b, 60 - k, outstanding=3, queue=in_flight, fail=fail)
        assert first + rest == ref, k
    with pytest.raises(NasforgeError, match="schedule"):
        strategies.get(name, space=space, max_resource=27).load_state_dict(state)


def test_hyperband_cycles_brackets():
    hb = Hyperband(GridSpace(), seed=0, max_resource=9)
    told = _run(hb, 9 + 3 + 1 + 5 + 1 + 3 + 2)
    budgets = [json.loads(f)["epochs"] for _, f in told]
    assert budgets == [1] * 9 + [3] * 3 + [9] + [3] * 5 + [9] + [9] * 3 + [1, 1]
    assert [b["s"] for b in hb.brackets] == [0, 1, 2, 0]


# -- BOHB ------------------------------------------------------------------------------------------
def test_bohb_is_deterministic_and_uses_its_model():
    space = GridSpace(5, 5)
    runs = []
    for _ in range(2):
        s = BOHB(space, seed=5, max_resource=9, min_points_in_model=6)
        runs.append(_run(s, 120))
    assert runs[0] == runs[1]
    assert _run(BOHB(space, seed=6, max_resource=9, min_points_in_model=6), 120) != runs[0]
    assert s.sampler.n_model_samples > 10
    # configurations proposed once the model exists are better than uniform ones
    new = [t for t, f in runs[0] if json.loads(f)["epochs"] == 1]
    late = [quality(space.parse(t)) for t in new[-20:]]
    hb = _run(Hyperband(space, seed=5, max_resource=9), 120)
    hb_late = [quality(space.parse(t)) for t, f in hb if json.loads(f)["epochs"] == 1][-20:]
    assert np.mean(late) > np.mean(hb_late) + 0.1


def test_bohb_model_choice_and_strategy_sampler():
    space = GridSpace()
    with pytest.raises(NasforgeError):
        BOHB(space, top_n_percent=0)
    hb = Hyperband(space, seed=0, max_resource=9, sampler="evolution",
                   sampler_options={"population_size": 4, "sample_size": 2})
    told = _run(hb, 30)
    assert len({t for t, _ in told}) > 10
    state = json.loads(json.dumps(hb.state_dict()))
    assert state["own"]["sampler"]["strategy"] == "evolution"


def test_highest_fidelity_best():
    recs = [
        {"metrics": {"val_accuracy": 0.99}, "fidelity": {"epochs": 1}},
        {"metrics": {"val_accuracy": 0.70}, "fidelity": {"epochs": 9}},
        {"metrics": {"val_accuracy": 0.80}, "fidelity": {"epochs": 9}},
        {"metrics": {}, "fidelity": {"epochs": 27}, "status": "failed"},
        {"metrics": {"val_accuracy": 0.95}, "fidelity": None},
    ]
    assert highest_fidelity_best(recs) == 2
    assert highest_fidelity_best(recs, mode="min") == 1
    assert highest_fidelity_best(recs[4:]) == 0
    assert highest_fidelity_best([recs[4], recs[1]]) == 1  # a budget beats no budget
    assert highest_fidelity_best([]) is None


# -- early stopping (nasforge.early_stopping; tested here with the other cheap estimators) --
def _curve(final, epochs=6):
    """A saturating learning curve reaching ``final`` at the last epoch."""
    return [{"epoch": e, "val_accuracy": final * (1 - 0.5 ** e) / (1 - 0.5 ** epochs),
             "val_loss": 2.0 - final * e / epochs} for e in range(1, epochs + 1)]


def _train(monitor, curve):
    """What train_model does with on_epoch: stop on False (except at the last epoch)."""
    stopped = False
    for i, rec in enumerate(curve):
        if monitor(rec["epoch"], dict(rec)) is False and i < len(curve) - 1:
            stopped = True
            break
    return {"curve": curve[: i + 1], "stopped_early": stopped}


def test_median_rule_stops_a_bad_curve_and_keeps_a_good_one():
    from nasforge.early_stopping import LearningCurveStopper

    st = LearningCurveStopper(min_trials=3, grace_epochs=1)
    for final in (0.6, 0.7, 0.8):
        st.add_curve(_curve(final))
    bad = st.trial()
    hist = _train(bad, _curve(0.2))
    assert hist["stopped_early"] and bad.stopped and len(hist["curve"]) == 2  # after grace
    out = bad.finalize({"val_accuracy": 0.0, "params": 10.0}, stopped=hist["stopped_early"])
    assert out["early_stopped"] == 1.0 and out["params"] == 10.0
    assert out["val_accuracy"] == pytest.approx(hist["curve"][-1]["val_accuracy"])
    good = st.trial()
    hist = _train(good, _curve(0.9))
    assert not hist["stopped_early"] and len(hist["curve"]) == 6
    assert "early_stopped" not in good.finalize({"val_accuracy": 0.9})
    # a curve just below the median at the end survives: its best beats the running means
    assert not _train(st.trial(), _curve(0.68))["stopped_early"]
    # the stopped curve is kept but, by default, is no reference
    assert [c["stopped"] for c in st.curves] == [False, False, False, True, False]
    strict = st.threshold(2)
    st.include_stopped = True
    assert st.threshold(2) < strict


def test_early_stopping_needs_references_and_respects_groups_and_modes():
    from nasforge.early_stopping import LearningCurveStopper

    st = LearningCurveStopper(min_trials=3, grace_epochs=0)
    st.add_curve(_curve(0.8))
    st.add_curve(_curve(0.9))
    assert not _train(st.trial(), _curve(0.1))["stopped_early"]  # only two references
    st.add_curve(_curve(0.85), group="epochs=6")
    assert st.threshold(3) is None and st.threshold(3, group="epochs=6") is None
    st.add_curve(_curve(0.7, epochs=2))  # too short to be a reference at epoch 3
    assert st.threshold(2) is not None and st.threshold(3) is None
    # val_loss: smaller is better
    lo = LearningCurveStopper(metric="val_loss", mode="min", min_trials=2, grace_epochs=0)
    for f in (0.8, 0.9):
        lo.add_curve(_curve(f))
    assert _train(lo.trial(), [{"epoch": 1, "val_loss": 9.0}, {"epoch": 2, "val_loss": 9.0}])[
        "stopped_early"]
    assert not _train(lo.trial(), [{"epoch": 1, "val_loss": 0.1}, {"epoch": 2, "val_loss": 0.1}])[
        "stopped_early"]
    # a diverged (NaN) trial is hopeless
    nan = [{"epoch": 1, "val_loss": float("nan")}, {"epoch": 2, "val_loss": float("nan")}]
    assert _train(lo.trial(), nan)["stopped_early"]
    with pytest.raises(NasforgeError):
        LearningCurveStopper(quantile=1.5)
    with pytest.raises(NasforgeError, match="bad learning-curve entry"):
        st.add_curve(["oops"])


def test_early_stopping_state_round_trips_through_json():
    from nasforge.early_stopping import LearningCurveStopper

    st = LearningCurveStopper(quantile=0.75, min_trials=2, grace_epochs=1, reference="best")
    for final in (0.5, 0.6, 0.9):
        st.trial(group="g").finalize()  # an empty trial records nothing
        mon = st.trial(group="g", max_epochs=6)
        mon.finalize(stopped=_train(mon, _curve(final))["stopped_early"])
    st.add_curve([(1, float("nan")), (2, 0.1)], group="g")  # NaN stored as null
    state = json.loads(json.dumps(st.state_dict(), allow_nan=False))
    back = LearningCurveStopper.from_state(state)
    assert back.config() == st.config() and back.curves == st.curves
    probe = [(1, 0.3), (2, 0.45), (3, 0.5)]
    for e in (1, 2, 3, 6):
        assert back.threshold(e, "g") == st.threshold(e, "g")
    assert back.should_stop(probe, "g") == st.should_stop(probe, "g")
    # the 0.75 quantile of best-so-far references is strict: 0.6-level curves are stopped
    assert st.should_stop(_curve(0.6)[:3], "g") and not st.should_stop(_curve(0.95)[:3], "g")
