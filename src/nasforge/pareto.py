"""Pareto fronts: non-dominated sorting, crowding distance, hypervolume, plots and tables.

Used by multi-objective strategies (NSGA-II) and by reports. Everything works on an
``(n, m)`` array of objective values plus a direction per column (``"max"``/``"min"``);
internally every column is turned into a cost to minimize. NaN counts as the worst value.
Optional per-point *violations* (0 = feasible) give Deb's constrained domination:
a feasible point beats an infeasible one, and infeasible points compare by violation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nasforge.errors import NasforgeError
from nasforge.objectives import Constraint, Objective, feasible, format_number, parse_objectives

Modes = Sequence[str] | str | None


def _costs(points: Any, modes: Modes = None) -> np.ndarray:
    """``points`` as a float ``(n, m)`` cost matrix to minimize (NaN -> +inf)."""
    f = np.asarray(points, dtype=float)
    if f.ndim == 1:
        f = f.reshape(-1, 1) if f.size else f.reshape(0, 1)
    if f.ndim != 2:
        raise NasforgeError(f"points must be an (n, m) array, got shape {f.shape}")
    m = f.shape[1]
    if modes is None:
        modes = ["min"] * m
    elif isinstance(modes, str):
        modes = [modes] * m
    modes = list(modes)
    if len(modes) != m:
        raise NasforgeError(f"got {len(modes)} modes for {m} objectives")
    bad = [x for x in modes if x not in ("max", "min")]
    if bad:
        raise NasforgeError(f"bad mode(s) {bad}: each mode must be 'max' or 'min'")
    sign = np.array([-1.0 if x == "max" else 1.0 for x in modes])
    f = f * sign
    return np.where(np.isnan(f), np.inf, f)


def dominates_matrix(costs: np.ndarray, violations: Any = None) -> np.ndarray:
    """``D[i, j]`` is True when point ``i`` (constrained-)dominates point ``j``; costs minimized."""
    n, m = costs.shape
    le = np.ones((n, n), dtype=bool)
    lt = np.zeros((n, n), dtype=bool)
    for k in range(m):  # column by column: no (n, n, m) temporary
        a, b = costs[:, k, None], costs[None, :, k]
        le &= a <= b
        lt |= a < b
    dom = le & lt
    if violations is not None:
        v = np.asarray(violations, dtype=float).reshape(-1)
        if v.shape[0] != costs.shape[0]:
            raise NasforgeError(f"got {v.shape[0]} violations for {costs.shape[0]} points")
        v = np.where(np.isnan(v), np.inf, np.maximum(v, 0.0))
        feas = v == 0
        both_feas = feas[:, None] & feas[None, :]
        # feasible beats infeasible; two infeasible points compare by violation only
        dom = np.where(both_feas, dom, v[:, None] < v[None, :])
    return dom


def non_dominated_sort(
    points: Any, modes: Modes = None, violations: Any = None
) -> list[np.ndarray]:
    """Fronts of Deb et al.'s fast non-dominated sort: a list of index arrays, best first.

    Vectorized: one ``n x n`` domination matrix, then fronts peeled off by domination
    counts, which is plenty for the few thousand points a NAS run produces.
    """
    costs = _costs(points, modes)
    n = costs.shape[0]
    if n == 0:
        return []
    dom = dominates_matrix(costs, violations)
    count = dom.sum(axis=0).astype(np.int64)  # how many points dominate j
    remaining = np.ones(n, dtype=bool)
    fronts: list[np.ndarray] = []
    while remaining.any():
        front = np.flatnonzero(remaining & (count == 0))
        if front.size == 0:  # cannot happen for a strict partial order; guard anyway
            front = np.flatnonzero(remaining)
        fronts.append(front)
        remaining[front] = False
        count -= dom[front].sum(axis=0)
    return fronts


def pareto_ranks(points: Any, modes: Modes = None, violations: Any = None) -> np.ndarray:
    """Front index of each point (0 = non-dominated)."""
    n = _costs(points, modes).shape[0]
    ranks = np.zeros(n, dtype=np.int64)
    for r, front in enumerate(non_dominated_sort(points, modes, violations)):
        ranks[front] = r
    return ranks


def pareto_front(points: Any, modes: Modes = None, violations: Any = None) -> np.ndarray:
    """Indices (ascending) of the non-dominated points; with violations, of the best front.

    With ``violations`` given and at least one feasible point, only feasible points can
    be on the returned front.
    """
    fronts = non_dominated_sort(points, modes, violations)
    return np.sort(fronts[0]) if fronts else np.zeros(0, dtype=np.int64)


def crowding_distance(points: Any, modes: Modes = None) -> np.ndarray:
    """NSGA-II crowding distance of the points of *one* front (boundary points get inf).

    Each objective contributes the normalized gap between a point's two neighbours;
    objectives with zero or non-finite range contribute nothing but their extremes.
    """
    costs = _costs(points, modes)
    n, m = costs.shape
    dist = np.zeros(n)
    if n <= 2:
        dist[:] = np.inf
        return dist
    for k in range(m):
        order = np.argsort(costs[:, k], kind="stable")
        col = costs[order, k]
        dist[order[0]] = np.inf
        dist[order[-1]] = np.inf
        span = col[-1] - col[0]
        if not np.isfinite(span) or span <= 0:
            continue
        dist[order[1:-1]] += (col[2:] - col[:-2]) / span
    return dist


def hypervolume_2d(points: Any, reference: Sequence[float], modes: Modes = None) -> float:
    """Area dominated by ``points`` and bounded by ``reference`` (two objectives).

    Points not strictly better than the reference in both objectives add nothing.
    ``reference`` is given in the points' own units and directions.
    """
    costs = _costs(points, modes)
    if costs.shape[0] == 0:
        return 0.0
    if costs.shape[1] != 2:
        raise NasforgeError(f"hypervolume_2d needs 2 objectives, got {costs.shape[1]}")
    ref = _costs(np.asarray(reference, dtype=float).reshape(1, 2), modes)[0]
    if not np.all(np.isfinite(ref)):
        raise NasforgeError(f"hypervolume reference must be finite, got {list(reference)}")
    keep = np.all(costs < ref, axis=1)
    c = costs[keep]
    if c.shape[0] == 0:
        return 0.0
    c = c[np.lexsort((c[:, 1], c[:, 0]))]  # by x, then y
    hv, best_y = 0.0, ref[1]
    for x, y in c:
        if y < best_y:
            hv += (ref[0] - x) * (best_y - y)
            best_y = y
    return float(hv)


# -- records: trials as the loop/store hand them over -------------------------------------------
def record_metrics(record: Any) -> dict[str, Any]:
    """The metrics of a record: ``rec.metrics``, ``rec["metrics"]``, or the mapping itself."""
    m = getattr(record, "metrics", None)
    if isinstance(m, Mapping):
        return dict(m)
    if isinstance(record, Mapping):
        inner = record.get("metrics")
        if isinstance(inner, Mapping):
            return dict(inner)
        return dict(record)
    raise NasforgeError(f"cannot read metrics from record {record!r}")


def record_ok(record: Any) -> bool:
    """False for a record of a failed evaluation (``status`` other than ``ok``)."""
    status = getattr(record, "status", None)
    if status is None and isinstance(record, Mapping):
        status = record.get("status")
    return status in (None, "ok")


def record_label(record: Any, index: int) -> str:
    """A short name for a record: its ``arch`` (string or Arch), else ``#index``."""
    a = getattr(record, "arch", None)
    if a is None and isinstance(record, Mapping):
        a = record.get("arch")
    return str(a) if a is not None else f"#{index}"


