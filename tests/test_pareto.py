"""Pareto utilities on point sets whose fronts, crowding and hypervolume are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nasforge.errors import NasforgeError
from nasforge.objectives import parse_constraints
from nasforge.pareto import (
    crowding_distance,
    front_of_records,
    front_table,
    hypervolume_2d,
    non_dominated_sort,
    pareto_front,
    pareto_ranks,
    plot_front,
)

PTS = [(1, 5), (2, 3), (3, 4), (4, 1), (2, 2), (5, 5)]


def _naive_front(pts, modes):
    sign = np.array([-1 if m == "max" else 1 for m in modes])
    c = np.asarray(pts, float) * sign
    out = []
    for i in range(len(c)):
        if not any(np.all(c[j] <= c[i]) and np.any(c[j] < c[i]) for j in range(len(c))):
            out.append(i)
    return out


def test_known_fronts_min_min():
    fronts = non_dominated_sort(PTS, ["min", "min"])
    assert [sorted(f.tolist()) for f in fronts] == [[0, 3, 4], [1], [2], [5]]
    assert pareto_front(PTS, "min").tolist() == [0, 3, 4]
    assert pareto_ranks(PTS).tolist() == [0, 1, 2, 0, 0, 3]


def test_modes_flip_the_order():
    # maximizing both: the old worst point (5, 5) is now the only non-dominated one
    assert pareto_front(PTS, ["max", "max"]).tolist() == [5]
    # mixed: min x, max y -> (1, 5) beats everything with larger x and smaller y
    assert pareto_front(PTS, ["min", "max"]).tolist() == [0]


def test_nan_is_worst_and_duplicates_share_a_front():
    pts = [(1.0, 1.0), (1.0, 1.0), (float("nan"), 1.0), (2.0, 2.0), (float("nan"), 0.0)]
    fronts = non_dominated_sort(pts)
    # NaN is +inf: (nan, 1) is dominated by (1, 1); (nan, 0) still wins on y
    assert sorted(fronts[0].tolist()) == [0, 1, 4]
    assert pareto_ranks(pts).tolist() == [0, 0, 1, 1, 0]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 6)),
                min_size=1, max_size=25),
       st.lists(st.sampled_from(["min", "max"]), min_size=3, max_size=3))
def test_front_matches_definition(pts, modes):
    assert pareto_front(pts, modes).tolist() == _naive_front(pts, modes)
    # every point of front k+1 is dominated by some point of front k
    fronts = non_dominated_sort(pts, modes)
    assert sorted(np.concatenate(fronts).tolist()) == list(range(len(pts)))
    for a, b in zip(fronts, fronts[1:], strict=False):
        sub = [pts[i] for i in np.concatenate([a, b])]
        assert sorted(_naive_front(sub, modes)) == list(range(len(a)))


def test_constrained_domination():
    pts = [(0.0, 0.0), (5.0, 5.0), (6.0, 6.0), (9.0, 9.0)]
    viol = [2.0, 0.0, 0.0, 0.5]
    fronts = non_dominated_sort(pts, "min", violations=viol)
    # feasible first (1 dominates 2), then infeasible by violation: 3 (0.5) before 0 (2.0)
    assert [f.tolist() for f in fronts] == [[1], [2], [3], [0]]
    assert pareto_front(pts, "min", violations=viol).tolist() == [1]
    with pytest.raises(NasforgeError):
        non_dominated_sort(pts, "min", violations=[0.0])


def test_crowding_distance_by_hand():
    front = [(0, 4), (1, 2), (3, 1), (4, 0)]
    d = crowding_distance(front)
    assert math.isinf(d[0]) and math.isinf(d[3])
    assert d[1] == pytest.approx(0.75 + 0.75)
    assert d[2] == pytest.approx(0.75 + 0.5)
    assert np.all(np.isinf(crowding_distance([(1, 1), (2, 0)])))
    # a constant objective contributes nothing
    d2 = crowding_distance([(0, 1), (1, 1), (3, 1)])
    assert d2[1] == pytest.approx(1.0)


def test_hypervolume_2d_by_hand():
    pts = [(1, 3), (2, 2), (3, 1)]
    assert hypervolume_2d(pts, (4, 4)) == pytest.approx(6.0)
    # dominated and out-of-reference points add nothing
    assert hypervolume_2d([*pts, (3, 3), (5, 0)], (4, 4)) == pytest.approx(6.0)
    # the same set in maximize form
    assert hypervolume_2d([(-x, -y) for x, y in pts], (-4, -4), "max") == pytest.approx(6.0)
    assert hypervolume_2d([], (1, 1)) == 0.0
    with pytest.raises(NasforgeError):
        hypervolume_2d([(1, 2, 3)], (4, 4, 4))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=15))
def test_hypervolume_matches_grid_count(pts):
    # Monte-Carlo-free check: the area equals the union of rectangles, computed on a grid
    hv = hypervolume_2d(pts, (1.0, 1.0))
    xs = np.linspace(0, 1, 201)[:-1] + 0.0025
    gx, gy = np.meshgrid(xs, xs)
    cov = np.zeros_like(gx, dtype=bool)
    for x, y in pts:
        cov |= (gx > x) & (gy > y)
    assert hv == pytest.approx(cov.mean(), abs=0.02)
    assert hv == pytest.approx(hypervolume_2d([pts[i] for i in pareto_front(pts)], (1, 1)))


def _records():
    return [
        {"arch": "a", "metrics": {"val_accuracy": 0.9, "latency_ms": 3.0, "params": 5000}},
        {"arch": "b", "metrics": {"val_accuracy": 0.8, "latency_ms": 1.0, "params": 1000}},
        {"arch": "c", "metrics": {"val_accuracy": 0.7, "latency_ms": 2.0, "params": 2000}},
        {"arch": "d", "metrics": {"val_accuracy": 0.95, "latency_ms": 9.0, "params": 90000}},
        {"arch": "e", "status": "failed", "metrics": {}},
    ]


def test_front_of_records_and_constraints():
    recs = _records()
    assert front_of_records(recs, ["latency_ms", "val_accuracy"]) == [0, 1, 3]
    cons = parse_constraints(max_latency_ms=5)
    assert front_of_records(recs, ["latency_ms", "val_accuracy"], cons) == [0, 1]


def test_front_table_markdown():
    md = front_table(_records(), ["val_accuracy:max", "params:min"], extra=["latency_ms"])
    lines = md.strip().splitlines()
    assert lines[0].startswith("| # | arch | val_accuracy (max) | params (min) | latency_ms")
    body = "\n".join(lines[2:])
    assert "`a`" in body and "`b`" in body and "`d`" in body and "`c`" not in body
    # best first by the first objective
    assert lines[2].index("`d`") > 0 and "90k" in lines[2]


def test_plot_front_writes_png(tmp_path):
    out = plot_front(_records(), path=tmp_path / "sub" / "front.png",
                     constraints=parse_constraints(max_latency_ms=5))
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    with pytest.raises(NasforgeError):
        plot_front(_records(), x="mystery", path=tmp_path / "x.png")


def test_store_records_work_directly():
    from nasforge.store import TrialRecord

    recs = [TrialRecord(i, f"arch{i}", {"epochs": 1}, "ok", dict(r["metrics"]))
            for i, r in enumerate(_records()[:4])]
    recs.append(TrialRecord(4, "arch4", None, "failed", {"latency_ms": 0.1, "val_accuracy": 1.0}))
    assert front_of_records(recs, ["latency_ms", "val_accuracy"]) == [0, 1, 3]
    assert "`arch3`" in front_table(recs, ["val_accuracy", "latency_ms"])
