"""Datasets: digits, Fashion-MNIST (IDX files), numpy arrays, image folders.

Every loader ends in the same place (:func:`_finish`): images scaled to [0, 1] as
float32 (N, C, H, W), a stratified, seeded validation split held out from the training
data (what the search sees), a test split kept apart for the final report, and
per-channel normalization with statistics of the training split only, so no
information leaks from validation or test data into training.

The loaders live in sub-modules (:mod:`~nasforge.data.dataset` splits,
:mod:`~nasforge.data.arrays` arrays and :func:`_finish`, :mod:`~nasforge.data.idx`
IDX / Fashion-MNIST, :mod:`~nasforge.data.folder` image folders); every name is
re-exported here, so ``nasforge.data.X`` keeps working. A module-level setting is read
where it is defined: patch ``nasforge.data.idx.FASHION_MNIST_SYSTEM_DIR``, not the copy
here.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from nasforge.data.arrays import (
    MIN_SIZE,
    TEST_FRACTION,
    from_arrays,
)
from nasforge.data.arrays import _check_size as _check_size
from nasforge.data.arrays import _finish as _finish
from nasforge.data.arrays import _labels as _labels
from nasforge.data.arrays import _numeric_targets as _numeric_targets
from nasforge.data.arrays import _resize as _resize
from nasforge.data.arrays import _task_name as _task_name
from nasforge.data.arrays import _to_nchw as _to_nchw
from nasforge.data.arrays import _to_unit as _to_unit
from nasforge.data.dataset import (
    Dataset,
    random_split,
    stratified_split,
    stratified_subset,
    subset_indices,
)
from nasforge.data.dataset import _limit as _limit
from nasforge.data.dataset import _split as _split
from nasforge.data.folder import _DEEP_MODES as _DEEP_MODES
from nasforge.data.folder import _GRAY_MODES as _GRAY_MODES
from nasforge.data.folder import (
    MAX_IMAGE_PIXELS,
    MAX_NPY_BYTES,
    image_too_large,
    read_npy,
    to_8bit,
)
from nasforge.data.folder import _image_exts as _image_exts
from nasforge.data.folder import _load_folder as _load_folder
from nasforge.data.idx import _FASHION_FILES as _FASHION_FILES
from nasforge.data.idx import _IDX_DTYPES as _IDX_DTYPES
from nasforge.data.idx import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_SYSTEM_DIR,
    fashion_mnist_available,
    read_idx,
)
from nasforge.data.idx import _fashion_dirs as _fashion_dirs
from nasforge.data.idx import _fashion_files as _fashion_files
from nasforge.data.idx import _load_fashion as _load_fashion
from nasforge.data.tabular import from_dataframe
from nasforge.errors import DataError

__all__ = [
    "FASHION_MNIST_CLASSES", "FASHION_MNIST_SYSTEM_DIR", "MAX_IMAGE_PIXELS", "MAX_NPY_BYTES",
    "MIN_SIZE", "TEST_FRACTION", "Dataset", "dataset_names", "default_augment",
    "fashion_mnist_available", "from_arrays", "from_dataframe", "image_too_large",
    "input_kind_of", "load_dataset",
    "random_split", "read_idx", "read_npy", "stratified_split", "stratified_subset",
    "subset_indices", "to_8bit",
]  # fmt: skip

_NAMES = ["auto", "digits", "fashion-mnist"]
_ALIASES = {
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
}


#: a mirror keeps the class when nearest-centroid accuracy (above chance) on mirrored
#: validation images is at least this share of that on the originals; measured: digits
#: 0.36, Fashion-MNIST 0.81 (shoes face one way), a 5-class garment folder 0.96
MIRROR_KEEPS = 0.75


def mirror_score(data: Dataset) -> float | None:
    """How well class centroids learnt from the training images recognize the
    *mirrored* validation images, as a share of how well they recognize the originals
    (each above chance): near 1 when a mirror keeps the class, far lower when it makes
    another one (a 2 or a 3). No model is trained: class means and one distance pass,
    milliseconds. None where it cannot say (not images, too few examples, a
    centroid no better than chance)."""
    x, y = data.x_train, data.y_train
    if (data.task != "classification" or getattr(x, "ndim", 0) != 4
            or x.shape[-1] < 2 or len(y) < 20):
        return None
    k = int(data.num_classes)
    xv, yv = data.x_val, data.y_val
    if xv is None or len(yv) < 5 * k:  # too few validation images: hold out a fifth
        order = np.random.default_rng(0).permutation(len(y))  # (a folder is sorted by class)
        hold, keep = order[: len(y) // 5], order[len(y) // 5:]
        x, xv, y, yv = x[keep], x[hold], y[keep], y[hold]
    rng = np.random.default_rng(1)  # caps drawn at random: stored order may be by class
    pick = np.sort(rng.permutation(len(y))[:20000])
    pick_v = np.sort(rng.permutation(len(yv))[:5000])
    x, y = np.asarray(x[pick], np.float32), np.asarray(y[pick])
    xv, yv = np.asarray(xv[pick_v], np.float32), np.asarray(yv[pick_v])
    present = [c for c in range(k) if (y == c).any()]
    cent = np.stack([x[y == c].reshape((y == c).sum(), -1).mean(0) for c in present])
    labels = np.asarray(present)
    c2 = (cent ** 2).sum(1)

    def acc(z: np.ndarray) -> float:
        z = z.reshape(len(z), -1)
        return float((labels[np.argmin(c2[None] - 2.0 * z @ cent.T, 1)] == yv).mean())

    chance = 1.0 / max(1, len(present))
    plain = acc(xv) - chance
    if plain <= 0.05:
        return None
    return (acc(xv[..., ::-1]) - chance) / plain


@functools.lru_cache(maxsize=4)
def _folder_mirror_score(path: str, mtime_ns: int) -> float | None:
    """The mirror score of an image folder, read once per process (and per change)."""
    del mtime_ns  # part of the cache key only
    try:
        return mirror_score(load_dataset(path, val_fraction=0.1, seed=0))
    except (DataError, OSError, ValueError):
        return None  # loading reports its own error where the job loads it


def default_augment(dataset: object) -> str:
    """The augmentation a time-budgeted job trains with when none is given: horizontal
    flips for Fashion-MNIST (clothes are mirror-symmetric; measured to help), none for
    digits (a flipped digit is another symbol), and for other images (an image folder,
    arrays) what :func:`mirror_score` measures: flips where a mirror keeps the class
    (score >= ``MIRROR_KEEPS``), none otherwise. Give ``augment`` to decide yourself."""
    name = getattr(dataset, "name", dataset)
    if not isinstance(name, str) or getattr(dataset, "task", "classification") != \
            "classification":  # a mirror may change a regression target
        return "none"
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key == "auto":
        key = "fashion-mnist" if fashion_mnist_available() else "digits"
    if key in _NAMES:
        return "flip" if key == "fashion-mnist" else "none"
    if isinstance(dataset, Dataset):
        score = mirror_score(dataset) if dataset.input_kind == "image" else None
    else:
        from nasforge.data.detection import is_yolo_layout

        path = Path(name).expanduser()
        if not path.is_dir() or is_yolo_layout(path):
            return "none"
        score = _folder_mirror_score(str(path.resolve()), path.stat().st_mtime_ns)
    return "flip" if score is not None and score >= MIRROR_KEEPS else "none"


def input_kind_of(dataset: object) -> str:
    """The input kind of ``dataset`` (a :class:`Dataset`, a name or a path) without
    loading it, so a search can choose its default space first (see
    :func:`nasforge.spaces.default_for`). A DataFrame or a ``.csv``/``.tsv``/``.parquet``
    path is ``"tabular"``, a ``text:`` name ``"text"``; every built-in name and image
    folder is ``"image"``."""
    from nasforge.data.tabular import is_dataframe, is_table_path

    if isinstance(dataset, Dataset):
        return dataset.input_kind
    from nasforge.data.sequences import is_sequence_source
    from nasforge.data.text import is_text_source

    if is_text_source(dataset):  # text:FILE.csv, text:DIR
        return "text"

    if is_sequence_source(dataset):  # aeon:NAME, series:FILE, .ts, 3-d .npy/.npz
        return "sequence"
    if is_dataframe(dataset) or is_table_path(dataset):
        return "tabular"
    return "image"


def dataset_names() -> list[str]:
    """Built-in dataset names accepted by :func:`load_dataset` (besides a folder path)."""
    return list(_NAMES)


def _load_digits(**kw: object) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    return _finish("digits", x, d.target, None, None, [str(i) for i in range(10)], **kw)  # type: ignore[arg-type]


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
    target: str | list[str] | None = None,
    verbose: bool = True,
    text_options: dict[str, Any] | None = None,
) -> Dataset:
    """Load a built-in data set by name, an image folder or a table file by path.

    Names: ``digits`` (scikit-learn's 8x8 digits, 20 % held out as test),
    ``fashion-mnist`` (IDX files from ``data_dir``, $NASFORGE_DATA_DIR or
    /usr/share/datasets/fashion-mnist), ``auto`` (Fashion-MNIST if found, else digits).
    Any existing directory is read as an image folder with one sub-folder per class.
    ``image_size`` resizes to a square; ``max_train`` caps the train+validation pool
    (stratified) for quick runs; the validation split is ``val_fraction`` of that pool.
    ``task="regression"`` reads numeric class names as the targets (digits: the digit as a
    number; a folder with sub-folders ``0.5/``, ``1.0/`` ...); the default is classification.
    A ``.csv``/``.tsv``/``.parquet`` file is a table (:mod:`nasforge.data.tabular`):
    ``target`` names the column(s) to predict, ``task`` None infers it from them.
    ``text:FILE.csv`` / ``text:DIR`` is text (:mod:`nasforge.data.text`): ``target`` the
    label column, ``text_options`` ``text_column``, ``vocab_size``, ``max_length``.
    """
    from nasforge.data.sequences import is_sequence_source, load_sequences
    from nasforge.data.tabular import is_table_path, load_table

    kw = dict(val_fraction=val_fraction, seed=seed, image_size=image_size, max_train=max_train,
              task=task or "classification", task_options=task_options)
    # text and series first: "text:FILE.csv" and "series:FILE.csv" are not tables
    from nasforge.data.text import is_text_source, load_text

    if is_text_source(name_or_path):  # see nasforge.data.text
        return load_text(name_or_path, target, **{**kw, "task": task, **(text_options or {}),
                                                  "verbose": verbose})
    if is_sequence_source(name_or_path) and target is None:  # see nasforge.data.sequences
        return load_sequences(name_or_path, **{**kw, "task": task})  # type: ignore[arg-type]
    if is_table_path(name_or_path):
        if image_size is not None:
            raise DataError("image_size applies to images, not to a table")
        return load_table(name_or_path, target, task=task, val_fraction=val_fraction,
                          seed=seed, max_train=max_train, task_options=task_options,
                          verbose=verbose)
    if target is not None:
        raise DataError(f"target names a column of a table; {name_or_path!r} is not a "
                        ".csv/.tsv/.parquet file")
    from nasforge.data.detection import (
        SPATIAL_TASKS,
        generated_scenes,
        is_yolo_layout,
        load_detection,
    )

    key = _ALIASES.get(name_or_path.strip().lower(), name_or_path.strip().lower())
    if key == "auto" and task in SPATIAL_TASKS:  # no data given: generated scenes
        name_or_path = str(generated_scenes(task, verbose=verbose))
    if is_yolo_layout(name_or_path):  # data.yaml, or a folder holding one
        if task not in (None, *SPATIAL_TASKS):
            raise DataError(f"{name_or_path} is a detection/segmentation data set (the YOLO "
                            f"layout), not for task {task!r}")
        return load_detection(name_or_path, task=task,
                              image_size=image_size, val_fraction=val_fraction, seed=seed,
                              max_train=max_train, verbose=verbose,
                              task_options=task_options)
    if task in SPATIAL_TASKS:
        raise DataError(f"task {task!r} reads the YOLO layout: give --dataset "
                        f"path/to/data.yaml (or its folder), or no data set for generated "
                        f"scenes; {name_or_path!r} is not one")
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