def front_of_records(records: Sequence[Any], objectives: Sequence[str | Objective],
                     constraints: Sequence[Constraint] = ()) -> list[int]:
    """Indices of the records on the feasible Pareto front (failed/infeasible ones excluded)."""
    objs = parse_objectives(list(objectives))
    cand = [i for i, r in enumerate(records)
            if record_ok(r) and feasible(record_metrics(r), constraints)]
    if not cand:
        return []
    pts = np.array([[o.minimized(record_metrics(records[i])) for o in objs] for i in cand])
    finite = np.all(np.isfinite(pts), axis=1)
    cand = [i for i, f in zip(cand, finite, strict=True) if f]
    if not cand:
        return []
    front = pareto_front(pts[finite])
    return [cand[int(k)] for k in front]


def _fmt(v: Any) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if not math.isfinite(x):
        return str(x)
    if x == int(x) and abs(x) >= 1000:
        return format_number(x)
    return f"{x:.4g}"


def front_table(records: Sequence[Any], objectives: Sequence[str | Objective],
                constraints: Sequence[Constraint] = (), extra: Sequence[str] = ()) -> str:
    """Markdown table of the feasible Pareto front, sorted by the first objective (best first)."""
    objs = parse_objectives(list(objectives))
    idx = front_of_records(records, objs, constraints)
    idx.sort(key=lambda i: objs[0].minimized(record_metrics(records[i])))
    cols = [o.metric for o in objs] + [e for e in extra if e not in {o.metric for o in objs}]
    head = ["#", "arch", *[f"{o.metric} ({o.mode})" for o in objs], *cols[len(objs):]]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for k, i in enumerate(idx, 1):
        m = record_metrics(records[i])
        label = record_label(records[i], i).replace("|", "\\|")
        vals = [_fmt(m.get(c, "")) for c in cols]
        lines.append("| " + " | ".join([str(k), f"`{label}`", *vals]) + " |")
    return "\n".join(lines) + "\n"


