"""Image folders (one sub-folder per class) and the image / ``.npy`` readers that
``nasforge predict`` shares, with their size limits checked before decoding."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from nasforge.data.arrays import _check_size, _finish
from nasforge.data.dataset import Dataset
from nasforge.errors import DataError

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
