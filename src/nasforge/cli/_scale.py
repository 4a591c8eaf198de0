"""``nasforge scale``: EfficientNet-style compound scaling of a run's model to a budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nasforge.cli._app import _duration, _metrics_line, _out, app


def _grid_seconds(value: str) -> float:
    """``--grid-time``: a duration, or 0 (also ``0s``, ``off``, ``none``) for no search."""
    if value.strip().lower() in ("0", "0s", "0.0", "off", "none", "no"):
        return 0.0
    return _duration(value, "--grid-time") or 0.0


@app.command("scale")
def scale_cmd(
    model_dir: Annotated[Path, typer.Argument(
        help="The model to scale: RUN_DIR/best (or the run directory).")],
    max_latency_ms: Annotated[float | None, typer.Option(
        "--max-latency-ms", help="Budget on latency_ms (CPU, batch 1, median).")] = None,
    max_flops: Annotated[str | None, typer.Option(
        "--max-flops", help="Budget on FLOPs per sample: 5M, 1G.")] = None,
    max_params: Annotated[str | None, typer.Option(
        "--max-params", help="Budget on parameters: 200k, 1.5M.")] = None,
    time_budget: Annotated[str, typer.Option(
        "--time-budget", help="Training time of the scaled model (90s, 5m).")] = "1m",
    coefficients: Annotated[str | None, typer.Option(
        "--coefficients", help="alpha,beta,gamma (e.g. 1.2,1.1,1.15), 'paper' or 'width' "
        "(width only); skips the grid search.")] = None,
    grid_time: Annotated[str, typer.Option(
        "--grid-time", help="Training time of each grid point at phi = 1 (0: no grid "
        "search, the paper's coefficients).")] = "10s",
    phi_step: Annotated[float, typer.Option(
        "--phi-step", min=0.01, max=8.0, help="Steps of phi scanned.")] = 0.25,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Where the scaled model goes (default RUN_DIR/scaled).")] = None,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="The data to train on (default: the run's).")] = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", min=0, help="Seed of the training (default: the run's).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the candidates and the choice; train nothing.")] = False,
) -> None:
    """Scale a searched model's depth, width and resolution together (EfficientNet's
    compound scaling) to the largest size within the budget, train it with the run's
    recipe and export it. The scaled model takes the same inputs as the original (it
    resizes them itself)."""
    from nasforge.scaling import scale_model

    def say(msg: str) -> None:
        _out(msg)

    res = scale_model(
        model_dir, max_latency_ms=max_latency_ms, max_flops=max_flops, max_params=max_params,
        time_budget=_duration(time_budget) or 0.0,
        coefficients=coefficients, grid_time=_grid_seconds(grid_time),
        phi_step=phi_step, out=out, dataset=dataset, train=not dry_run, seed=seed,
        say=say)
    if res.out is None:
        _out(f"chosen: phi = {res.chosen.phi:g} ({res.chosen.arch.text}); dry run, nothing "
             "trained")
        return
    _out(f"scaled model: {_metrics_line(res.metrics)}")
    _out(f"Model saved to {res.out}")
    _out(f"  nasforge predict {res.out} IMAGE.png")
