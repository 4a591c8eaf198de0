"""NSGA-II on a tiny synthetic space whose true trade-off front is known by enumeration."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import GridSpace

from nasforge import strategies
from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.objectives import parse_constraints
from nasforge.pareto import hypervolume_2d, pareto_front
from nasforge.spaces.base import Arch
from nasforge.strategies.base import History, Suggestion
from nasforge.strategies.nsga2 import NSGA2, pareto


def evaluate(arch: Arch) -> Result:
    """Accuracy grows with the knob sum, params with the sum of squares: balanced is best."""
    x = np.array(arch.values, dtype=float)
    top = len(x) * 4.0  # the small tests use knobs 0..4; the search test rescales below
    return Result({"val_accuracy": x.sum() / top, "params": float((x**2).sum())})


def _pt(r):
    return (r["metrics"]["val_accuracy"], r["metrics"]["params"])


def _analytic_front(k, m):
    """For each knob sum s the fewest params come from the most balanced knobs."""
    out = []
    for s in range(k * (m - 1) + 1):
        q, r = divmod(s, k)
        out.append((s / (k * 4.0), float(r * (q + 1) ** 2 + (k - r) * q * q)))
    return out


def _true_front(space, constraint_params=None):
    recs = [{"arch": a.text, "metrics": evaluate(a).metrics} for a in space.enumerate()]
    if constraint_params is not None:
        recs = [r for r in recs if r["metrics"]["params"] <= constraint_params]
    return [recs[i] for i in pareto_front([_pt(r) for r in recs], ["max", "min"])]


def _run(strategy, n, outstanding=1, queue=None, stop_after=None):
    """Ask/tell loop keeping ``outstanding`` asks in flight, told oldest first.

    Returns the told arch texts; with ``stop_after`` it stops after that many tells and
    also returns the asks still in flight (what a resumed loop would evaluate next).
    """
    told, queue = [], list(queue or [])
    asked = len(queue)
    while len(told) < (stop_after if stop_after is not None else n):
        while len(queue) < outstanding and asked < n:
            queue.append(strategy.ask())
            asked += 1
        s = queue.pop(0)
        strategy.tell(s, evaluate(s.arch))
        told.append(s.arch.text)
    return (told, queue) if stop_after is not None else told


def test_registered_and_defaults():
    s = strategies.get("nsga2", space=GridSpace(), seed=0)
    assert isinstance(s, NSGA2)
    assert [str(o) for o in s.objectives] == ["val_accuracy:max", "params:min"]
    assert (s.metric, s.mode) == ("val_accuracy", "max")
    s2 = NSGA2(GridSpace(), metric="latency_ms", mode="min")
    assert [str(o) for o in s2.objectives] == ["latency_ms:min", "params:min"]
    with pytest.raises(NasforgeError):
        NSGA2(GridSpace(), objectives=["params:sideways"])
    with pytest.raises(NasforgeError):
        NSGA2(GridSpace(), constraints="params<lots")


def test_analytic_front_matches_enumeration():
    assert sorted({_pt(r) for r in _true_front(GridSpace(4, 5))}) == sorted(_analytic_front(4, 5))


def test_finds_the_known_front():
    k, m = 6, 6  # 46656 archs, 31 Pareto-optimal trade-offs, 400 evaluations
    space = GridSpace(k, m)
    true = set(_analytic_front(k, m))
    ref = (-0.05, k * (m - 1) ** 2 + 5.0)

    def hv(pts):
        return hypervolume_2d(list(pts), ref, ["max", "min"])

    s = NSGA2(space, seed=0, population_size=20)
    asked = _run(s, 400, outstanding=4)
    assert len(set(asked)) == len(asked)  # no repeats while the space is far from exhausted
    found = {_pt(r) for r in s.front()}
    rnd = strategies.get("random", space=space, seed=0)
    rnd_pts = [_pt({"metrics": evaluate(space.parse(t)).metrics}) for t in _run(rnd, 400)]
    rnd_front = {rnd_pts[i] for i in pareto_front(rnd_pts, ["max", "min"])}
    assert len(found & true) >= 8 and len(found & true) > 2 * len(rnd_front & true)
    assert hv(found) >= 0.96 * hv(true) and hv(found) > hv(rnd_front)
    # the reported front is mutually non-dominated
    assert len(pareto_front(sorted(found), ["max", "min"])) == len(found)


def test_constraints_hold_on_the_front():
    space = GridSpace()
    history = History()
    s = history.watch(NSGA2(space, seed=3, population_size=12, constraints="params<=20"))
    _run(s, 120, outstanding=3)
    front = s.front()
    assert front and all(r["metrics"]["params"] <= 20 for r in front)
    best_feasible = max(r["metrics"]["val_accuracy"] for r in _true_front(space, 20))
    assert front[0]["metrics"]["val_accuracy"] == pytest.approx(best_feasible)
    # the population is led by feasible archs once any exist
    rank0 = [t for t, r, _ in s.population() if r == 0]
    assert all(evaluate(space.parse(t)).metrics["params"] <= 20 for t in rank0)
    # the helper reads the same front from a restored strategy, and can tighten it
    back = NSGA2(space, seed=3, population_size=12, constraints="params<=20")
    back.load_state_dict(json.loads(json.dumps(s.state_dict())), history.trials)
    assert pareto(back) == front
    tight = pareto(back, constraints=parse_constraints(max_params=10))
    assert tight and all(r["metrics"]["params"] <= 10 for r in tight)
    # ... and from a state saved before run format 2, which held the whole archive
    old = s.state_dict()
    old["own"].update(s._history_state())
    assert pareto(json.loads(json.dumps(old))) == front
    with pytest.raises(NasforgeError, match="archive"):
        pareto(s.state_dict())


def test_failures_rank_last_and_never_reach_the_front():
    space = GridSpace()
    s = NSGA2(space, seed=0, population_size=6)
    failed = set()
    for i in range(40):
        sug = s.ask()
        if i % 3 == 0:
            s.tell(sug, Result.failed("boom"))
            failed.add(sug.arch.text)
        else:
            s.tell(sug, evaluate(sug.arch))
    assert failed and not failed & {r["arch"] for r in s.front()}
    assert not failed & {t for t, _, _ in s.population()}


def test_resume_continues_exactly():
    space = GridSpace()
    full = NSGA2(space, seed=7, population_size=8, constraints={"max_params": 30})
    ref = _run(full, 40, outstanding=3)

    for k in (3, 9, 10, 17, 26, 33):
        history = History()
        a = history.watch(NSGA2(space, seed=7, population_size=8, constraints={"max_params": 30}))
        first, in_flight = _run(a, 40, outstanding=3, stop_after=k)
        state = json.loads(json.dumps(a.state_dict()))
        b = NSGA2(space, seed=7, population_size=8, constraints={"max_params": 30})
        b.load_state_dict(state, history.trials)
        in_flight = [Suggestion.from_json(x.to_json(), space) for x in in_flight]
        rest = _run(b, 40 - k, outstanding=3, queue=in_flight)
        assert first + rest == ref, k
    # determinism per seed, and the seed matters
    assert _run(NSGA2(space, seed=8, population_size=8), 40) != ref
    with pytest.raises(NasforgeError, match="same objectives"):
        NSGA2(space, objectives=["val_accuracy:max", "latency_ms:min"]).load_state_dict(state)


def test_many_outstanding_asks_are_distinct_and_exhaustion_is_handled():
    space = GridSpace(k=2, m=3)  # 9 archs
    s = NSGA2(space, seed=0, population_size=2)
    first = [s.ask() for _ in range(4)]
    for sug in first:
        s.tell(sug, evaluate(sug.arch))
    more = [s.ask() for _ in range(5)]
    texts = [x.arch.text for x in first + more]
    assert len(set(texts)) == 9  # every arch once before any repeat
    s.ask()  # exhausted: a repeat, but no error
