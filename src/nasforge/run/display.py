"""What a search shows while it runs: the live progress bar, phase lines, the summary.

Kept apart from the loop so that silencing it (``progress=False``,
``NASFORGE_NO_PROGRESS``) never changes what is searched or stored.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

from nasforge.store import TrialRecord


def _quiet_env() -> bool:
    return os.environ.get("NASFORGE_NO_PROGRESS", "").strip() not in ("", "0", "false", "no")


class _Display:
    """The live progress bar (TTY only) and the printed summaries (unless quiet)."""

    def __init__(self, enabled: bool, total: float | None, done: float, unit: str) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.enabled = enabled
        self.bar = None
        #: ``time.monotonic()`` at the job's start: phase lines then show the job's clock
        self.t0: float | None = None
        self.task: Any = None
        # progress="phases" (the command line's --no-progress): no live bar, but the plan
        # and phase lines and the summary are still printed
        if enabled is True and not _quiet_env() and self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            cols: list[Any] = [TextColumn("[bold]search"), BarColumn()]
            cols.append(MofNCompleteColumn() if unit == "trials"
                        else TextColumn("{task.completed:.0f}/{task.total:.0f} s"))
            cols += [TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                     TextColumn("{task.fields[best]}")]
            self.bar = Progress(*cols, console=self.console, transient=False)
            self.task = self.bar.add_task("search", total=total, completed=done, best="")
            self.bar.start()

    @property
    def total(self) -> float | None:
        return None if self.bar is None else self.bar.tasks[0].total

    @total.setter
    def total(self, value: float | None) -> None:
        if self.bar is not None:
            self.bar.update(self.task, total=value)

    def update(self, done: float, best: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, best=best)

    def log(self, text: str) -> None:
        """A phase line (the plan, the final training): printed even without the live
        display, so a quiet run still says what it is doing; only NASFORGE_NO_PROGRESS
        or ``progress=False`` silence it."""
        if not self.enabled or _quiet_env():
            return
        from rich.markup import escape

        if self.t0 is not None:  # the job's clock, so a user sees where the time went
            age = max(0, int(time.monotonic() - self.t0))
            text = f"[{age // 60}:{age % 60:02d}] {text}"
        if self.bar is not None:
            self.bar.console.print(escape(text))
        else:
            print(f"nasforge: {text}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def print(self, *args: Any) -> None:
        if self.enabled:
            self.console.print(*args)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _summary_table(trials: list[TrialRecord], metric: str, mode: str, top: int = 5) -> Any:
    from rich.table import Table

    ok = [t for t in trials if t.ok and _finite(t.metrics.get(metric))]
    ok.sort(key=lambda t: (-float(t.metrics[metric]) if mode == "max" else float(t.metrics[metric]),
                           t.id))
    n_failed = sum(t.status == "failed" for t in trials)
    table = Table(title=f"top {min(top, len(ok))} of {len(ok)} ok trials ({n_failed} failed)")
    for col in ("#", "trial", metric, "params", "cost s", "arch"):
        table.add_column(col, overflow="fold")
    for rank, t in enumerate(ok[:top], 1):
        table.add_row(str(rank), str(t.id), _fmt(t.metrics[metric]),
                      _fmt(t.metrics.get("params", "")), _fmt(t.cost or 0.0), t.arch)
    return table


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
