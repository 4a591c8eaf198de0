"""Which trial a (multi-objective, constrained, multi-fidelity) run returns, and its front.

The search loop, ``nasforge show`` and the benchmarks must agree on three things, so they
live here, computed from the stored trials and the run's config alone:

- the run's objectives and hard constraints (:func:`run_objectives`,
  :func:`run_constraints`): given to ``search(objectives=..., constraints=...)``, or the
  strategy's own (NSGA-II's ``objectives``), or its single ``metric``/``mode``;
- the ranked candidates for the returned model (:func:`ranked_candidates`): *feasible*
  successful trials only, the highest fidelity of the run first (a 1-epoch score must not
  beat a 9-epoch one), then by the first objective, earliest trial on ties -- for an
  unconstrained single-fidelity run that is exactly :meth:`RunStore.best`;
- the Pareto front of those trials (:func:`pareto_ids`) and its markdown/PNG report
  (:func:`write_pareto_report`), built on :mod:`nasforge.pareto`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nasforge._util import finite_or_none
from nasforge.objectives import (
    Constraint,
    Objective,
    constraint_metrics,
    feasible,
    format_number,
    parse_constraints,
    parse_objectives,
)
from nasforge.pareto import front_of_records, front_table, plot_front
from nasforge.store import TrialRecord

#: fidelity keys in the order they decide "higher fidelity" when several vary
FIDELITY_ORDER = ("epochs", "data_fraction", "resolution")
PARETO_MD = "pareto.md"
PARETO_PNG = "pareto.png"


# ---------------------------------------------------------------------- objectives of a run
def run_objectives(config: Mapping[str, Any]) -> list[Objective]:
    """The objectives of a stored run config, first one deciding "best"."""
    given = config.get("objectives")
    if given:
        return parse_objectives(list(given))
    opts = (config.get("strategy") or {}).get("options") or {}
    if opts.get("objectives"):
        return parse_objectives(list(opts["objectives"]))
    return [Objective(str(opts.get("metric") or "val_accuracy"),
                      "min" if opts.get("mode") == "min" else "max")]


def run_constraints(config: Mapping[str, Any]) -> list[Constraint]:
    """The hard constraints of a run: the search's own plus the strategy's (no repeats)."""
    opts = (config.get("strategy") or {}).get("options") or {}
    out = parse_constraints(list(config.get("constraints") or []),
                            list(opts.get("constraints") or []))
    return list({str(c): c for c in out}.values())


def is_multiobjective(config: Mapping[str, Any]) -> bool:
    return len(run_objectives(config)) > 1


def report_objectives(objectives: Sequence[Objective],
                      constraints: Sequence[Constraint]) -> list[Objective]:
    """Axes for a front: the objectives, or the first one against the constrained metrics.

    A constrained single-objective search is still a trade-off (accuracy vs. the latency
    budget), so its report shows that trade-off instead of a one-column "front".
    """
    out = list(objectives)
    if len(out) < 2:
        seen = {o.metric for o in out}
        for c in constraints:
            if c.metric not in seen:
                out.append(Objective(c.metric, "min" if c.op == "<=" else "max"))
                seen.add(c.metric)
    return out


# ------------------------------------------------------------------------- fidelity levels
def _num(v: Any) -> float | None:
    return finite_or_none(v)


def fidelity_resource(trials: Sequence[TrialRecord], preferred: str | None = None) -> str | None:
    """The fidelity key whose value ranks trials by fidelity, or None if all are alike.

    ``preferred`` is a multi-fidelity strategy's ``resource``; otherwise the numeric key
    that varies among the successful trials (``epochs`` first when several vary).
    """
    if preferred:
        return preferred
    values: dict[str, set[float]] = {}
    for t in trials:
        if t.ok and isinstance(t.fidelity, Mapping):
            for k, v in t.fidelity.items():
                x = _num(v)
                if x is not None:
                    values.setdefault(str(k), set()).add(x)
    varying = [k for k, vs in values.items() if len(vs) > 1]
    if not varying:
        return None
    ordered = [k for k in FIDELITY_ORDER if k in varying] + sorted(
        k for k in varying if k not in FIDELITY_ORDER)
    return ordered[0]


def fidelity_level(trial: TrialRecord, resource: str | None) -> float:
    """The trial's value of ``resource`` (``-inf`` without one: ranks lowest)."""
    if resource is None:
        return 0.0
    fid = trial.fidelity if isinstance(trial.fidelity, Mapping) else {}
    x = _num(fid.get(resource))
    return -math.inf if x is None else x


