"""A stored trial (:class:`TrialRecord`), the JSON it is stored as, and its pandas table.

Moved out of :mod:`nasforge.store` (which re-exports these names): every store keeps
trials as these records (:class:`~nasforge.store.RunStore` in SQLite,
:class:`~nasforge.run.stores.MemoryStore` in memory), so they belong to neither.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class TrialRecord:
    """One stored trial. ``status`` is ``running`` (started, not finished), ``ok`` or ``failed``."""

    id: int
    arch: str
    fidelity: dict[str, Any] | None
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    report: dict[str, float] = field(default_factory=dict)
    cost: float | None = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    attempt: int = 1
    arch_json: dict[str, Any] | None = None
    #: position in the order results were told to the strategy (None: not told, or a
    #: format-1 run, whose trials were told in ``finished_at`` order)
    told: int | None = None
    #: the strategy's note on the ask (``Suggestion.note``), for its rebuild on resume
    note: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def done(self) -> bool:
        return self.status in ("ok", "failed")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dumps(obj: Any) -> str:
    # allow_nan: a NaN metric of a failed trial is kept as written, not an error
    return json.dumps(obj, sort_keys=True, default=_json_default)


def _json_default(obj: Any) -> Any:
    """numpy scalars/arrays and Paths sneak into metrics and configs; store them plainly."""
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except (ValueError, TypeError):
            pass
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def trials_dataframe(trials: list[TrialRecord]) -> pd.DataFrame:
    """A pandas table of trial records (shared by the store and ``SearchResult``)."""
    import pandas as pd

    rows = []
    for t in trials:
        row: dict[str, Any] = {
            "id": t.id, "arch": t.arch, "status": t.status, "cost": t.cost, "error": t.error,
            "started_at": t.started_at, "finished_at": t.finished_at, "attempt": t.attempt,
            "fidelity": None if t.fidelity is None else json.dumps(t.fidelity, sort_keys=True),
        }
        row.update(t.metrics)
        row.update({f"report_{k}": v for k, v in t.report.items()})
        rows.append(row)
    cols = ["id", "arch", "status", "cost", "error", "started_at", "finished_at", "attempt",
            "fidelity"]
    return pd.DataFrame(rows, columns=None if rows else cols)


def best_trial(trials: Iterable[TrialRecord], metric: str, mode: str) -> TrialRecord | None:
    """The ok trial with the best finite ``metric`` (earliest on ties), or None: the one
    rule both stores answer ``best()`` with."""
    from nasforge._util import finite_or_none

    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    best: TrialRecord | None = None
    best_v = -math.inf
    for t in trials:
        v = finite_or_none(t.metrics.get(metric)) if t.ok else None
        if v is None:
            continue
        s = v if mode == "max" else -v
        if best is None or s > best_v:
            best, best_v = t, s
    return best
