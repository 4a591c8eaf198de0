"""Segmentation class maps from COCO instances JSON (``--task segmentation`` with a
``data.yaml`` split entry such as ``train: annotations/train.json``).

Every annotation's ``segmentation`` is one of COCO's three forms: polygons (a list of
``[x0, y0, x1, y1, ...]`` in pixels; a single flat list is read as one polygon),
uncompressed RLE (``{"size": [h, w], "counts": [n0, n1, ...]}``, what ``iscrowd``
annotations carry) or compressed RLE (``counts`` a string, as ``pycocotools.mask.encode``
writes it). They are rasterized by pycocotools' ``mask`` API (``frPyObjects``, ``merge``,
``decode``), the reference COCO itself is evaluated with, not by nasforge.

An image's class map is 0 (background) where no annotation is, ``k + 1`` where an
annotation of class ``k`` is. **Where annotations overlap, the smaller one wins** (its
mask's pixel count; equal areas: the later annotation in the file): a small object on a
large one (a cup on a table, a person in front of a crowd region) stays visible instead
of vanishing under the larger mask, whatever order the file lists them in. Crowd
annotations are painted as their class like any other (they are usually large, so the
single instances they hold win over them). An image without annotations is all
background (a valid negative).

Refused, in one line naming the JSON file, the annotation's index and id: an annotation
without a ``segmentation`` (a bounding box is not a mask), a polygon with fewer than 3
points, an odd number of coordinates or coordinates outside its image, an RLE whose
``size`` is not its image's ``[height, width]`` or whose runs do not add up to its
pixels. The maps are made at the JSON's image size and then letterboxed exactly like a
``masks/`` PNG (:func:`nasforge.data.detection.letterbox`, nearest neighbour, 255 in the
padding); an image file whose size differs from its JSON entry is refused too.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nasforge.data.detection import COORD_TOLERANCE, IGNORE, coco_category, coco_head
from nasforge.errors import DataError

INSTALL = "pip install 'nasforge[segmentation]' (pycocotools)"


@dataclass(frozen=True)
class CocoAnnotation:
    """One checked annotation: where it is (for messages), its class and its mask as
    given (polygons: a list of coordinate lists; RLE: a dict)."""

    where: str
    cls: int
    segmentation: Any


@dataclass(frozen=True)
class CocoMaskImage:
    """One image of a COCO file under the segmentation task: its size in the JSON and
    its annotations in file order."""

    where: str  # "file.json: images[k] 'name.jpg'"
    width: int
    height: int
    annotations: tuple[CocoAnnotation, ...]


def _rle_runs(counts: str) -> list[int]:
    """The run lengths of COCO's compressed RLE string (the inverse of pycocotools'
    ``rleToString``), only to check them before pycocotools decodes: its decoder does
    not check that they cover the image exactly."""
    runs: list[int] = []
    data = counts.encode("ascii")
    p = 0
    while p < len(data):
        x, k, more = 0, 0, True
        while more:
            if p >= len(data):
                raise ValueError("the string ends inside a number")
            c = data[p] - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {chr(data[p])!r} is not of COCO's RLE alphabet")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


def _check_segmentation(seg: Any, w: int, h: int, where: str) -> Any:
    """``seg`` in the form :func:`class_map` rasterizes, or a DataError at ``where``."""
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and
                all(isinstance(v, int) and not isinstance(v, bool) for v in size)):
            raise DataError(f"{where}: an RLE needs 'size' [height, width], got {size!r}")
        if size != [h, w]:
            raise DataError(f"{where}: the RLE's size {size} (height, width) does not match "
                            f"its {w} x {h} image ([{h}, {w}])")
        if isinstance(counts, list):
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                       for v in counts):
                raise DataError(f"{where}: the RLE's counts must be non-negative integers")
            runs = counts
        elif isinstance(counts, str):
            try:
                runs = _rle_runs(counts)
            except (ValueError, UnicodeEncodeError) as e:
                raise DataError(f"{where}: the RLE's counts string is not COCO's compressed "
                                f"RLE: {e}") from None
            if any(v < 0 for v in runs):
                raise DataError(f"{where}: the RLE's counts string decodes to a negative run")
        else:
            raise DataError(f"{where}: an RLE's 'counts' must be a list of run lengths or a "
                            f"compressed string, got {type(counts).__name__}")
        if sum(runs) != h * w:
            raise DataError(f"{where}: the RLE's runs cover {sum(runs)} pixels, its "
                            f"{w} x {h} image has {h * w}")
        return {"size": [h, w], "counts": counts}
    if not isinstance(seg, list) or not seg:
        raise DataError(f"{where}: 'segmentation' must be polygons [[x0, y0, x1, y1, ...], "
                        f"...] or an RLE {{'size', 'counts'}}, got {str(seg)[:60]}")
    polys = [seg] if not isinstance(seg[0], list) else seg
    lo_x, hi_x = -COORD_TOLERANCE * w, (1 + COORD_TOLERANCE) * w
    lo_y, hi_y = -COORD_TOLERANCE * h, (1 + COORD_TOLERANCE) * h
    out = []
    for j, poly in enumerate(polys):
        if not isinstance(poly, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                for v in poly):
            raise DataError(f"{where}: polygon {j} must be a list of finite numbers "
                            "[x0, y0, x1, y1, ...]")
        if len(poly) % 2:
            raise DataError(f"{where}: polygon {j} has an odd number of coordinates "
                            f"({len(poly)}): it must be x, y pairs")
        if len(poly) < 6:
            raise DataError(f"{where}: polygon {j} has {len(poly) // 2} point(s): a polygon "
                            "needs at least 3")
        xs, ys = poly[0::2], poly[1::2]
        if min(xs) < lo_x or max(xs) > hi_x or min(ys) < lo_y or max(ys) > hi_y:
            raise DataError(f"{where}: polygon {j} reaches ({min(xs):g}, {min(ys):g}) - "
                            f"({max(xs):g}, {max(ys):g}), outside its {w} x {h} image "
                            "(COCO polygons are in pixels)")
        out.append([float(v) for v in poly])
    return out


def read_coco_masks(path: Path, root: Path, split: str, names: list[str] | None
                    ) -> tuple[list[str], list[Path], dict[Path, CocoMaskImage]]:
    """A COCO instances file read for segmentation: the class names, the images it lists
    and, per image, its checked annotations (rasterized later, one image at a time, by
    :func:`class_map`). Images are found and categories named as
    :func:`nasforge.data.detection.read_coco` does; crowd annotations are kept (their RLE
    is a mask like any other)."""
    doc, names, index, images = coco_head(path, root, split, names)
    if len(names) >= IGNORE:
        raise DataError(f"{path}: {len(names)} categories: a segmentation class map holds "
                        f"at most {IGNORE - 1} classes (0 is background, {IGNORE} ignored)")
    anns: dict[int, list[CocoAnnotation]] = {iid: [] for iid in images}
    for k, a in enumerate(doc["annotations"]):
        if not isinstance(a, dict):
            raise DataError(f"{path}: annotations[{k}] is not an object")
        where = f"{path}: annotations[{k}] (id {a.get('id')})"
        (_, w, h, _), cls = coco_category(a, where, images, index, len(names))
        seg = a.get("segmentation")
        if seg is None or seg == [] or seg == {}:
            raise DataError(f"{where} has no mask ('segmentation' polygons or RLE): the "
                            "segmentation task does not train on bounding boxes")
        anns[int(a["image_id"])].append(
            CocoAnnotation(where, cls, _check_segmentation(seg, w, h, where)))
    out = {f: CocoMaskImage(f"{path}: images[{k}] {f.name!r}", w, h, tuple(anns[iid]))
           for iid, (f, w, h, k) in images.items()}
    return names, list(out), out


def class_map(image: CocoMaskImage) -> np.ndarray:
    """The ``(height, width)`` uint8 class map of one image (0 background, ``k + 1``
    class ``k``; smaller annotations over larger ones, see the module's docstring)."""
    try:
        from pycocotools import mask as coco_mask
    except ImportError:
        raise DataError(f"COCO masks need pycocotools: {INSTALL}") from None
    h, w = image.height, image.width
    out = np.zeros((h, w), np.uint8)
    masks: list[tuple[int, int, np.ndarray, int]] = []  # (-area, order, mask, class)
    for i, a in enumerate(image.annotations):
        seg = a.segmentation
        try:
            if isinstance(seg, list):  # polygons: one RLE each, their union
                rle = coco_mask.merge(coco_mask.frPyObjects(seg, h, w))
            elif isinstance(seg["counts"], list):
                rle = coco_mask.frPyObjects(seg, h, w)
            else:
                rle = {"size": [h, w], "counts": seg["counts"].encode("ascii")}
            with warnings.catch_warnings():  # pycocotools' Cython vs numpy 2's copy=
                warnings.filterwarnings("ignore", "__array__ implementation",
                                        DeprecationWarning)
                m = coco_mask.decode(rle)
        except (ValueError, TypeError) as e:  # checked before: pycocotools refused it
            raise DataError(f"{a.where}: pycocotools cannot rasterize it: {e}") from None
        masks.append((-int(coco_mask.area(rle)), i, m.astype(bool), a.cls))
    for _, _, m, cls in sorted(masks, key=lambda t: (t[0], t[1])):
        out[m] = cls + 1  # largest first: each smaller (or later) one paints over it
    return out
