"""numpy arrays to a :class:`Dataset`: layouts, scaling, labels or numeric targets,
and :func:`_finish`, the one validate / split / normalize path every loader ends in."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from nasforge.data.dataset import Dataset, _limit, _split
from nasforge.errors import DataError

#: fraction held out as the test split when a source has no test split of its own
TEST_FRACTION = 0.2
MIN_SIZE = 8


def _to_nchw(x: np.ndarray, what: str) -> np.ndarray:
    """(N,H,W), (N,C,H,W) or (N,H,W,C) with C in {1, 3} -> (N, C, H, W)."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        if x.shape[1] in (1, 3):
            return x
        if x.shape[3] in (1, 3):
            return np.moveaxis(x, 3, 1)
        raise DataError(
            f"{what} has shape {x.shape}: expected (N, C, H, W) or (N, H, W, C) with C = 1 or 3"
        )
    raise DataError(
        f"{what} has shape {x.shape}: expected (N, H, W), (N, C, H, W) or (N, H, W, C) images"
    )


def _to_unit(x: np.ndarray, what: str) -> np.ndarray:
    """Scale to [0, 1] float32: integers by their dtype's range (uint8 / 255), floats as given."""
    if x.dtype == bool:
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        top = 255.0 if x.size == 0 or int(x.max()) <= 255 else float(np.iinfo(x.dtype).max)
        return (x.astype(np.float32) / top).astype(np.float32)
    if np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
        if x.size and not np.isfinite(x).all():
            raise DataError(f"{what} contains NaN or infinite values")
        return x
    raise DataError(f"{what} has dtype {x.dtype}: expected uint8 (0..255) or float (0..1) images")


def _resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize (N, C, H, W) float images with antialiased bilinear interpolation, in chunks."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    import torch
    import torch.nn.functional as F

    out = np.empty((x.shape[0], x.shape[1], *size), dtype=np.float32)
    for i in range(0, len(x), 4096):
        t = torch.from_numpy(np.ascontiguousarray(x[i : i + 4096]))
        down = size[0] < x.shape[2] or size[1] < x.shape[3]
        r = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=down)
        out[i : i + 4096] = r.numpy()
    return out


def _check_size(hw: Sequence[int], what: str) -> None:
    if min(hw) < MIN_SIZE:
        raise DataError(
            f"{what}: images are {hw[0]}x{hw[1]}, smaller than the {MIN_SIZE}x{MIN_SIZE} minimum; "
            f"use larger images or pass image_size >= {MIN_SIZE} to resize them"
        )


