"""Objectives and hardware constraints for multi-objective search.

A search may trade accuracy against cost (``latency_ms``, ``params``, ``flops``,
``peak_memory_mb``) and may rule out candidates that break a budget. This module turns
the user's strings (``"val_accuracy:max"``, ``"params<=200k"``, ``max_latency_ms=2``)
into small frozen values that strategies, reports and the loop can share, and measures
how far a candidate is from feasible (Deb's constrained domination needs that number).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from nasforge._util import finite_or_none
from nasforge.errors import NasforgeError

Mode = Literal["max", "min"]
Op = Literal["<=", ">="]

#: short names users type -> the metric names estimators write (see CONTRIBUTING.md)
METRIC_ALIASES: dict[str, str] = {
    "accuracy": "val_accuracy",
    "acc": "val_accuracy",
    "latency": "latency_ms",
    "memory_mb": "peak_memory_mb",
    "memory": "peak_memory_mb",
    "loss": "val_loss",
}

#: the direction that is "better" for well-known metrics, so ``"params"`` alone is enough
DEFAULT_MODES: dict[str, Mode] = {
    "val_accuracy": "max",
    "test_accuracy": "max",
    "val_loss": "min",
    "params": "min",
    "flops": "min",
    "latency_ms": "min",
    "onnx_latency_ms": "min",
    "peak_memory_mb": "min",
    "train_time_s": "min",
}

_SUFFIX = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_NUMBER = re.compile(r"^\s*([+-]?(?:\d[\d_]*\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([kKMGT]?)\s*$")
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|<|>|=<|=>|==|=)\s*(.+?)\s*$")

NUMBER_FORMS = "a number with an optional k/M/G suffix (e.g. 2, 0.5, 200k, 5M, 1.2G, 3e6)"
OBJECTIVE_FORMS = "'metric:max' or 'metric:min' (e.g. 'val_accuracy:max', 'latency_ms:min')"
CONSTRAINT_FORMS = (
    "'metric<=bound' or 'metric>=bound' (e.g. 'params<=200k', 'latency_ms<=2', "
    "'val_accuracy>=0.9'), or keywords max_<metric>=bound / min_<metric>=bound "
    "(e.g. max_params='200k', max_latency_ms=2, max_flops='5M', max_memory_mb=64)"
)


def canonical_metric(name: str) -> str:
    """The metric name estimators use for ``name`` (resolves aliases like ``latency``)."""
    name = name.strip()
    return METRIC_ALIASES.get(name, name)


def parse_number(value: Any, what: str = "value") -> float:
    """``200k`` -> 200000.0, ``5M`` -> 5e6, ``1.5G`` -> 1.5e9; numbers pass through.

    Lower-case ``m`` is refused on purpose: it would read as "milli" to some users and
    as "million" to others.
    """
    if isinstance(value, bool):
        raise NasforgeError(f"bad {what} {value!r}: expected {NUMBER_FORMS}")
    if isinstance(value, int | float):
        v = float(value)
    else:
        m = _NUMBER.match(str(value))
        if not m:
            raise NasforgeError(f"bad {what} {value!r}: expected {NUMBER_FORMS}")
        v = float(m.group(1).replace("_", "")) * _SUFFIX.get(m.group(2), 1.0)
    if math.isnan(v):
        raise NasforgeError(f"bad {what} {value!r}: expected {NUMBER_FORMS}, not NaN")
    return v


def format_number(v: float) -> str:
    """Short human form (``200000`` -> ``200k``), the inverse of :func:`parse_number`."""
    if not math.isfinite(v):
        return str(v)
    for suf, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale and (v / scale) == round(v / scale, 3):
            return f"{v / scale:g}{suf}"
    return f"{v:g}"


def _metric_value(metrics: Mapping[str, Any], name: str) -> float | None:
    """The finite float value of ``name`` in ``metrics``, or None when missing/non-finite."""
    return finite_or_none(metrics.get(name))


@dataclass(frozen=True)
class Objective:
    """One metric to optimize and its direction; ``str()`` gives back ``"metric:mode"``."""

    metric: str
    mode: Mode = "max"

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise NasforgeError(
                f"bad objective mode {self.mode!r} for {self.metric!r}: use 'max' or 'min'"
            )
        if not self.metric:
            raise NasforgeError(f"empty objective metric: expected {OBJECTIVE_FORMS}")

    @classmethod
    def parse(cls, spec: str | Objective | Sequence[str]) -> Objective:
        """From ``"metric:mode"``, a ``(metric, mode)`` pair, or a bare known metric name."""
        if isinstance(spec, Objective):
            return spec
        if isinstance(spec, str):
            text = spec.strip()
            if ":" in text:
                metric, mode = (s.strip() for s in text.rsplit(":", 1))
            else:
                metric, mode = text, ""
        elif isinstance(spec, Sequence) and len(spec) == 2:
            metric, mode = str(spec[0]).strip(), str(spec[1]).strip()
        else:
            raise NasforgeError(f"bad objective {spec!r}: expected {OBJECTIVE_FORMS}")
        metric = canonical_metric(metric)
        if not metric or not re.fullmatch(r"[A-Za-z_][\w.]*", metric):
            raise NasforgeError(f"bad objective {spec!r}: expected {OBJECTIVE_FORMS}")
        mode = mode.lower()
        if not mode:
            if metric not in DEFAULT_MODES:
                raise NasforgeError(
                    f"objective {spec!r} needs a direction: write {metric + ':max'!r} or "
                    f"{metric + ':min'!r} (only {sorted(DEFAULT_MODES)} have a default)"
                )
            mode = DEFAULT_MODES[metric]
        if mode not in ("max", "min"):
            raise NasforgeError(
                f"bad objective {spec!r}: direction must be 'max' or 'min'; "
                f"expected {OBJECTIVE_FORMS}"
            )
        return cls(metric, mode)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.metric}:{self.mode}"

    def minimized(self, metrics: Mapping[str, Any]) -> float:
        """The value as a cost to *minimize* (``+inf`` when missing or non-finite)."""
        v = _metric_value(metrics, self.metric)
        if v is None:
            return math.inf
        return -v if self.mode == "max" else v

    def score(self, metrics: Mapping[str, Any]) -> float:
        """The value where larger is better (``-inf`` when missing or non-finite)."""
        return -self.minimized(metrics)


def parse_objectives(specs: str | Objective | Iterable[str | Objective] | None,
                     default: Sequence[str] = ("val_accuracy:max",)) -> list[Objective]:
    """A list of :class:`Objective` from one spec, a comma-separated string, or a list."""
    if specs is None:
        specs = list(default)
    if isinstance(specs, Objective):
        return [specs]
    if isinstance(specs, str):
        specs = [s for s in specs.split(",") if s.strip()]
    out = [Objective.parse(s) for s in specs]
    if not out:
        raise NasforgeError(f"no objectives given: expected one or more of {OBJECTIVE_FORMS}")
    names = [o.metric for o in out]
    if len(set(names)) != len(names):
        raise NasforgeError(f"objective metric listed twice in {[str(o) for o in out]}")
    return out


@dataclass(frozen=True)
class Constraint:
    """``metric op bound``, ``op`` in ``<=`` / ``>=``; ``str()`` round-trips via :meth:`parse`."""

    metric: str
    op: Op
    bound: float

    def __post_init__(self) -> None:
        if self.op not in ("<=", ">="):
            raise NasforgeError(
                f"bad constraint operator {self.op!r} for {self.metric!r}: use '<=' or '>='"
            )
        if not math.isfinite(self.bound):
            raise NasforgeError(f"constraint bound for {self.metric!r} must be finite")

    @classmethod
    def parse(cls, spec: str | Constraint) -> Constraint:
        """From ``"params<=200k"`` style text."""
        if isinstance(spec, Constraint):
            return spec
        if not isinstance(spec, str):
            raise NasforgeError(f"bad constraint {spec!r}: expected {CONSTRAINT_FORMS}")
        m = _CONSTRAINT.match(spec)
        if not m:
            raise NasforgeError(f"bad constraint {spec!r}: expected {CONSTRAINT_FORMS}")
        metric, op, raw = m.groups()
        op = {"=<": "<=", "=>": ">="}.get(op, op)
        if op not in ("<=", ">="):
            raise NasforgeError(
                f"bad constraint {spec!r}: operator {op!r} is not supported, use '<=' or '>='; "
                f"expected {CONSTRAINT_FORMS}"
            )
        bound = parse_number(raw, what=f"bound in constraint {spec!r}")
        return cls(canonical_metric(metric), op, bound)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{format_number(self.bound)}"

    def violation(self, metrics: Mapping[str, Any]) -> float:
        """How far past the bound, relative to the bound (0 when satisfied, 1 when missing).

        Normalizing by ``|bound|`` makes violations of different metrics (ms vs. parameter
        counts) comparable; a missing or non-finite value counts as a full violation of 1.
        """
        v = _metric_value(metrics, self.metric)
        if v is None:
            return MISSING_VIOLATION
        excess = v - self.bound if self.op == "<=" else self.bound - v
        if excess <= 0:
            return 0.0
        return excess / (abs(self.bound) if self.bound != 0 else 1.0)

    def satisfied(self, metrics: Mapping[str, Any]) -> bool:
        return self.violation(metrics) == 0.0


#: the violation charged for a constraint whose metric is missing (infeasible, but
#: comparable: one missing metric is as bad as exceeding a bound by 100%)
MISSING_VIOLATION = 1.0


def parse_constraints(*specs: str | Constraint | Iterable[str | Constraint] | Mapping[str, Any]
                      | None, **bounds: Any) -> list[Constraint]:
    """Constraints from strings, :class:`Constraint` values, mappings and keywords.

    ``parse_constraints("params<=200k", max_latency_ms=2, max_flops="5M", max_memory_mb=64)``.
    Keywords are ``max_<metric>`` (``<=``) or ``min_<metric>`` (``>=``); a ``None`` value is
    skipped, so optional CLI flags can be passed through unchanged. A string may hold several
    constraints separated by commas.
    """
    out: list[Constraint] = []
    for spec in specs:
        if spec is None:
            continue
        if isinstance(spec, Constraint):
            out.append(spec)
        elif isinstance(spec, str):
            out.extend(Constraint.parse(s) for s in spec.split(",") if s.strip())
        elif isinstance(spec, Mapping):
            out.extend(parse_constraints(**{str(k): v for k, v in spec.items()}))
        elif isinstance(spec, Iterable):
            out.extend(parse_constraints(*spec))
        else:
            raise NasforgeError(f"bad constraint {spec!r}: expected {CONSTRAINT_FORMS}")
    for key, value in bounds.items():
        if value is None:
            continue
        if key.startswith("max_"):
            op: Op = "<="
        elif key.startswith("min_"):
            op = ">="
        else:
            raise NasforgeError(
                f"bad constraint keyword {key!r}: expected max_<metric> or min_<metric>; "
                f"accepted forms: {CONSTRAINT_FORMS}"
            )
        metric = canonical_metric(key[4:])
        if not metric:
            raise NasforgeError(f"bad constraint keyword {key!r}: no metric after {key[:4]!r}")
        out.append(Constraint(metric, op, parse_number(value, what=f"bound for {key}")))
    return out


def feasible(metrics: Mapping[str, Any], constraints: Iterable[Constraint]) -> bool:
    """Whether every constraint holds (a missing metric makes the candidate infeasible)."""
    return all(c.satisfied(metrics) for c in constraints)


def violation(metrics: Mapping[str, Any], constraints: Iterable[Constraint]) -> float:
    """Total normalized violation: 0 when feasible, larger the further out of bounds."""
    return float(sum(c.violation(metrics) for c in constraints))


def constraint_metrics(constraints: Iterable[Constraint]) -> list[str]:
    """The metric names the constraints look at, in order, without repeats."""
    return list(dict.fromkeys(c.metric for c in constraints))
