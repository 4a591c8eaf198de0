"""Tasks: what is predicted (the fourth component beside spaces, strategies, estimators).

A task owns everything that differs between, say, classifying and regressing: how
targets are read and split, the head's width, the loss, the metrics and the primary one
(the default objective), what ``predict`` returns and what the exported graph appends.
A new task is one file here plus a ``@register`` line; nothing else changes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nasforge.tasks.base import Task, register, registry
from nasforge.tasks.classification import Classification
from nasforge.tasks.detection import Detection
from nasforge.tasks.regression import Regression
from nasforge.tasks.segmentation import Segmentation

__all__ = ["Classification", "Detection", "Regression", "Segmentation", "Task", "get", "infer",
           "names", "register", "registry"]


def get(name: str, **options: Any) -> Task:
    """The task registered as ``name`` (``"classification"``, ``"regression"``)."""
    return registry.get(name, **options)


def names() -> list[str]:
    return registry.names()


def infer(y: Any) -> str:
    """The task for targets ``y`` when the user names none (printed by the CLI).

    Integers, strings and booleans are class labels; floats are regression targets unless
    every value is a whole number and there are few of them (labels stored as floats).
    Several columns read as regression (several numeric targets; ``from_arrays`` asks
    for ``task="regression"`` explicitly there, as they could also be one-hot labels)."""
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] > 1:
        return "regression"
    if arr.dtype.kind == "f":
        flat = arr.reshape(-1)
        finite = flat[np.isfinite(flat)]
        whole = finite.size > 0 and bool(np.all(finite == np.round(finite)))
        if whole and len(np.unique(finite)) <= max(2, min(100, flat.size // 5)):
            return "classification"
        return "regression"
    return "classification"
