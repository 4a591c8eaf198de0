"""Objective/constraint parsing, feasibility and normalized violation."""

from __future__ import annotations

import math

import pytest

from nasforge.errors import NasforgeError
from nasforge.objectives import (
    Constraint,
    Objective,
    feasible,
    format_number,
    parse_constraints,
    parse_number,
    parse_objectives,
    violation,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [("200k", 2e5), ("5M", 5e6), ("1.5G", 1.5e9), ("2", 2.0), ("0.25", 0.25), ("3e6", 3e6),
     ("1_000", 1000.0), (" 12 K ", 12e3), (7, 7.0), (2.5, 2.5)],
)
def test_parse_number(text, value):
    assert parse_number(text) == pytest.approx(value)


@pytest.mark.parametrize("bad", ["5m", "abc", "", "1.2.3", "k", True, "10 MB", "nan"])
def test_parse_number_rejects(bad):
    with pytest.raises(NasforgeError, match="k/M/G"):
        parse_number(bad)


def test_format_number_round_trips():
    for v in (200e3, 5e6, 1.5e9, 2.0, 0.25, 123456.0):
        assert parse_number(format_number(v)) == pytest.approx(v)


def test_objective_parse():
    assert Objective.parse("val_accuracy:max") == Objective("val_accuracy", "max")
    assert Objective.parse("latency_ms:min") == Objective("latency_ms", "min")
    assert Objective.parse("params") == Objective("params", "min")
    assert Objective.parse("accuracy") == Objective("val_accuracy", "max")
    assert Objective.parse(("synflow", "max")) == Objective("synflow", "max")
    assert str(Objective.parse(" flops : MIN ")) == "flops:min"
    o = Objective.parse("val_accuracy:max")
    assert o.score({"val_accuracy": 0.8}) == 0.8 and o.minimized({"val_accuracy": 0.8}) == -0.8
    assert o.score({}) == -math.inf and o.minimized({"val_accuracy": float("nan")}) == math.inf


@pytest.mark.parametrize(
    ("bad", "hint"),
    [("synflow", "needs a direction"), ("params:smaller", "'max' or 'min'"),
     (":max", "metric:max"), ("a b:max", "metric:max"), (3, "metric:max")],
)
def test_objective_errors_name_the_forms(bad, hint):
    with pytest.raises(NasforgeError, match=hint):
        Objective.parse(bad)


def test_parse_objectives_lists_and_duplicates():
    objs = parse_objectives("val_accuracy:max, params:min")
    assert [str(o) for o in objs] == ["val_accuracy:max", "params:min"]
    assert parse_objectives(None, default=["latency_ms"]) == [Objective("latency_ms", "min")]
    with pytest.raises(NasforgeError, match="twice"):
        parse_objectives(["params", "params:max"])
    with pytest.raises(NasforgeError, match="no objectives"):
        parse_objectives([])


def test_parse_constraints_keywords_and_strings():
    cons = parse_constraints("params<=200k", "val_accuracy >= 0.9", max_latency_ms=2,
                             max_flops="5M", max_memory_mb=64, max_params=None)
    assert cons == [
        Constraint("params", "<=", 200e3),
        Constraint("val_accuracy", ">=", 0.9),
        Constraint("latency_ms", "<=", 2.0),
        Constraint("flops", "<=", 5e6),
        Constraint("peak_memory_mb", "<=", 64.0),
    ]
    assert parse_constraints("params<=1k,flops<=2M") == [
        Constraint("params", "<=", 1e3), Constraint("flops", "<=", 2e6)]
    assert parse_constraints(["latency_ms<=3"], {"max_params": "1M"}) == [
        Constraint("latency_ms", "<=", 3.0), Constraint("params", "<=", 1e6)]
    for c in cons:
        assert Constraint.parse(str(c)) == c


@pytest.mark.parametrize(
    ("spec", "hint"),
    [("params<200k", "not supported"), ("params==3", "not supported"), ("params<=lots", "k/M/G"),
     ("params", "metric<=bound"), ("<=3", "metric<=bound")],
)
def test_constraint_string_errors(spec, hint):
    with pytest.raises(NasforgeError, match=hint):
        parse_constraints(spec)


def test_constraint_keyword_errors():
    with pytest.raises(NasforgeError, match="max_<metric>"):
        parse_constraints(latency_ms=2)
    with pytest.raises(NasforgeError, match="k/M/G"):
        parse_constraints(max_params="200 thousand")
    with pytest.raises(NasforgeError):
        parse_constraints(42)  # type: ignore[arg-type]


def test_feasible_and_violation():
    cons = parse_constraints(max_params="1k", max_latency_ms=2, min_val_accuracy=0.5)
    good = {"params": 1000, "latency_ms": 1.5, "val_accuracy": 0.6}
    assert feasible(good, cons) and violation(good, cons) == 0.0
    bad = {"params": 1500, "latency_ms": 3.0, "val_accuracy": 0.25}
    # 50% over params, 50% over latency, 50% under accuracy
    assert not feasible(bad, cons)
    assert violation(bad, cons) == pytest.approx(0.5 + 0.5 + 0.5)
    worse = {**bad, "params": 3000}
    assert violation(worse, cons) > violation(bad, cons)
    missing = {"params": 10, "val_accuracy": 0.9}
    assert not feasible(missing, cons) and violation(missing, cons) > 0
    assert not feasible({**good, "latency_ms": float("nan")}, cons)
    assert feasible({}, []) and violation({}, []) == 0.0
