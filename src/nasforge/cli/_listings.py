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
