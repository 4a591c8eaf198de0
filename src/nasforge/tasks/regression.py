"""Regression: one or several numeric targets per example, standardized for training."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from nasforge.errors import NasforgeError, RunDirError
from nasforge.tasks.base import Task, register

LOSSES = ("mse", "huber")


class Destandardize(nn.Module):
    """``y * std + mean`` after the network, so the exported graph answers in the user's
    units (nobody serving an ONNX file should have to know our training scale)."""

    def __init__(self, inner: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * self.std + self.mean


@dataclass
class Values:
    """Regression predictions: ``values`` is (N, targets) in the training targets' units;
    iterating gives one float per example (one target) or a ``{name: value}`` dict."""

    values: np.ndarray
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: int) -> float | dict[str, float]:
        row = self.values[i]
        if len(row) == 1:
            return float(row[0])
        return {n: float(v) for n, v in zip(self.names, row, strict=True)}

    def __iter__(self) -> Iterator[float | dict[str, float]]:
        for i in range(len(self)):
            yield self[i]


@register("regression", help="numeric target(s): MSE or Huber loss, RMSE/MAE/R^2 (default "
          "for float targets)")
class Regression(Task):
    """``k`` outputs for ``k`` numeric targets. Targets are standardized with the training
    split's mean and standard deviation (so one learning rate fits any unit); metrics are
    on the original scale, averaged over targets; ``loss="huber"`` is robust to outliers.
    Splits are random (there are no classes to stratify)."""

    primary = "rmse"
    mode = "min"
    metric_names = ("rmse", "mae", "r2", "loss")
    stratify = False
    output_names = ("values",)

    def __init__(self, loss: str = "mse", n_targets: int = 0,
                 target_names: list[str] | None = None) -> None:
        if loss not in LOSSES:
            raise NasforgeError(f"regression loss must be one of {', '.join(LOSSES)}, "
                                f"got {loss!r}")
        self.loss_name = loss
        self.target_names = [str(n) for n in (target_names or [])]
        self.n_targets = int(n_targets or len(self.target_names))
        self.mean: list[float] = []
        self.std: list[float] = []

    def fit(self, y_train: np.ndarray) -> Regression:
        y = _as_2d(np.asarray(y_train, np.float64))
        if not len(y):
            raise NasforgeError("regression needs training targets to fit their scale")
        if not np.isfinite(y).all():
            raise NasforgeError("regression targets must be finite numbers (no NaN or inf)")
        self.n_targets = y.shape[1]
        mean, std = y.mean(0), y.std(0)
        self.mean = [float(v) for v in mean]
        self.std = [float(s) if s > 1e-12 else 1.0 for s in std]
        return self

    def n_outputs(self) -> int:
        if self.n_targets < 1:
            raise NasforgeError("regression needs at least one target (fit it first)")
        return self.n_targets

    def encode(self, y: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(y, np.float32) if not torch.is_tensor(y) else y)
        t = t.float().reshape(len(t), -1)
        if self.mean:
            t = (t - torch.tensor(self.mean)) / torch.tensor(self.std)
        return t

    def loss(self, label_smoothing: float = 0.0) -> nn.Module:
        return nn.HuberLoss() if self.loss_name == "huber" else nn.MSELoss()

    def metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        out, y = out.double().reshape(len(out), -1), y.double().reshape(len(y), -1)
        loss = float(self.loss()(out.float(), y.float()))
        std = torch.tensor(self.std or [1.0] * y.shape[1], dtype=torch.float64)
        err = (out - y) * std  # on the original scale
        mse = (err**2).mean(0)
        var = (y * std).var(0, unbiased=False)
        r2 = torch.where(var > 0, 1 - mse / var.clamp_min(1e-300), torch.zeros_like(var))
        return {
            "rmse": float(mse.sqrt().mean()),
            "mae": float(err.abs().mean()),
            "r2": float(r2.mean()),
            "loss": loss,
        }

    def serve(self, net: nn.Module) -> nn.Module:
        return Destandardize(net, self.mean or [0.0] * self.n_outputs(),
                             self.std or [1.0] * self.n_outputs())

    def decode(self, out: np.ndarray, names: list[str] | None = None) -> Values:
        v = _as_2d(np.asarray(out, np.float64))
        return Values(v, list(names or self.target_names or
                              [f"y{i}" for i in range(v.shape[1])]))

    def state(self) -> dict[str, Any]:
        return {"task": self.name, "loss": self.loss_name, "mean": self.mean,
                "std": self.std, "target_names": self.target_names}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Regression:
        try:
            t = cls(loss=str(state.get("loss", "mse")),
                    target_names=[str(n) for n in state.get("target_names") or []])
            mean = [float(v) for v in state["mean"]]
            std = [float(v) for v in state["std"]]
        except (KeyError, TypeError, ValueError, NasforgeError) as e:
            raise RunDirError(f"the regression task's state is corrupt: {e}") from None
        if len(mean) != len(std) or not mean or not all(map(math.isfinite, mean)) or \
                not all(math.isfinite(s) and s > 0 for s in std):
            raise RunDirError("the regression task's state is corrupt: 'mean' and 'std' must "
                              "be equally long lists of finite numbers, std positive")
        t.mean, t.std, t.n_targets = mean, std, len(mean)
        return t


def _as_2d(y: np.ndarray) -> np.ndarray:
    return y.reshape(len(y), -1) if y.ndim != 2 else y
