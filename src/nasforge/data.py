"""Datasets: digits, Fashion-MNIST (IDX files), numpy arrays, image folders.

PLACEHOLDER: the Dataset container is final; loaders are being written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Dataset:
    """Train / validation / test splits as normalized float32 arrays of shape (N, C, H, W).

    The validation split is held out from the training data and is what the search
    sees; the test split is touched once, for the final report. ``mean``/``std`` are the
    per-channel statistics used to normalize (inputs were scaled to [0, 1] first), kept
    so that a loaded model can normalize new images the same way.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str] = field(default_factory=list)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)
