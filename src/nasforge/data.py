"""Datasets: digits, Fashion-MNIST (IDX files), numpy arrays, image folders.

Every loader ends in the same place (:func:`_finish`): images scaled to [0, 1] as
float32 (N, C, H, W), a stratified, seeded validation split held out from the training
data (what the search sees), a test split kept apart for the final report, and
per-channel normalization with statistics of the training split only, so no
information leaks from validation or test data into training.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nasforge.errors import DataError


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
    #: what is predicted (a name in :mod:`nasforge.tasks`); regression targets are float32
    #: (N,) or (N, k) in the user's units, standardized only inside the task
    task: str = "classification"
    target_names: list[str] = field(default_factory=list)
    task_options: dict[str, Any] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def stratify(self) -> bool:
        """Whether subsets keep class shares (classification) or are drawn at random."""
        from nasforge import tasks

        return bool(tasks.registry.factory(self.task).stratify)  # type: ignore[attr-defined]

    def make_task(self) -> Any:
        """The :class:`~nasforge.tasks.Task`, fitted to the training targets: every trial,
        the final model and the export use the same fit, as it is computed from the same
        split."""
        from nasforge import tasks

        opts = dict(self.task_options)
        if self.task == "classification":
            opts.setdefault("classes", list(self.classes))
        elif "target_names" in accepted(tasks.registry.factory(self.task)):
            opts.setdefault("target_names", list(self.target_names))
        return tasks.get(self.task, **opts).fit(self.y_train)

    @property
    def n_outputs(self) -> int:
        """The head's width: classes, or regression targets."""
        if self.task == "classification":
            return self.num_classes
        return self.make_task().n_outputs()

    def subset(self, y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
        """Sorted indices of a seeded ``fraction`` of targets ``y``: stratified for
        classification, uniform at random otherwise."""
        return subset_indices(y, fraction, seed, self.stratify)


FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
#: where Debian's ``dataset-fashion-mnist`` package puts the IDX files
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_NAMES = ["auto", "digits", "fashion-mnist"]
_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
}
#: fraction held out as the test split when a source has no test split of its own
TEST_FRACTION = 0.2
MIN_SIZE = 8


def default_augment(dataset: object) -> str:
    """The augmentation a time-budgeted job trains with when none is given: horizontal
    flips for Fashion-MNIST (clothes are mirror-symmetric; measured to help), none for
    anything else (a flipped digit or letter is another symbol; give ``augment`` for
    your own images if mirrors keep their class)."""
    name = getattr(dataset, "name", dataset)
    if not isinstance(name, str) or getattr(dataset, "task", "classification") != \
            "classification":  # a mirror may change a regression target
        return "none"
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key == "auto":
        key = "fashion-mnist" if fashion_mnist_available() else "digits"
    return "flip" if key == "fashion-mnist" else "none"


def dataset_names() -> list[str]:
    """Built-in dataset names accepted by :func:`load_dataset` (besides a folder path)."""
    return list(_NAMES)


