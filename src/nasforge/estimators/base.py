"""Performance-estimation interface: how good is an architecture, at what cost."""

from __future__ import annotations

import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from nasforge._util import as_float, finite

if TYPE_CHECKING:
    from nasforge.data import Dataset
    from nasforge.spaces.base import Arch, SearchSpace
    from nasforge.store import TrialRecord

Status = Literal["ok", "failed"]


@dataclass
class Result:
    """What an estimator says about one architecture.

    ``metrics`` is what search strategies may look at (e.g. ``val_accuracy`` in [0, 1],
    ``params``, ``flops``, ``latency_ms``). ``report`` holds values kept for reporting
    only, which strategies must never see (e.g. a benchmark table's test accuracy).
    ``cost`` is the wall-clock seconds the estimate took.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    cost: float = 0.0
    status: Status = "ok"
    error: str | None = None
    report: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def failed(cls, error: str, cost: float = 0.0) -> Result:
        return cls(metrics={}, cost=cost, status="failed", error=error)

    def visible(self) -> Result:
        """A copy without the report-only values: what a strategy is told."""
        return Result(dict(self.metrics), self.cost, self.status, self.error, {})

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "cost": self.cost,
            "status": self.status,
            "error": self.error,
            "report": self.report,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Result:
        return cls(
            metrics=dict(d.get("metrics") or {}),
            cost=float(d.get("cost") or 0.0),
            status=d.get("status", "ok"),
            error=d.get("error"),
            report=dict(d.get("report") or {}),
        )


class Estimator(ABC):
    """Base class of performance estimators.

    Subclasses implement :meth:`_evaluate`; :meth:`evaluate` wraps it so that any
    exception or non-finite metric becomes a ``failed`` result with its error text
    instead of stopping the search. ``fidelity`` (e.g. ``{"epochs": 2}``) overrides the
    estimator's own settings for one call, for multi-fidelity strategies.
    """

    name: str = "estimator"
    #: whether the estimator needs a dataset (a table lookup does not)
    needs_data: bool = True
    #: the fidelity key that budgets a trial in seconds of training, if the estimator has
    #: one (what a time-budgeted job plans its successive halving over)
    time_fidelity: str | None = None
    #: ``time.time()`` after which a trial should stop (the end of a job's search time);
    #: estimators that can stop mid-trial honour it, others finish the trial
    deadline: float | None = None
    #: the metrics its results may hold, so an objective or constraint on anything else is
    #: refused before the search starts; None: not declared (nothing is checked)
    reported_metrics: frozenset[str] | None = None
    #: whether :meth:`restore` rebuilds anything from stored trials (e.g. early-stopping
    #: references); False: it is the base no-op
    restores_state: bool = False

    def evaluate(
        self,
        arch: Arch,
        space: SearchSpace,
        data: Dataset | None = None,
        fidelity: Mapping[str, Any] | None = None,
    ) -> Result:
        t0 = time.perf_counter()
        try:
            res = self._evaluate(arch, space, data, dict(fidelity or {}))
        except KeyboardInterrupt:
            raise
        except Exception as e:  # a broken candidate must not stop the search
            tb = traceback.format_exc(limit=4)
            return Result.failed(f"{type(e).__name__}: {e}\n{tb}", time.perf_counter() - t0)
        if not res.cost:
            res.cost = time.perf_counter() - t0
        # a number that is NaN/inf; a non-number (None, a string) is left to the reader
        bad = [k for k, v in res.metrics.items() if as_float(v) is not None and not finite(v)]
        if res.ok and bad:
            return Result(
                res.metrics, res.cost, "failed", f"non-finite metric(s): {bad}", res.report
            )
        return res

    @abstractmethod
    def _evaluate(
        self, arch: Arch, space: SearchSpace, data: Dataset | None, fidelity: dict[str, Any]
    ) -> Result:
        """Estimate ``arch``; may raise, the caller turns that into a failed result."""

    def config(self) -> dict[str, Any]:
        """Constructor arguments, stored with a run so it can be resumed."""
        return {}

    # -- optional capabilities: declared here so callers call them, not probe for them --
    def restore(self, trials: Iterable[TrialRecord]) -> None:
        """Rebuild in-memory state from a resumed run's stored successful trials.

        Called once on resume, before any new trial, so a resumed search estimates as
        the uninterrupted one would have. The base keeps nothing and does nothing; an
        estimator that overrides this sets :attr:`restores_state`.
        """
        return None

    def top_k(self, k: int = 10) -> set[str]:
        """Texts of the ``k`` truly best architectures (ties included), where the
        estimator knows them (a benchmark table); empty when it does not."""
        return set()

    def best_arch(self) -> str | None:
        """Text of the best architecture by validation, where known; else None."""
        return None

    def ceiling(self) -> float | None:
        """Test accuracy (fraction) of :meth:`best_arch`: the best a search can report;
        None when unknown."""
        return None