def plot_front(records: Sequence[Any], x: str = "latency_ms", y: str = "val_accuracy",
               path: str | Path = "pareto.png", constraints: Sequence[Constraint] = (),
               title: str | None = None) -> Path:
    """Scatter of all records with the feasible Pareto front highlighted, saved as PNG.

    ``x``/``y`` are objective specs (``"latency_ms"``, ``"flops:min"``; known metrics need
    no direction). Infeasible points are drawn as crosses, failed ones are left out.
    Uses the Agg canvas directly (no pyplot), so it is safe in threads and headless runs.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ox, oy = parse_objectives([x, y])
    pts, feas = [], []
    for i, r in enumerate(records):
        if not record_ok(r):
            continue
        m = record_metrics(r)
        vx, vy = ox.minimized(m), oy.minimized(m)
        if not (math.isfinite(vx) and math.isfinite(vy)):
            continue
        pts.append((i, float(m[ox.metric]), float(m[oy.metric])))
        feas.append(feasible(m, constraints))
    front = set(front_of_records(records, [ox, oy], constraints))
    fig = Figure(figsize=(6, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ok = [(p[1], p[2]) for p, f in zip(pts, feas, strict=True) if f and p[0] not in front]
    bad = [(p[1], p[2]) for p, f in zip(pts, feas, strict=True) if not f]
    fr = sorted((p[1], p[2]) for p in pts if p[0] in front)
    if ok:
        ax.scatter(*zip(*ok, strict=True), s=18, c="tab:blue", alpha=0.5, label="feasible")
    if bad:
        ax.scatter(*zip(*bad, strict=True), s=22, c="tab:gray", marker="x", alpha=0.7,
                   label="infeasible")
    if fr:
        ax.plot(*zip(*fr, strict=True), "-o", c="tab:red", ms=6, lw=1.5, label="Pareto front",
                drawstyle="steps-post" if ox.mode == "min" else "steps-pre")
    ax.set_xlabel(f"{ox.metric} ({'lower' if ox.mode == 'min' else 'higher'} is better)")
    ax.set_ylabel(f"{oy.metric} ({'lower' if oy.mode == 'min' else 'higher'} is better)")
    ax.set_title(title or f"{len(fr)} Pareto-optimal of {len(pts)} architectures")
    ax.grid(alpha=0.3)
    if pts:
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
