"""What the search loop needs from a store, and a store that keeps it all in memory.

:class:`~nasforge.run.loop.Run` writes every step to a :class:`Store`. A real run uses
:class:`~nasforge.store.RunStore` (SQLite, survives a crash); a benchmark on a table or a
one-shot candidate search, which run thousands of cheap trials and keep nothing on disk,
uses :class:`MemoryStore`: same calls, same trial ids and records, no files.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from nasforge.records import TrialRecord, _dumps, best_trial

if TYPE_CHECKING:
    from nasforge.estimators.base import Result


@runtime_checkable
class Store(Protocol):
    """The calls :class:`~nasforge.run.loop.Run` and a session make on a run's store.

    Named here so that the loop depends on these calls, not on SQLite: any object that
    has them (:class:`~nasforge.store.RunStore`, :class:`MemoryStore`) can back a run.
    """

    def get_meta(self, key: str, default: Any = None) -> Any: ...

    def set_meta(self, key: str | None = None, value: Any = None, **more: Any) -> None: ...

    def strategy_state(self) -> tuple[dict[str, Any] | None, int]: ...

    def start_trial(
        self,
        arch: str,
        arch_json: Mapping[str, Any],
        fidelity: Mapping[str, Any] | None,
        strategy_state: Mapping[str, Any],
        n_told: int,
        meta: Mapping[str, Any] | None = None,
        note: Mapping[str, Any] | None = None,
    ) -> int: ...

    def restart_trial(self, trial_id: int) -> None: ...

    def finish_trial(
        self,
        trial_id: int,
        result: Result,
        strategy_state: Mapping[str, Any],
        n_told: int,
        meta: Mapping[str, Any] | None = None,
        attempts: int = 1,
    ) -> None: ...

    def trials(self, status: str | None = None) -> list[TrialRecord]: ...

    def n_completed(self) -> int: ...

    def best(self, metric: str = "val_accuracy", mode: str = "max") -> TrialRecord | None: ...

    def close(self) -> None: ...


def _copy(obj: Any) -> Any:
    """A JSON round trip, as the SQLite store does: the record holds plain values that
    later changes to the caller's objects cannot reach."""
    return None if obj is None else json.loads(_dumps(obj))


class MemoryStore:
    """A :class:`Store` in plain Python structures: ids from 1 in start order, records
    and best trial exactly as :class:`~nasforge.store.RunStore` gives them."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        self._trials: dict[int, TrialRecord] = {}
        self._meta: dict[str, Any] = {"config": _copy(dict(config or {}))}
        self._state: tuple[dict[str, Any] | None, int] = (None, 0)
        self._n_done = 0

    # -- meta ------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return _copy(self._meta)

    def get_meta(self, key: str, default: Any = None) -> Any:
        return _copy(self._meta[key]) if key in self._meta else default

    def set_meta(self, key: str | None = None, value: Any = None, **more: Any) -> None:
        items = dict(more)
        if key is not None:
            items[key] = value
        self._meta.update(_copy(items))

    @property
    def config(self) -> dict[str, Any]:
        return self.get_meta("config", {})

    # -- strategy state --------------------------------------------------------------------
    def strategy_state(self) -> tuple[dict[str, Any] | None, int]:
        state, n = self._state
        return _copy(state), n

    def save_strategy_state(self, state: Mapping[str, Any], n_told: int) -> None:
        self._state = (_copy(dict(state)), int(n_told))

    # -- trials ----------------------------------------------------------------------------
    def start_trial(
        self,
        arch: str,
        arch_json: Mapping[str, Any],
        fidelity: Mapping[str, Any] | None,
        strategy_state: Mapping[str, Any],
        n_told: int,
        meta: Mapping[str, Any] | None = None,
        note: Mapping[str, Any] | None = None,
    ) -> int:
        tid = len(self._trials) + 1  # no trial is ever deleted: ids are dense, as in SQLite
        self._trials[tid] = TrialRecord(
            id=tid, arch=arch, fidelity=_copy(fidelity), status="running",
            started_at=time.time(), arch_json=_copy(arch_json), note=_copy(note),
        )  # fmt: skip
        self.save_strategy_state(strategy_state, n_told)
        if meta:
            self.set_meta(**meta)
        return tid

    def _running(self, trial_id: int, what: str) -> TrialRecord:
        from nasforge.errors import RunDirError

        rec = self._trials.get(trial_id)
        if rec is None or rec.status != "running":
            raise RunDirError(f"trial {trial_id} is not a running trial; cannot {what} it")
        return rec

    def restart_trial(self, trial_id: int) -> None:
        rec = self._running(trial_id, "restart")
        rec.attempt += 1
        rec.started_at = time.time()

    def finish_trial(
        self,
        trial_id: int,
        result: Result,
        strategy_state: Mapping[str, Any],
        n_told: int,
        meta: Mapping[str, Any] | None = None,
        attempts: int = 1,
    ) -> None:
        rec = self._running(trial_id, "finish")
        rec.status = "ok" if result.ok else "failed"
        rec.metrics = _copy(result.metrics)
        rec.report = _copy(result.report)
        rec.cost = float(result.cost or 0.0)
        rec.error = result.error
        rec.finished_at = time.time()
        rec.attempt += max(0, int(attempts) - 1)
        rec.told = int(n_told)
        self._n_done += 1
        self.save_strategy_state(strategy_state, n_told)
        if meta:
            self.set_meta(**meta)

    def trials(self, status: str | None = None) -> list[TrialRecord]:
        """Copies, in id order: a caller changing a record does not change the store."""
        return [replace(t, metrics=dict(t.metrics), report=dict(t.report))
                for t in self._trials.values() if status is None or t.status == status]

    def trial(self, trial_id: int) -> TrialRecord:
        return replace(self._trials[trial_id])

    def counts(self) -> dict[str, int]:
        out = {"running": 0, "ok": 0, "failed": 0}
        for t in self._trials.values():
            out[t.status] += 1
        return out

    def n_completed(self) -> int:
        return self._n_done

    def best(self, metric: str = "val_accuracy", mode: str = "max") -> TrialRecord | None:
        """The ok trial with the best finite ``metric`` (earliest on ties), or None."""
        best = best_trial(self._trials.values(), metric, mode)
        return None if best is None else replace(best)


    def close(self) -> None:
        """Nothing to release (the protocol's call, for code that closes any store)."""