# ----------------------------------------------------------------------------- splits
def stratified_split(
    y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(keep, held_out)``: ``round(N * fraction)`` held out, spread over classes.

    Each class gives ``floor(n_c * fraction)`` and the remaining examples go to the
    classes with the largest remainders (ties broken at random), so the total is exact
    and class proportions match as closely as integers allow. Every class keeps at
    least one example; with ``fraction > 0`` at least one example is held out when
    possible, so small data sets still get a non-empty split. Both arrays are sorted.
    """
    y = np.asarray(y)
    classes = np.unique(y)
    groups = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    sizes = np.array([len(g) for g in groups])
    cap = sizes - 1  # every class keeps one
    exact = sizes * fraction
    take = np.minimum(np.floor(exact).astype(np.int64), cap)
    target = min(max(int(round(len(y) * fraction)), 1 if fraction > 0 else 0), int(cap.sum()))
    order = np.lexsort((rng.random(len(groups)), -(exact - np.floor(exact))))
    while take.sum() < target:  # hand out the rest by largest remainder, then round-robin
        progressed = False
        for i in order:
            if take.sum() >= target:
                break
            if take[i] < cap[i]:
                take[i] += 1
                progressed = True
        if not progressed:
            break
    held = [g[:k] for g, k in zip(groups, take, strict=True)]
    keep = [g[k:] for g, k in zip(groups, take, strict=True)]
    h = np.concatenate(held) if held else np.zeros(0, np.int64)
    k_all = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    return np.sort(k_all).astype(np.int64), np.sort(h).astype(np.int64)


def stratified_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, stratified ``fraction`` of ``y`` (all of it at 1.0)."""
    if fraction >= 1.0:
        return np.arange(len(y), dtype=np.int64)
    _, sub = stratified_split(y, fraction, np.random.default_rng(seed))
    if sub.size == 0:  # fraction so small that rounding took nothing: keep one example
        sub = np.array([int(np.random.default_rng(seed).integers(len(y)))], dtype=np.int64)
    return sub


def random_split(n: int, fraction: float, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(keep, held_out)`` of ``n`` examples, ``round(n * fraction)`` held out at
    random (at least one when ``fraction > 0`` and ``n > 1``); both sorted. The
    regression counterpart of :func:`stratified_split`."""
    k = min(max(int(round(n * fraction)), 1 if fraction > 0 and n > 1 else 0), max(n - 1, 0))
    perm = rng.permutation(n)
    return np.sort(perm[k:]).astype(np.int64), np.sort(perm[:k]).astype(np.int64)


def subset_indices(y: np.ndarray, fraction: float, seed: int, stratify: bool = True
                   ) -> np.ndarray:
    """A seeded ``fraction`` of ``y``'s indices, stratified or at random (sorted)."""
    if stratify:
        return stratified_subset(y, fraction, seed)
    if fraction >= 1.0:
        return np.arange(len(y), dtype=np.int64)
    _, sub = random_split(len(y), fraction, np.random.default_rng(seed))
    if sub.size == 0 and len(y):
        sub = np.array([int(np.random.default_rng(seed).integers(len(y)))], dtype=np.int64)
    return sub


def accepted(factory: Any) -> set[str]:
    """The keyword names a factory takes (for optional task options)."""
    import inspect

    return set(inspect.signature(factory).parameters)


def _limit(x: np.ndarray, y: np.ndarray, n: int, seed: int, stratify: bool = True
           ) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` examples, a stratified subset so class balance is kept."""
    if n >= len(y):
        return x, y
    idx = subset_indices(y, n / len(y), seed, stratify)
    return x[idx], y[idx]


# ----------------------------------------------------------------------------- arrays
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
    if y.ndim != 1 and not (y.ndim == 2 and task != "classification"):
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


def _split(y: np.ndarray, fraction: float, rng: np.random.Generator, stratify: bool
           ) -> tuple[np.ndarray, np.ndarray]:
    return stratified_split(y, fraction, rng) if stratify else random_split(len(y), fraction, rng)


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


# ------------------------------------------------------------------------------- IDX
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}  # fmt: skip


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzip-compressed or not (told by its magic bytes)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    if ndim < 1 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    count = int(np.prod(shape))
    body = raw[4 + 4 * ndim :]
    if len(body) != count * dtype.itemsize:
        raise DataError(
            f"{path}: IDX header says shape {shape} ({count * dtype.itemsize} bytes) "
            f"but the file has {len(body)} data bytes"
        )
    return (
        np.frombuffer(body, dtype=dtype).astype(dtype.newbyteorder("="), copy=False).reshape(shape)
    )


def _fashion_dirs(data_dir: str | None) -> list[Path]:
    """Folders to look in, in order: ``data_dir``, $NASFORGE_DATA_DIR, the Debian location."""
    dirs: list[Path] = []
    for d in (data_dir, os.environ.get("NASFORGE_DATA_DIR"), FASHION_MNIST_SYSTEM_DIR):
        if d:
            dirs += [Path(d), Path(d) / "fashion-mnist"]
    return dirs


def _fashion_files(data_dir: str | None) -> dict[str, Path] | None:
    """The four IDX files from the first folder that has all of them (.gz or raw)."""
    for d in _fashion_dirs(data_dir):
        found: dict[str, Path] = {}
        for key, stem in _FASHION_FILES.items():
            for cand in (
                stem + ".gz",
                stem,
                stem.replace("-idx", ".idx") + ".gz",
                stem.replace("-idx", ".idx"),
            ):
                if (d / cand).is_file():
                    found[key] = d / cand
                    break
        if len(found) == len(_FASHION_FILES):
            return found
    return None


def fashion_mnist_available(data_dir: str | None = None) -> bool:
    """Whether the four Fashion-MNIST IDX files can be found (see :func:`load_dataset`)."""
    return _fashion_files(data_dir) is not None


def _load_fashion(data_dir: str | None, **kw: object) -> Dataset:
    files = _fashion_files(data_dir)
    if files is None:
        looked = ", ".join(str(d) for d in _fashion_dirs(data_dir)[::2])
        raise DataError(
            "Fashion-MNIST not found (looked in: "
            f"{looked}). Install it with `apt-get install -y dataset-fashion-mnist`, or point "
            "--data-dir / NASFORGE_DATA_DIR at a folder with the four IDX files "
            "(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
            "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; .gz optional)."
        )
    arr = {k: read_idx(p) for k, p in files.items()}
    for part in ("train", "test"):
        xs, ys = arr[f"x_{part}"], arr[f"y_{part}"]
        if xs.ndim != 3 or ys.ndim != 1:
            raise DataError(
                f"Fashion-MNIST {part} files have shapes {xs.shape} / {ys.shape}: "
                "expected (N, 28, 28) images and (N,) labels"
            )
    return _finish(
        "fashion-mnist", arr["x_train"], arr["y_train"], arr["x_test"], arr["y_test"],
        FASHION_MNIST_CLASSES if int(arr["y_train"].max()) < 10 else None, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _load_digits(**kw: object) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    return _finish("digits", x, d.target, None, None, [str(i) for i in range(10)], **kw)  # type: ignore[arg-type]


# ----------------------------------------------------------------------- image folders
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}
#: single-channel modes deeper than 8 bits
_DEEP_MODES = {"I", "I;16", "I;16B", "I;16L", "F"}
#: the largest image (pixels) nasforge decodes: a "decompression bomb" is refused before
#: its pixels are allocated (a 30000 x 30000 PNG is a few kB on disk and 900 MB decoded)
MAX_IMAGE_PIXELS = 40_000_000


#: the largest .npy array ``nasforge predict`` reads
MAX_NPY_BYTES = 1 << 30


def read_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """A ``.npy`` file of images, its header checked before any data is read: the shape
    must fit the file's size and :data:`MAX_NPY_BYTES`, no pickles, at least 2-d."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version in ((2, 0), (3, 0)):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise DataError(f"{p}: unsupported .npy version {version}")
            offset = f.tell()
            if dtype.hasobject:
                raise DataError(f"{p}: holds Python objects (a pickle, never loaded); only "
                                "numeric arrays are read")
            n = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if n > MAX_NPY_BYTES or n > size - offset:
                raise DataError(
                    f"{p}: its header claims shape {shape} ({n:,} bytes) but the file has "
                    f"{size - offset:,} bytes of data (at most {MAX_NPY_BYTES:,} are read)")
            if len(shape) < 2:
                raise DataError(f"{p}: an array of shape {shape} is not images; expected "
                                "(H, W), (N, H, W), (N, H, W, C) or (N, C, H, W)")
            arr = np.fromfile(f, dtype=dtype, count=int(np.prod(shape)))
    except DataError:
        raise
    except (OSError, ValueError, TypeError) as e:
        raise DataError(f"cannot read {p}: {e}") from None
    return arr.reshape(shape, order="F" if fortran else "C")


def image_too_large(im: Any) -> bool:
    """Whether a PIL image (opened, not yet decoded) is over :data:`MAX_IMAGE_PIXELS`."""
    return int(im.width) * int(im.height) > MAX_IMAGE_PIXELS


def to_8bit(im: Any, gray: bool) -> Any:
    """A PIL image as 8-bit ``L`` (``gray``) or ``RGB``: the one conversion training and
    ``predict`` share. 16-bit images are scaled by 65535 (PIL's own ``convert("L")``
    clips them at 255, turning nearly every pixel white); 32-bit integer and float images
    by 255 or 65535 when their values go past 255 (float images within [0, 1] as they
    are)."""
    from PIL import Image

    if im.mode in _DEEP_MODES:
        a = np.asarray(im, dtype=np.float64)
        top = float(a.max()) if a.size else 0.0
        if im.mode.startswith("I;16"):
            scale = 65535.0
        elif im.mode == "F" and top <= 1.0:
            scale = 1.0
        else:
            scale = 65535.0 if top > 255.0 else 255.0
        a = np.nan_to_num(a, nan=0.0, posinf=scale, neginf=0.0)
        im = Image.fromarray(np.clip(np.rint(a / scale * 255.0), 0, 255).astype(np.uint8), "L")
    return im.convert("L" if gray else "RGB")


def _image_exts() -> set[str]:
    from PIL import Image

    return {e.lower() for e in Image.registered_extensions()}


def _load_folder(root: Path, *, image_size: int | None, **kw: object) -> Dataset:
    """One sub-folder per class; every image converted to one size and 1 or 3 channels."""
    from PIL import Image, UnidentifiedImageError

    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(
            f"{root}: no class folders; an image folder needs one sub-folder per class "
            "(e.g. cats/*.png, dogs/*.png)"
        )
    exts = _image_exts()
    files: list[tuple[Path, int]] = []
    for ci, d in enumerate(class_dirs):
        imgs = sorted(
            p for p in d.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in exts
        )  # fmt: skip
        if not imgs:
            raise DataError(
                f"class folder {d} has no images (looked for {', '.join(sorted(exts)[:8])}, ...)"
            )
        files += [(p, ci) for p in imgs]
    if len(class_dirs) < 2:
        raise DataError(
            f"{root}: only one class folder ({class_dirs[0].name}); classification needs >= 2"
        )
    sizes: Counter[tuple[int, int]] = Counter()
    gray = True
    kept: list[tuple[Path, int]] = []
    too_large: list[Path] = []
    for p, ci in files:
        try:
            with Image.open(p) as im:
                if image_too_large(im):
                    too_large.append(p)
                    continue
                sizes[(im.height, im.width)] += 1
                gray &= im.mode in _GRAY_MODES
        except Image.DecompressionBombError:
            too_large.append(p)
            continue
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise DataError(f"cannot read image {p}: {e}") from None
        kept.append((p, ci))
    if too_large:  # skipped, counted and said, never decoded
        import warnings

        warnings.warn(
            f"{root}: skipped {len(too_large)} image(s) over {MAX_IMAGE_PIXELS:,} pixels "
            f"(e.g. {too_large[0]})", stacklevel=2)
        files = kept
        left = {ci for _, ci in files}
        if len(left) < len(class_dirs):
            empty = [d.name for i, d in enumerate(class_dirs) if i not in left]
            raise DataError(f"{root}: class folder(s) {empty} have no image of a usable size "
                            f"(at most {MAX_IMAGE_PIXELS:,} pixels)")
    hw = (image_size, image_size) if image_size else sizes.most_common(1)[0][0]
    _check_size(hw, str(root))
    x = np.empty((len(files), hw[0], hw[1], 1 if gray else 3), dtype=np.uint8)
    for i, (p, _) in enumerate(files):
        try:
            with Image.open(p) as im:
                im = to_8bit(im, gray)
                if (im.height, im.width) != hw:
                    im = im.resize((hw[1], hw[0]), Image.Resampling.BILINEAR)
                x[i] = np.asarray(im, dtype=np.uint8).reshape(hw[0], hw[1], -1)
        except (OSError, UnidentifiedImageError, ValueError) as e:
            raise DataError(f"cannot read image {p}: {e}") from None
    y = np.array([c for _, c in files], dtype=np.int64)
    return _finish(root.name or str(root), x, y, None, None, [d.name for d in class_dirs], **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ entry
def load_dataset(
    name_or_path: str,
    *,
    data_dir: str | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    image_size: int | None = None,
    max_train: int | None = None,
    task: str | None = None,
    task_options: dict[str, Any] | None = None,
) -> Dataset:
    """Load a built-in data set by name or an image folder by path.

    Names: ``digits`` (scikit-learn's 8x8 digits, 20 % held out as test),
    ``fashion-mnist`` (IDX files from ``data_dir``, $NASFORGE_DATA_DIR or
    /usr/share/datasets/fashion-mnist), ``auto`` (Fashion-MNIST if found, else digits).
    Any existing directory is read as an image folder with one sub-folder per class.
    ``image_size`` resizes to a square; ``max_train`` caps the train+validation pool
    (stratified) for quick runs; the validation split is ``val_fraction`` of that pool.
    ``task="regression"`` reads numeric class names as the targets (digits: the digit as a
    number; a folder with sub-folders ``0.5/``, ``1.0/`` ...); the default is classification.
    """
    kw = dict(val_fraction=val_fraction, seed=seed, image_size=image_size, max_train=max_train,
              task=task or "classification", task_options=task_options)
    key = _ALIASES.get(name_or_path.strip().lower(), name_or_path.strip().lower())
    if key == "auto":
        key = "fashion-mnist" if fashion_mnist_available(data_dir) else "digits"
    if key == "digits":
        return _load_digits(**kw)
    if key == "fashion-mnist":
        return _load_fashion(data_dir, **kw)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _load_folder(path, **kw)  # type: ignore[arg-type]
    if path.exists():
        raise DataError(
            f"{name_or_path!r} is a file, not a data set: give one of {', '.join(_NAMES)} "
            "or a directory with one sub-folder of images per class"
        )
    raise DataError(
        f"unknown data set {name_or_path!r}: valid names are {', '.join(_NAMES)}, "
        "or give the path of a directory with one sub-folder of images per class"
    )
