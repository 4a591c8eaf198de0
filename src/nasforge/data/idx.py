"""IDX files (the MNIST format) and Fashion-MNIST, found in a folder, the environment
or where Debian's package puts it."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np

from nasforge.data.arrays import _finish
from nasforge.data.dataset import Dataset
from nasforge.errors import DataError

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
