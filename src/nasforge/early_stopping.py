"""Learning-curve early stopping: the median stopping rule (Golovin et al. 2017, "Vizier").

A trial is stopped at epoch ``e`` when its best value so far is worse than the median
(or another ``quantile``) of what earlier *completed* trials had reached by epoch ``e``
(their running average by default, as in the paper). Hopeless candidates then cost a
few epochs instead of a full training run, with no model of the curve to fit.

Use it as the ``on_epoch`` callback of ``train_model`` (one monitor per trial)::

    stopper = LearningCurveStopper(min_trials=3, grace_epochs=1)
    monitor = stopper.trial(group="epochs=9")       # fresh curve for this trial
    hist = train_model(..., on_epoch=monitor)        # returns False -> training stops
    metrics = monitor.finalize(metrics, stopped=hist["stopped_early"])
    # -> adds this curve to the references; a stopped trial gets early_stopped: 1
    save(stopper.state_dict())                       # JSON: the reference curves

Curves are compared only within a ``group``: with a cosine schedule a 3-epoch run at
epoch 3 is not comparable to a 9-epoch run at epoch 3, so use the training budget as
the group. In a multi-process loop, ship ``state_dict()`` to the worker, build the
stopper there with :meth:`LearningCurveStopper.from_state`, and send the finished curve
back to be recorded with :meth:`LearningCurveStopper.add_curve`. Pure Python, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from nasforge.errors import NasforgeError

Statistic = Literal["mean", "best", "last"]
Curve = list[tuple[float, float]]  # (epoch, value) with value as a score: larger is better


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), without numpy."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    if xs[lo] == xs[hi]:  # also keeps -inf - -inf from becoming NaN
        return xs[lo]
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def _num(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x


class LearningCurveStopper:
    """Median stopping rule over the learning curves of earlier trials (see module doc).

    ``metric``/``mode``: what the curve tracks (``val_accuracy``/``max``, or
    ``val_loss``/``min``). ``quantile``: the reference level, in the "better" direction:
    0.5 is the median rule, lower values stop fewer trials. ``min_trials``: completed
    curves that must reach an epoch before anything is stopped there. ``grace_epochs``:
    a trial's first epochs are never stopped. ``reference``: the statistic of a reference
    curve up to the epoch (``"mean"``: running average, as Golovin et al.; ``"best"``;
    ``"last"``). ``include_stopped``: also use stopped trials' curves as references
    (off by default, as in the paper: they are a biased, pessimistic sample).
    ``max_curves``: keep only the newest curves (None: all).
    """

    def __init__(
        self,
        metric: str = "val_accuracy",
        mode: str = "max",
        quantile: float = 0.5,
        min_trials: int = 3,
        grace_epochs: int = 1,
        reference: Statistic = "mean",
        include_stopped: bool = False,
        max_curves: int | None = None,
    ) -> None:
        if mode not in ("max", "min"):
            raise NasforgeError(f"early stopping mode must be 'max' or 'min', not {mode!r}")
        if not 0.0 <= quantile <= 1.0:
            raise NasforgeError(f"early stopping quantile must be in [0, 1], got {quantile!r}")
        if min_trials < 1:
            raise NasforgeError(f"min_trials must be at least 1, got {min_trials!r}")
        if grace_epochs < 0:
            raise NasforgeError(f"grace_epochs must be >= 0, got {grace_epochs!r}")
        if reference not in ("mean", "best", "last"):
            raise NasforgeError(f"reference must be 'mean', 'best' or 'last', not {reference!r}")
        if max_curves is not None and max_curves < 1:
            raise NasforgeError(f"max_curves must be at least 1 or None, got {max_curves!r}")
        self.metric = metric
        self.mode = mode
        self.quantile = float(quantile)
        self.min_trials = int(min_trials)
        self.grace_epochs = int(grace_epochs)
        self.reference_stat: Statistic = reference
        self.include_stopped = bool(include_stopped)
        self.max_curves = max_curves
        #: reference curves: {"group", "epochs", "values" (raw metric), "stopped"}
        self.curves: list[dict[str, Any]] = []

    # -- conversions ------------------------------------------------------------------------
    def _score(self, v: float) -> float:
        """Larger-is-better form; NaN/inf (a diverged run) is the worst possible."""
        if not math.isfinite(v):
            return -math.inf
        return v if self.mode == "max" else -v

    def raw_curve(self, record: Any) -> list[tuple[float, float]]:
        """``(epoch, metric value)`` pairs from pairs, per-epoch dicts or a train history."""
        if isinstance(record, Mapping) and "curve" in record:
            record = record["curve"]
        out: list[tuple[float, float]] = []
        for i, item in enumerate(record or []):
            if isinstance(item, Mapping):
                if self.metric not in item:
                    continue  # e.g. an epoch that was not validated
                out.append((_num(item.get("epoch", i + 1)), _num(item[self.metric])))
            elif isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2:
                out.append((_num(item[0]), _num(item[1])))
            else:
                raise NasforgeError(
                    f"bad learning-curve entry {item!r}: expected (epoch, value) or a dict "
                    f"with 'epoch' and {self.metric!r}"
                )
        return out

    def curve_of(self, record: Any) -> Curve:
        """Like :meth:`raw_curve`, with values as scores (larger is better)."""
        return [(e, self._score(v)) for e, v in self.raw_curve(record)]

    # -- the rule ---------------------------------------------------------------------------------
    def _stat(self, scores: list[float]) -> float:
        if self.reference_stat == "best":
            return max(scores)
        if self.reference_stat == "last":
            return scores[-1]
        if any(math.isinf(s) for s in scores):
            return -math.inf
        return sum(scores) / len(scores)

    def threshold(self, epoch: float, group: str | None = None) -> float | None:
        """The score a trial must reach by ``epoch`` (None: too few references yet)."""
        stats = []
        for c in self.curves:
            if c.get("group") != group or (c.get("stopped") and not self.include_stopped):
                continue
            eps = c["epochs"]
            if not eps or max(eps) < epoch:
                continue  # this reference never got that far
            upto = [self._score(_num(v)) for e, v in zip(eps, c["values"], strict=True)
                    if e <= epoch]
            if upto:
                stats.append(self._stat(upto))
        if len(stats) < self.min_trials:
            return None
        return _quantile(stats, self.quantile)

    def should_stop(self, curve: Any, group: str | None = None) -> bool:
        """Whether a trial with this curve so far should stop now (at its last epoch)."""
        pts = self.curve_of(curve)
        if len(pts) <= self.grace_epochs:
            return False
        epoch = pts[-1][0]
        ref = self.threshold(epoch, group)
        if ref is None:
            return False
        best = max(s for _, s in pts)
        return best < ref

    # -- trials ---------------------------------------------------------------------------------
    def trial(self, group: str | None = None, max_epochs: int | None = None) -> TrialMonitor:
        """A fresh ``on_epoch`` callback for one trial (see :class:`TrialMonitor`)."""
        return TrialMonitor(self, group, max_epochs)

    def add_curve(self, curve: Any, stopped: bool = False, group: str | None = None) -> None:
        """Record a finished trial's curve (pairs, per-epoch dicts or a train history)."""
        if isinstance(curve, Mapping) and "curve" in curve:
            stopped = stopped or bool(curve.get("stopped_early", False))
        pts = self.raw_curve(curve)
        if not pts:
            return
        self.curves.append({
            "group": group,
            "epochs": [e for e, _ in pts],
            "values": [v if math.isfinite(v) else None for _, v in pts],  # None: diverged
            "stopped": bool(stopped),
        })
        if self.max_curves is not None and len(self.curves) > self.max_curves:
            del self.curves[: len(self.curves) - self.max_curves]

    # -- persistence -------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "mode": self.mode,
            "quantile": self.quantile,
            "min_trials": self.min_trials,
            "grace_epochs": self.grace_epochs,
            "reference": self.reference_stat,
            "include_stopped": self.include_stopped,
            "max_curves": self.max_curves,
        }

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable: the settings and the reference curves (no inf/NaN)."""
        return {"config": self.config(), "curves": [dict(c) for c in self.curves]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.curves = []
        for c in state.get("curves", []):
            if len(c.get("epochs", [])) != len(c.get("values", [])):
                raise NasforgeError("corrupt early-stopping state: epochs and values differ")
            self.curves.append({"group": c.get("group"),
                                "epochs": [float(e) for e in c["epochs"]],
                                "values": list(c["values"]),
                                "stopped": bool(c.get("stopped"))})

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LearningCurveStopper:
        """A stopper with the saved settings and curves."""
        s = cls(**dict(state.get("config") or {}))
        s.load_state_dict(state)
        return s


class TrialMonitor:
    """The ``on_epoch(epoch, record) -> bool`` callback of one trial.

    Returns False (stop) when the stopper's rule says the curve is hopeless. ``max_epochs``
    (the trial's budget), when given, means the last epoch never counts as a stop.
    Call :meth:`finalize` once training ends to record the curve and mark the metrics.
    """

    def __init__(self, stopper: LearningCurveStopper, group: str | None = None,
                 max_epochs: int | None = None) -> None:
        self.stopper = stopper
        self.group = group
        self.max_epochs = max_epochs
        self.raw: list[tuple[float, float]] = []  # (epoch, raw metric value)
        self.stopped = False
        self.stopped_at: float | None = None
        self._done = False

    def __call__(self, epoch: int | float, record: Mapping[str, Any] | None = None) -> bool:
        rec = record or {}
        if self.stopper.metric not in rec:
            return True  # nothing to judge this epoch
        ep = _num(rec.get("epoch", epoch))
        self.raw.append((ep, _num(rec[self.stopper.metric])))
        if self.max_epochs is not None and ep >= self.max_epochs:
            return True
        if self.stopper.should_stop(self.raw, self.group):
            self.stopped, self.stopped_at = True, ep
            return False
        return True

    @property
    def last_value(self) -> float | None:
        return self.raw[-1][1] if self.raw else None

    def finalize(self, metrics: Mapping[str, Any] | None = None, stopped: bool | None = None,
                 record: bool = True) -> dict[str, float]:
        """Record the curve as a reference (once) and return the trial's metrics.

        A stopped trial reports its last ``metric`` value and ``early_stopped: 1``.
        ``stopped`` overrides the monitor's own view (pass ``train_model``'s
        ``stopped_early``); ``record=False`` (e.g. a failed trial) keeps the curve out.
        """
        if stopped is not None:
            self.stopped = bool(stopped)
        out = dict(metrics or {})
        if self.stopped:
            if self.raw:
                out[self.stopper.metric] = self.raw[-1][1]
            out["early_stopped"] = 1.0
        if record and not self._done:
            self.stopper.add_curve(list(self.raw), stopped=self.stopped, group=self.group)
            self._done = True
        return out
