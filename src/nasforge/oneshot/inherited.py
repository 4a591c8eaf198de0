"""Scoring sub-networks of a trained supernet with their inherited weights (no training).

SPOS (:class:`~nasforge.oneshot.spos.InheritedWeightsEstimator`) and OFA
(:class:`~nasforge.oneshot.ofa.SubnetEvaluator`) score a candidate the same way: re-estimate
its batch-norm statistics on a few training batches
(:func:`~nasforge.oneshot.supernet.recalibrate_bn`), then take accuracy and loss in eval mode
on the validation split. :class:`InheritedWeights` is that shared part; a subclass says how
an arch names a sub-network of its supernet and whether the calibration batches are fixed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from nasforge.data import stratified_subset
from nasforge.errors import NasforgeError
from nasforge.estimators.base import Estimator, Result
from nasforge.oneshot.supernet import calibration_batches, recalibrate_bn

if TYPE_CHECKING:
    from nasforge.data import Dataset
    from nasforge.spaces.base import Arch, SearchSpace


def device_tensor(a: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``a`` as a ``dtype`` tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=dtype)


class _Bound(nn.Module):
    """The supernet fixed to one sub-network, as a plain module (for ``evaluate_model``)."""

    def __init__(self, supernet: nn.Module, subnet: Any) -> None:
        super().__init__()
        self.supernet = supernet
        self.subnet = subnet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.supernet(x, self.subnet)


class InheritedWeights(Estimator):
    """Scores a sub-network with the supernet's shared weights, after BN recalibration.

    Accuracy and loss are taken in eval mode on the validation split (a stratified
    ``max_val`` examples of it, if given); the supernet's train/eval mode is kept.
    Subclasses implement :meth:`subnet` and set the class options below.
    """

    #: True: one set of calibration batches, drawn at construction, serves every candidate
    #: (comparable, repeatable scores); False: fresh batches drawn from ``self.rng`` each time
    fixed_calibration: ClassVar[bool] = True
    #: the calibration stream is ``np.random.default_rng([seed, calib_key])``
    calib_key: ClassVar[int] = 0
    #: whether ``max_val < 1`` is refused
    check_max_val: ClassVar[bool] = True
    #: the constructor arguments :meth:`config` records
    config_keys: ClassVar[tuple[str, ...]] = ("calib_batches", "batch_size", "max_val", "seed")

    def __init__(
        self,
        supernet: nn.Module,
        data: Dataset,
        *,
        calib_batches: int = 8,
        batch_size: int = 128,
        max_val: int | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        if calib_batches < 1:
            raise NasforgeError(f"calib_batches must be >= 1, got {calib_batches}")
        if self.check_max_val and max_val is not None and max_val < 1:
            raise NasforgeError(f"max_val must be >= 1, got {max_val}")
        self.supernet = supernet
        self.calib_batches = calib_batches
        self.batch_size = batch_size
        self.max_val = max_val
        self.seed = seed
        self.device = torch.device(device)
        self.rng = np.random.default_rng([seed, self.calib_key])
        x_train = device_tensor(data.x_train, torch.float32, self.device)
        if self.fixed_calibration:
            self.calib = calibration_batches(x_train, calib_batches, batch_size, self.rng)
        else:
            self.x_train = x_train
        vi = np.arange(len(data.y_val))
        if max_val is not None and max_val < len(vi):
            vi = stratified_subset(data.y_val, max_val / len(vi), seed)
        self.x_val = device_tensor(data.x_val[vi], torch.float32, self.device)
        self.y_val = device_tensor(data.y_val[vi], torch.long, self.device)

    def subnet(self, arch: Any) -> Any:
        """What the supernet's forward takes as its second argument to run ``arch``."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.config_keys}

    def calibration(self) -> list[torch.Tensor]:
        """The training batches to re-estimate one sub-network's BN statistics on."""
        if self.fixed_calibration:
            return self.calib
        return calibration_batches(self.x_train, self.calib_batches, self.batch_size, self.rng)

    def recalibrate(self, arch: Any) -> None:
        """Re-estimate the BN statistics of sub-network ``arch`` inside the supernet."""
        sub = self.subnet(arch)
        batches = self.calibration()
        self.supernet.to(self.device)
        recalibrate_bn(self.supernet, batches, lambda xb: self.supernet(xb, sub))

    def score(self, arch: Any) -> tuple[float, float]:
        """``(val accuracy, val loss)`` of ``arch`` with inherited, recalibrated weights."""
        from nasforge.estimators.training import evaluate_model

        sub = self.subnet(arch)
        self.recalibrate(sub)
        was = self.supernet.training
        try:
            return evaluate_model(_Bound(self.supernet, sub), self.x_val, self.y_val,
                                  device=self.device)  # fmt: skip
        finally:
            self.supernet.train(was)

    def _evaluate(
        self, arch: Arch, space: SearchSpace, data: Dataset | None, fidelity: dict[str, Any]
    ) -> Result:
        t0 = time.perf_counter()
        acc, loss = self.score(arch)
        return Result({"val_accuracy": acc, "val_loss": loss}, time.perf_counter() - t0)
