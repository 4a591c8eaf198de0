"""``nasforge show``: a run's trials, Pareto front, best architecture and final model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from nasforge.cli._app import _console, _fmt, _metrics_line, app
from nasforge.errors import NasforgeError


@app.command()
def show(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    top: Annotated[
        int, typer.Option(min=0, help="Show the N best trials (0: all, in order).")
    ] = 10,
) -> None:
    """A run's trials, its best architecture and the final model's metrics."""
    from nasforge.store import RunStore

    with RunStore.open(run_dir) as store:
        config = store.config
        trials = store.trials()
        meta = store.meta() if callable(getattr(store, "meta", None)) else {}
        strat = (config.get("strategy") or {}).get("options") or {}
        metric, mode = strat.get("metric", "val_accuracy"), strat.get("mode", "max")
        if not isinstance(metric, str) or mode not in ("max", "min"):  # multi-objective runs
            metric, mode = "val_accuracy", "max"
        try:
            best = store.best(metric, mode)
        except ValueError:
            best = None
    from nasforge import reporting as R

    # the run's own goals: feasible trials only, highest fidelity first (as the search chose)
    objs, cons = R.run_objectives(config), R.run_constraints(config)
    resource = R.fidelity_resource(trials, strat.get("resource"))
    metric, mode = objs[0].metric, objs[0].mode
    ranked = R.ranked_candidates(trials, objs[0], cons, resource)
    best = ranked[0] if ranked else None
    con = _console()
    ds = config.get("dataset") or {}
    name_of = lambda k: (config.get(k) or {}).get("name", "?")  # noqa: E731
    space_label = _space_label(config.get("space") or {})
    con.print(Text(f"Run {run_dir}", style="bold"), soft_wrap=True)
    con.print(
        f"dataset {ds.get('resolved') or ds.get('name', '?')}  space {space_label}  "
        f"strategy {name_of('strategy')}  estimator {name_of('estimator')}  "
        f"seed {config.get('seed', '?')}  status {meta.get('status', '?')}",
        soft_wrap=True,
        markup=False,
    )
    counts = {s: sum(1 for t in trials if t.status == s) for s in ("ok", "failed", "running")}
    con.print(
        f"{len(trials)} trials: {counts['ok']} ok, {counts['failed']} failed, "
        f"{counts['running']} unfinished",
        markup=False,
    )
    if trials:
        sign = 1.0 if mode == "max" else -1.0

        def key(t: Any) -> float:
            try:
                v = float(t.metrics[metric])
            except (KeyError, TypeError, ValueError):
                return math.inf
            return -sign * v if math.isfinite(v) else math.inf

        shown = list(trials) if top == 0 else sorted(trials, key=lambda t: (key(t), t.id))[:top]
        extra = [k for k in ("params", "flops", "latency_ms") if any(k in t.metrics for t in shown)]
        title = "all trials" if top == 0 else f"top {len(shown)} by {metric} ({mode})"
        table = Table(title=title, title_justify="left")
        for col in ("id", "status", metric, *extra, "cost s"):
            table.add_column(col, justify="right")
        table.add_column("arch", overflow="fold")
        for t in shown:
            arch = t.arch if t.status != "failed" else f"{t.arch}  ({_first_line(t.error)})"
            table.add_row(
                str(t.id), t.status, _fmt(t.metrics.get(metric)),
                *(_fmt(t.metrics.get(k)) for k in extra), _fmt(t.cost), arch,
            )  # fmt: skip
        con.print(table)
    if trials and (len(objs) > 1 or cons):
        axes = R.report_objectives(objs, cons)
        con.print(R.front_rich_table(trials, axes, cons, resource, title=(
            f"Pareto front of {', '.join(map(str, axes))}"
            + (f" under {', '.join(map(str, cons))}" if cons else ""))))
    if best is not None:
        con.print(
            Text(f"Best architecture (trial {best.id}): {best.arch}", style="bold"), soft_wrap=True
        )
        con.print("  search:  " + _metrics_line(best.metrics), markup=False, soft_wrap=True)
    done = meta.get("final") if isinstance(meta, dict) else None
    if isinstance(done, dict) and done.get("feasible") is False:
        con.print(Text(f"No model returned: {done.get('message')}", style="bold red"),
                  soft_wrap=True)
    final = _final_info(Path(run_dir), meta)
    if final:
        metrics, model = final
        if metrics:
            con.print("  final:   " + _metrics_line(metrics), markup=False, soft_wrap=True)
        if model:
            example = {"tabular": "DATA.csv", "sequence": "SERIES.npy",
                       "text": '--text "some text"'}.get(_input_kind(model), "IMAGE.png")
            con.print(
                f"Model: {model}  (nasforge predict {model} {example})",
                markup=False,
                soft_wrap=True,
            )


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0][:80] if text and text.strip() else "error"


def _final_info(run_dir: Path, meta: dict[str, Any]) -> tuple[dict[str, Any], str | None] | None:
    """Final metrics and model dir: from the store's meta, else from best/summary.json."""
    final = meta.get("final") if isinstance(meta, dict) else None
    if isinstance(final, dict) and final.get("metrics"):
        md = final.get("model_dir")
        return dict(final["metrics"]), md if md and Path(md).exists() else None
    summary = run_dir / "best" / "summary.json"
    if summary.is_file():
        from nasforge.jsonio import read_json

        try:
            doc = read_json(summary)  # size, nesting and type checked: it is a user file
        except NasforgeError:
            return None
        metrics = doc.get("metrics")
        if not isinstance(metrics, dict):
            return None
        return {str(k): v for k, v in metrics.items() if isinstance(v, int | float)}, \
            str(run_dir / "best")
    return None


def _input_kind(model_dir: Any) -> str:
    """What the exported model takes (its ``arch.json``'s ``input_kind``; images before)."""
    from nasforge.jsonio import read_json

    try:
        doc = read_json(Path(str(model_dir)) / "arch.json")
    except (NasforgeError, OSError):
        return "image"
    return str(doc.get("input_kind") or "image") if isinstance(doc, dict) else "image"


def _space_label(spec: dict) -> str:
    """The space as a person reads it (``cnn+detection`` for a wrapped one), else its name."""
    from nasforge import spaces

    try:
        return spaces.get(spec["name"], **dict(spec.get("options") or {})).label
    except Exception:  # noqa: BLE001 - a damaged or foreign config: show what it says
        return str(spec.get("name", "?"))
