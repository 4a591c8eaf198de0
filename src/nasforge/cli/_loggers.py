"""The ``--log-to`` option that ``nasforge search`` and ``resume`` share (kept here so the
command modules only gain one parameter each)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

LogToOpt = Annotated[
    list[str] | None,
    typer.Option("--log-to", help="Also log the search to tensorboard (RUN_DIR/tensorboard) "
                 "or mlflow (RUN_DIR/mlruns); repeatable. Needs nasforge[tensorboard] / "
                 "nasforge[mlflow]."),
]


def loggers(names: list[str] | None, run_dir: str | Path) -> list[Any]:
    """The logger callbacks named by ``--log-to`` (none: an empty list, nothing imported)."""
    if not names:
        return []
    from nasforge.loggers import make_all

    return make_all(names, run_dir)
