"""``--log-to tensorboard``: event files in ``RUN_DIR/tensorboard``.

Per trial: its metrics as scalars (``trial/<metric>``, step = trial id) and an hparams
entry (the architecture's choices against its metrics, step-less, one per trial); per
finished trial: the best so far (``search/best_<metric>``, step = trials finished).
Written with torch's ``SummaryWriter`` (torch is already here; it needs ``tensorboard``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from nasforge.estimators.base import Result
from nasforge.loggers import flat_choices, objective_of
from nasforge.run.loop import Callback
from nasforge.strategies.base import Suggestion

DIR_NAME = "tensorboard"


class TensorBoardLogger(Callback):
    def __init__(self, run_dir: Path, config: Mapping[str, Any] | None = None) -> None:
        self._config = config
        self.metric, self.sign = "val_accuracy", 1.0
        self.log_dir = Path(run_dir) / DIR_NAME
        self.writer: SummaryWriter | None = None
        self.best: float | None = None
        self.n = 0

    def _w(self) -> SummaryWriter:
        if self.writer is None:  # opened lazily: a resumed session appends a new file
            self.metric, self.sign, _, self.n, self.best = objective_of(
                self.log_dir.parent, self._config)
            self.writer = SummaryWriter(log_dir=str(self.log_dir))
        return self.writer

    def on_trial_start(self, trial_id: int, suggestion: Suggestion) -> None:
        self._w()

    def on_trial_end(self, trial_id: int, suggestion: Suggestion, result: Result) -> None:
        w = self._w()
        self.n += 1
        nums = {k: float(v) for k, v in result.metrics.items()
                if isinstance(v, int | float) and math.isfinite(float(v))}
        for k, v in nums.items():
            w.add_scalar(f"trial/{k}", v, trial_id)
        w.add_scalar("trial/ok", 1.0 if result.ok else 0.0, trial_id)
        v = nums.get(self.metric) if result.ok else None
        if v is not None and (self.best is None or self.sign * v > self.sign * self.best):
            self.best = v
        if self.best is not None:
            w.add_scalar(f"search/best_{self.metric}", self.best, self.n)
        hp = flat_choices(suggestion.arch.to_json(), suggestion.arch.text)
        hp["trial"] = trial_id
        w.add_hparams(hp, {f"hparam/{k}": x for k, x in nums.items()} or {"hparam/ok": 0.0},
                      run_name=f"trial_{trial_id:05d}")
        w.flush()

    def on_session_end(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def on_finalized(self, result: Any) -> None:
        w = self._w()
        for k, v in (getattr(result, "test_metrics", None) or {}).items():
            if isinstance(v, int | float) and math.isfinite(float(v)):
                w.add_scalar(f"final/{k}", float(v), 0)
        if getattr(result, "best_arch", None) is not None:
            w.add_text("final/arch", str(result.best_arch.text), 0)
        w.close()
        self.writer = None
