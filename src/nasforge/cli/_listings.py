"""``nasforge tasks``, ``spaces``, ``strategies``, ``estimators``: what a search is built from."""

from __future__ import annotations

from typing import Any

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


@app.command("datasets")
def datasets_cmd() -> None:
    """List the data sets on hand (built-in, aeon's time series) and what you can bring by path."""
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
                        "sub-folder of .txt files per class")):
        typer.echo(f"{name:<28}  {what}")