def _labels(
    y: np.ndarray, y_test: np.ndarray | None, classes: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Class indices 0..K-1 for ``y`` (and ``y_test``) plus the class names."""
    if classes is not None:
        classes = [str(c) for c in classes]
        for arr, what in ((y, "y"), (y_test, "y_test")):
            if arr is None:
                continue
            if not np.issubdtype(arr.dtype, np.integer):
                raise DataError(f"{what} must hold integer class indices when classes are given")
            if arr.size and (arr.min() < 0 or arr.max() >= len(classes)):
                raise DataError(
                    f"{what} has labels outside 0..{len(classes) - 1} "
                    f"(there are {len(classes)} classes)"
                )
        yt = None if y_test is None else y_test.astype(np.int64)
        return y.astype(np.int64), yt, classes
    values, y_idx = np.unique(y, return_inverse=True)
    yt = None
    if y_test is not None:
        pos = np.searchsorted(values, y_test)
        pos = np.clip(pos, 0, len(values) - 1)
        bad = values[pos] != y_test
        if bad.any():
            raise DataError(
                f"y_test has label(s) {sorted(set(np.asarray(y_test)[bad].tolist()))[:5]} "
                "that never occur in y"
            )
        yt = pos.astype(np.int64)
    return y_idx.astype(np.int64), yt, [str(v) for v in values.tolist()]


def _finish(
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    classes: Sequence[str] | None,
    *,
    val_fraction: float,
    seed: int,
    test_fraction: float = TEST_FRACTION,
    image_size: int | None = None,
    max_train: int | None = None,
    task: str | None = None,
    target_names: Sequence[str] | None = None,
    task_options: dict[str, Any] | None = None,
) -> Dataset:
    """Validate, split, resize and normalize; the one path every loader goes through.

    ``task`` None infers it from the labels (:func:`nasforge.tasks.infer`) unless
    ``classes`` are given; ``"regression"`` keeps the targets as float32 numbers (a
    loader's class names that are numbers become those numbers)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test_fraction must be in [0, 1), got {test_fraction}")
    if max_train is not None and max_train < 2:
        raise DataError(f"max_train must be at least 2, got {max_train}")
    if image_size is not None and image_size < MIN_SIZE:
        raise DataError(f"image_size must be at least {MIN_SIZE}, got {image_size}")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"{name}: the data set is empty (no images)")
    if y.ndim != 1 and not (y.ndim == 2 and task == "regression"):
        raise DataError(f"{name}: labels must be a 1-D array, got shape {y.shape} (several "
                        "numeric targets per example need task='regression')")
    if len(x) != len(y):
        raise DataError(f"{name}: {len(x)} images but {len(y)} labels; they must match")
    if (x_test is None) != (y_test is None):
        raise DataError(f"{name}: give both x_test and y_test, or neither")
    x = _to_unit(_to_nchw(x, "x"), "x")
    task_name = _task_name(task, y, classes)
    if task_name == "classification":
        y_idx, yt_idx, class_names = _labels(
            y, None if y_test is None else np.asarray(y_test), classes)
        if len(class_names) < 2 or len(np.unique(y_idx)) < 2:
            raise DataError(
                f"{name}: all {len(y_idx)} examples have a single class; classification "
                "needs >= 2"
            )
    else:
        y_idx, yt_idx = _numeric_targets(name, y, y_test, classes)
        class_names = []
    strat = task_name == "classification"
    if x_test is not None:
        xt = np.asarray(x_test)
        if len(xt) != len(yt_idx):  # type: ignore[arg-type]
            raise DataError(
                f"{name}: {len(xt)} test images but {len(yt_idx)} test labels; they must match"  # type: ignore[arg-type]
            )
        xt = (
            _to_unit(_to_nchw(xt, "x_test"), "x_test")
            if len(xt)
            else np.zeros((0, *x.shape[1:]), np.float32)
        )
        if xt.shape[1:] != x.shape[1:]:
            raise DataError(
                f"{name}: test images are {xt.shape[1:]} but training images {x.shape[1:]}"
            )
        yt = yt_idx
    elif test_fraction > 0:
        keep, held = _split(y_idx, test_fraction, np.random.default_rng([seed, 1]), strat)
        x, xt, y_idx, yt = x[keep], x[held], y_idx[keep], y_idx[held]
    else:
        xt = np.zeros((0, *x.shape[1:]), np.float32)
        yt = np.zeros((0, *y_idx.shape[1:]), y_idx.dtype)
    if max_train is not None:
        x, y_idx = _limit(x, y_idx, max_train, seed, strat)
    keep, held = _split(y_idx, val_fraction, np.random.default_rng([seed, 2]), strat)
    x_train, y_train, x_val, y_val = x[keep], y_idx[keep], x[held], y_idx[held]
    no_test = x_test is None and test_fraction > 0 and len(yt) == 0
    if len(y_val) == 0 or no_test:  # every trial would fail scoring: say so up front
        n_all = len(y_idx) + (len(yt) if x_test is None else 0)
        what = 'validation and test' if no_test else 'validation'
        if not strat:
            raise DataError(f"{name}: {n_all} examples are too few to hold out {what} "
                            "examples; give at least 3, better hundreds")
        raise DataError(
            f"{name}: {n_all} examples in {len(class_names)} classes are too few to hold "
            f"out {what} examples; give at "
            "least 3 per class (one to train on, one to validate, one to test), better dozens"
        )
    if image_size is not None:
        size = (image_size, image_size)
        x_train, x_val, xt = _resize(x_train, size), _resize(x_val, size), _resize(xt, size)
    _check_size(x_train.shape[2:], name)
    mean = x_train.mean(axis=(0, 2, 3), dtype=np.float64)
    std = x_train.std(axis=(0, 2, 3), dtype=np.float64)
    std = np.where(std < 1e-6, 1.0, std)
    m = mean.astype(np.float32)[None, :, None, None]
    s = std.astype(np.float32)[None, :, None, None]

    def norm(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((a - m) / s, dtype=np.float32)

    ydt = np.int64 if strat else np.float32
    k = 1 if y_idx.ndim == 1 else y_idx.shape[1]
    names = [str(n) for n in target_names] if target_names else []
    if names and len(names) != k:
        raise DataError(f"{name}: {len(names)} target names for {k} target column(s)")
    if not strat and not names:
        names = ["y"] if k == 1 else [f"y{i}" for i in range(k)]
    return Dataset(
        name=name,
        x_train=norm(x_train),
        y_train=np.ascontiguousarray(y_train, ydt),
        x_val=norm(x_val),
        y_val=np.ascontiguousarray(y_val, ydt),
        x_test=norm(xt),
        y_test=np.ascontiguousarray(yt, ydt),
        classes=class_names,
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        task=task_name,
        target_names=names if not strat else [],
        task_options=dict(task_options or {}),
    )



def _task_name(task: str | None, y: Any, classes: Sequence[str] | None) -> str:
    """The task a loader uses: the one asked for (checked), or inferred from the labels."""
    from nasforge import tasks

    if task is None:
        return "classification" if classes is not None else tasks.infer(y)
    tasks.registry.factory(task)  # an unknown name: a clear error with the valid ones
    return task


def _numeric_targets(name: str, y: Any, y_test: Any, classes: Sequence[str] | None
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 targets (N,) or (N, k) for regression; a loader's numeric class names (the
    digits' "0".."9", a folder of "1.5/", "2.0/") become the numbers they name."""
    def conv(a: Any, what: str) -> np.ndarray:
        arr = np.asarray(a)
        if classes is not None:
            try:
                values = np.array([float(c) for c in classes], np.float64)
            except ValueError:
                raise DataError(
                    f"{name}: regression needs numeric targets, but the class names "
                    f"({', '.join(map(str, classes[:5]))}...) are not numbers"
                ) from None
            arr = values[arr.astype(np.int64)]
        if arr.dtype.kind not in "biuf":
            raise DataError(f"{name}: regression needs numeric targets, {what} holds "
                            f"{arr.dtype} values")
        arr = arr.astype(np.float32)
        if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[1] < 1):
            raise DataError(f"{name}: {what} must be (N,) or (N, targets), got {arr.shape}")
        if not np.isfinite(arr).all():
            raise DataError(f"{name}: {what} has NaN or infinite targets; drop or fill them")
        return arr

    yy = conv(y, "y")
    yt = None if y_test is None else conv(y_test, "y_test")
    if yt is not None and yt.shape[1:] != yy.shape[1:]:
        raise DataError(f"{name}: y_test has {yt.shape[1:]} target columns but y {yy.shape[1:]}")
    return yy, yt


def from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    *,
    classes: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    name: str = "arrays",
    test_fraction: float = TEST_FRACTION,
    image_size: int | None = None,
    max_train: int | None = None,
    task: str | None = None,
    target_names: Sequence[str] | None = None,
    task_options: dict[str, Any] | None = None,
) -> Dataset:
    """A :class:`Dataset` from numpy images and labels (or numeric targets).

    ``x`` is (N, H, W), (N, C, H, W) or (N, H, W, C) with C in {1, 3}; uint8 is
    scaled by 1/255, floats are taken as already in [0, 1]. Labels may be any values
    (their sorted distinct values become the classes) or, with ``classes``, indices
    into it. Without ``x_test`` a stratified ``test_fraction`` is held out as the test
    split (``test_fraction=0`` leaves it empty). ``max_train`` caps the train+validation
    pool (stratified) before the validation split is taken.

    ``task``: ``"classification"`` or ``"regression"`` (float targets, (N,) or (N, k),
    named by ``target_names``; splits are random); None infers it from ``y``
    (:func:`nasforge.tasks.infer`: floats are regression, integers and strings classes).
    ``task_options`` go to the task (e.g. ``{"loss": "huber"}``).
    """
    return _finish(
        name, x, y, x_test, y_test, classes,
        val_fraction=val_fraction, seed=seed, test_fraction=test_fraction,
        image_size=image_size, max_train=max_train, task=task, target_names=target_names,
        task_options=task_options,
    )  # fmt: skip