# ------------------------------------------------------------------------------- choosing
def ranked_candidates(trials: Sequence[TrialRecord], objective: Objective,
                      constraints: Sequence[Constraint] = (),
                      resource: str | None = None, distinct: bool = True) -> list[TrialRecord]:
    """Feasible ok trials with a finite ``objective``: highest fidelity, best, earliest first.

    ``distinct`` keeps one trial per architecture (its best-ranked one): a fallback to the
    same architecture again would fail the same way.
    """
    pool = [t for t in trials if t.ok and math.isfinite(objective.score(t.metrics))
            and feasible(t.metrics, constraints)]
    pool.sort(key=lambda t: (-fidelity_level(t, resource), -objective.score(t.metrics), t.id))
    if not distinct:
        return pool
    seen: set[str] = set()
    out = []
    for t in pool:
        if t.arch not in seen:
            seen.add(t.arch)
            out.append(t)
    return out


def top_fidelity(trials: Sequence[TrialRecord], resource: str | None) -> list[TrialRecord]:
    """The ok trials at the highest fidelity level (all ok trials when fidelity is uniform)."""
    ok = [t for t in trials if t.ok]
    if resource is None or not ok:
        return ok
    top = max(fidelity_level(t, resource) for t in ok)
    return [t for t in ok if fidelity_level(t, resource) == top]


def pareto_ids(trials: Sequence[TrialRecord], objectives: Sequence[Objective],
               constraints: Sequence[Constraint] = (),
               resource: str | None = None) -> list[int]:
    """Trial ids on the feasible Pareto front (highest fidelity only), ascending."""
    pool = top_fidelity(trials, resource)
    idx = front_of_records(pool, list(objectives), list(constraints))
    return sorted(pool[i].id for i in idx)


def infeasible_message(trials: Sequence[TrialRecord], constraints: Sequence[Constraint],
                       objective: Objective | None = None) -> str:
    """Why no trial qualifies: no success, a constrained metric never reported, or bounds."""
    ok = [t for t in trials if t.ok]
    cons = ", ".join(str(c) for c in constraints)
    if not ok:
        refused = [t for t in trials if "infeasible before training" in (t.error or "")]
        if refused:
            seen = []
            for c in constraints:
                vals = [float(t.metrics[c.metric]) for t in refused
                        if _num(t.metrics.get(c.metric)) is not None]
                if vals:
                    v = min(vals) if c.op == "<=" else max(vals)
                    seen.append(f"best {c.metric} seen {format_number(round(v, 4))}")
            return (f"no feasible model: all {len(refused)} architectures tried broke "
                    f"{cons} before training ({'; '.join(seen) or 'no values'}); relax the "
                    "constraints or search a smaller space")
        return "no trial succeeded, so no model can be returned"
    missing = [m for m in constraint_metrics(constraints) if not any(m in t.metrics for t in ok)]
    if missing:
        return (f"no feasible model: the constrained metric(s) {missing} were never measured "
                f"by the estimator (constraints: {cons})")
    closest = []
    for c in constraints:
        vals = [float(t.metrics[c.metric]) for t in ok if _num(t.metrics.get(c.metric)) is not None]
        if vals:
            v = min(vals) if c.op == "<=" else max(vals)
            closest.append(f"best {c.metric} seen {format_number(round(v, 4))}")
    extra = f" ({'; '.join(closest)})" if closest else ""
    what = f" with a finite {objective.metric}" if objective is not None else ""
    return (f"no feasible model: none of the {len(ok)} successful trials{what} meets "
            f"{cons}{extra}; relax the constraints or search longer")


