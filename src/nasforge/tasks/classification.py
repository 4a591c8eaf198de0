"""Classification: one label per example, cross-entropy, accuracy (nasforge's first task)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasforge.errors import NasforgeError
from nasforge.tasks.base import Task, register


@register("classification", help="one class per example: cross-entropy, accuracy (default "
          "for integer or string labels)")
class Classification(Task):
    """``n_classes`` logits; accuracy is the primary metric; ``predict`` gives classes and
    probabilities. Splits are stratified so every class keeps its share."""

    primary = "accuracy"
    mode = "max"
    metric_names = ("accuracy", "loss")
    stratify = True
    output_names = ("logits",)

    def __init__(self, n_classes: int = 0, classes: list[str] | None = None) -> None:
        self.classes = [str(c) for c in (classes or [])]
        self.n_classes = int(n_classes or len(self.classes))

    def fit(self, y_train: np.ndarray) -> Classification:
        if not self.n_classes:
            self.n_classes = int(np.max(y_train)) + 1 if len(y_train) else 0
        return self

    def n_outputs(self) -> int:
        if self.n_classes < 2:
            raise NasforgeError("classification needs at least 2 classes")
        return self.n_classes

    def encode(self, y: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(y)
        return t.long() if t.dtype != torch.long else t

    def loss(self, label_smoothing: float = 0.0) -> nn.Module:
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    def metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        out = out.float()
        n = max(len(y), 1)
        return {
            "accuracy": int((out.argmax(1) == y).sum()) / n,
            "loss": float(F.cross_entropy(out, y, reduction="sum")) / n,
        }

    def decode(self, out: np.ndarray, names: list[str] | None = None) -> Any:
        from nasforge.export import Prediction

        logits = torch.as_tensor(np.asarray(out)).double()
        p = torch.softmax(logits, dim=-1).numpy()
        ids = p.argmax(axis=1).astype(np.int64)
        classes = list(names or self.classes or [str(i) for i in range(p.shape[1])])
        return Prediction(ids, p, [classes[i] for i in ids], classes)

    def state(self) -> dict[str, Any]:
        return {"task": self.name}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Classification:
        return cls()
