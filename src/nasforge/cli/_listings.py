"""``nasforge tasks``, ``spaces``, ``strategies``, ``estimators``: what a search is built from."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nasforge.cli._app import app


def _listing(registry: Any) -> None:
    desc = registry.describe()
    width = max((len(n) for n in desc), default=0)
    for name, text in desc.items():
        typer.echo(f"{name:<{width}}  {text}".rstrip())


@app.command("tasks")
def tasks_cmd() -> None:
    """List the tasks (what a network predicts)."""
    from nasforge import tasks

    _listing(tasks.registry)


@app.command("spaces")
def spaces_cmd() -> None:
    """List the search spaces."""
    from nasforge import spaces

    _listing(spaces.registry)


@app.command("strategies")
def strategies_cmd() -> None:
    """List the search strategies."""
    from nasforge import strategies

    _listing(strategies.registry)


@app.command("estimators")
def estimators_cmd() -> None:
    """List the performance estimators."""
    from nasforge import estimators

    _listing(estimators.registry)


datasets_app = typer.Typer(
    help="List the data sets on hand (built-in, aeon's time series) and what you can bring "
         "by path; 'datasets make' generates detection/segmentation scenes.",
    invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(datasets_app, name="datasets")


@datasets_app.callback()
def datasets_cmd(ctx: typer.Context) -> None:
    """List the data sets on hand (built-in, aeon's time series) and what you can bring by
    path; 'nasforge datasets make detection DIR' generates a detection data set."""
    if ctx.invoked_subcommand is not None:
        return
    from nasforge.data import dataset_names
    from nasforge.data.sequences import AEON_PREFIX, bundled

    for name in dataset_names():
        typer.echo(f"{name:<28}  image")
    sets = bundled()
    for name, info in sets.items():
        length = info["length"] or "variable"
        what = (f"{info['classes']} classes" if info["task"] == "classification"
                else "regression")
        typer.echo(f"{AEON_PREFIX + name:<28}  sequence: {info['channels']} channel(s), "
                   f"length {length}, {what}")
    if not sets:
        typer.echo("(time series: pip install 'nasforge[timeseries]' for the UCR/UEA sets "
                   "bundled with aeon)")
    # what a user brings, by path (see README, "Your own data")
    for name, what in (("DIR/", "image folder: one sub-folder of images per class"),
                       ("FILE.csv|.tsv|.parquet", "tabular: give --target COLUMN"),
                       ("series:FILE.csv|.npy|.npz", "sequence: your own series (also FILE.ts)"),
                       ("text:FILE.csv|text:DIR/", "text: text and label columns, or a "
                        "sub-folder of .txt files per class"),
                       ("DIR/data.yaml", "detection / segmentation: the YOLO layout (images/, "
                        "labels/, masks/); see 'nasforge datasets make'")):
        typer.echo(f"{name:<28}  {what}")


@datasets_app.command("make")
def datasets_make_cmd(
    kind: Annotated[str, typer.Argument(help="detection or segmentation")],
    out_dir: Annotated[Path, typer.Argument(help="a new (or empty) folder to write")],
    images: Annotated[int, typer.Option("--images", "-n", help="how many scenes "
                                        "(80/10/10 % train/val/test)")] = 1000,
    seed: Annotated[int, typer.Option(help="the same seed writes the same files")] = 0,
    size: Annotated[int, typer.Option(help="image side in pixels")] = 128,
    min_object: Annotated[int, typer.Option(help="smallest object side in pixels")] = 12,
    max_object: Annotated[int, typer.Option(help="largest object side in pixels")] = 64,
    max_objects: Annotated[int, typer.Option(help="most objects per image")] = 6,
    digits_only: Annotated[bool, typer.Option(
        "--digits-only", help="cut objects from digits only, not Fashion-MNIST")] = False,
) -> None:
    """Generate a detection (or segmentation) data set in the YOLO layout: objects cut from
    Fashion-MNIST and digits on cluttered backgrounds, with tight boxes and masks."""
    import json
    import time

    from nasforge.data.scenes import make_scenes

    t0 = time.perf_counter()
    yml = make_scenes(out_dir, kind=kind, n_images=images, seed=seed, size=size,
                      min_px=min_object, max_px=max_object, max_objects=max_objects,
                      fashion=False if digits_only else None)
    stats = json.loads((yml.parent / "stats.json").read_text())
    per = ", ".join(f"{k} {v['images']} images / {v['objects']} objects"
                    for k, v in stats.items())
    typer.echo(f"wrote {yml} ({per}) in {time.perf_counter() - t0:.1f} s")