# -------------------------------------------------------------------------------- reports
def front_markdown(trials: Sequence[TrialRecord], objectives: Sequence[Objective],
                   constraints: Sequence[Constraint] = (), resource: str | None = None,
                   extra: Sequence[str] = ("params", "flops", "latency_ms")) -> str:
    """Markdown table of the feasible front (via :func:`nasforge.pareto.front_table`)."""
    pool = top_fidelity(trials, resource)
    recs = [{"arch": f"{t.id}: {t.arch}", "metrics": t.metrics, "status": t.status}
            for t in pool]
    return front_table(recs, list(objectives), list(constraints), extra=list(extra))


def write_pareto_report(run_dir: str | Path, trials: Sequence[TrialRecord],
                        objectives: Sequence[Objective], constraints: Sequence[Constraint] = (),
                        resource: str | None = None,
                        final: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """``RUN_DIR/pareto.md`` (front table, constraints, the returned model) and ``pareto.png``.

    The plot uses the first two report axes (:func:`report_objectives`); with a single
    axis only the markdown is written.
    """
    run_dir = Path(run_dir)
    axes = report_objectives(objectives, constraints)
    pool = top_fidelity(trials, resource)
    ids = pareto_ids(trials, axes, constraints, resource)
    lines = ["# Pareto front", ""]
    lines.append(f"Objectives: {', '.join(str(o) for o in objectives)}")
    if len(axes) > len(objectives):
        lines.append(f"Shown against: {', '.join(str(o) for o in axes[len(objectives):])}")
    lines.append(f"Constraints: {', '.join(str(c) for c in constraints) or 'none'}")
    n_ok = len(pool)
    n_feas = sum(feasible(t.metrics, constraints) for t in pool)
    scope = f" at the highest {resource}" if resource else ""
    lines += [f"Trials{scope}: {n_ok} ok, {n_feas} feasible; front: {len(ids)} "
              f"(trial ids {', '.join(map(str, ids)) or '-'})", ""]
    lines.append(front_markdown(trials, axes, constraints, resource).rstrip())
    if final:
        lines += ["", "## Returned model", ""]
        for k, v in final.items():
            lines.append(f"- {k}: {v}")
    out = {"md": run_dir / PARETO_MD}
    if len(axes) >= 2:
        x, y = axes[1], axes[0]
        png = plot_front(pool, x=str(x), y=str(y), path=run_dir / PARETO_PNG,
                         constraints=list(constraints))
        out["png"] = png
        lines += ["", f"![front]({PARETO_PNG})"]
    (run_dir / PARETO_MD).write_text("\n".join(lines) + "\n")
    return out


def front_rich_table(trials: Sequence[TrialRecord], objectives: Sequence[Objective],
                     constraints: Sequence[Constraint] = (), resource: str | None = None,
                     title: str | None = None) -> Any:
    """The front as a ``rich`` table for ``nasforge show``, best first by the first objective."""
    from rich.table import Table

    by_id = {t.id: t for t in trials}
    ids = pareto_ids(trials, objectives, constraints, resource)
    rows = sorted((by_id[i] for i in ids), key=lambda t: (-objectives[0].score(t.metrics), t.id))
    table = Table(title=title or f"Pareto front ({len(rows)} trials)", title_justify="left")
    table.add_column("id", justify="right")
    for o in objectives:
        table.add_column(f"{o.metric} ({o.mode})", justify="right")
    table.add_column("arch", overflow="fold")
    for t in rows:
        vals = [_short(t.metrics.get(o.metric)) for o in objectives]
        table.add_row(str(t.id), *vals, t.arch)
    return table


def _short(v: Any) -> str:
    x = _num(v)
    if x is None:
        return "-"
    if x == int(x) and abs(x) >= 1000:
        return format_number(x)
    return f"{x:.4g}"
