"""Detection and segmentation data in the YOLO layout Ultralytics users already have.

``data.yaml`` (``path``, ``train``/``val``/``test`` image folders or ``.txt`` lists, or
COCO instances ``.json`` files (:func:`read_coco`; ``names`` then defaults to their
categories), ``names`` as a list or ``{id: name}``), images under ``.../images/...`` and
one label file per image under the matching ``.../labels/...`` with a line
``class cx cy w h`` per object (normalized to the image; YOLO's polygon lines
``class x1 y1 x2 y2 ...`` are read as their bounding box). Segmentation adds one PNG mask
per image under ``.../masks/...``: 0 is background, ``k + 1`` is class ``k`` of
``names``, 255 is ignored; a COCO JSON split's masks come from its annotations'
``segmentation`` polygons or RLE instead (:mod:`nasforge.data.coco_masks`).

Images are letterboxed to a square (aspect kept, grey padding, as YOLO does), so
targets come as arrays the rest of nasforge handles: detection ``y`` is ``(N, M, 5)``
float32 rows ``class, x0, y0, x1, y1`` normalized to the letterboxed square, padded with
class -1 to the most objects of any image; segmentation ``y`` is ``(N, S, S)`` int64
class maps, 255 in the padding. Bad labels stop the load with the file and line (a
silent skip would train on wrong boxes); an image with no label file, or an empty one,
is a valid negative and is counted.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nasforge.data.dataset import Dataset, random_split
from nasforge.errors import DataError

if TYPE_CHECKING:
    from nasforge.data.coco_masks import CocoMaskImage

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: a coordinate may exceed [0, 1] by this much (rounding in label tools) and is clipped
COORD_TOLERANCE = 0.01
IGNORE = 255
PAD_VALUE = 114 / 255  # YOLO's letterbox grey
#: the tasks that read this layout
SPATIAL_TASKS = ("detection", "segmentation")
MAX_OBJECTS = 1000  # per image: more is a broken label file, not a scene


@dataclass(frozen=True)
class Box:
    """One labelled object: class id and normalized xyxy corners in [0, 1]."""

    cls: int
    x0: float
    y0: float
    x1: float
    y1: float


def parse_label_line(line: str, n_classes: int, where: str) -> Box | None:
    """One line of a YOLO label file (None for a blank line or a ``#`` comment).

    ``where`` (``file:line``) starts every error message, so the user can open the line.
    """
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    parts = text.split()
    if len(parts) != 5 and not (len(parts) >= 7 and len(parts) % 2 == 1):
        raise DataError(f"{where}: expected 5 fields 'class cx cy w h' (or a polygon "
                        f"'class x1 y1 x2 y2 x3 y3 ...'), got {len(parts)}: {text[:80]!r}")
    try:
        cls_f = float(parts[0])
        vals = [float(p) for p in parts[1:]]
    except ValueError:
        raise DataError(f"{where}: fields must be numbers, got {text[:80]!r}") from None
    if not math.isfinite(cls_f) or cls_f != int(cls_f):
        raise DataError(f"{where}: the class id must be an integer, got {parts[0]!r}")
    cls = int(cls_f)
    if not 0 <= cls < n_classes:
        raise DataError(f"{where}: class id {cls} is out of range: data.yaml names "
                        f"{n_classes} class(es), ids 0-{n_classes - 1}")
    if not all(math.isfinite(v) for v in vals):
        raise DataError(f"{where}: coordinates must be finite numbers, got {text[:80]!r}")
    lo, hi = -COORD_TOLERANCE, 1 + COORD_TOLERANCE
    if len(vals) == 4:
        cx, cy, w, h = vals
        if w <= 0 or h <= 0:
            raise DataError(f"{where}: the box's width and height must be positive, "
                            f"got w={w:g} h={h:g}")
        x0, y0, x1, y1 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    else:
        xs, ys = vals[0::2], vals[1::2]
        x0, y0, x1, y1 = min(xs), min(ys), max(xs), max(ys)
        if x1 <= x0 or y1 <= y0:
            raise DataError(f"{where}: the polygon has no area")
    if not (lo <= x0 and lo <= y0 and x1 <= hi and y1 <= hi):
        raise DataError(
            f"{where}: the box ({x0:.3f}, {y0:.3f}) - ({x1:.3f}, {y1:.3f}) lies outside the "
            "image: YOLO labels are 'class cx cy w h' normalized to [0, 1] by the image's "
            "width and height (pixel coordinates?)")
    c = lambda v: min(1.0, max(0.0, v))  # noqa: E731 - within the tolerance
    return Box(cls, c(x0), c(y0), c(x1), c(y1))


def read_label_file(path: Path, n_classes: int) -> list[Box]:
    """Every object of one label file (an empty list for an empty file)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text file (YOLO labels are lines of numbers)") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    boxes = []
    for i, line in enumerate(text.splitlines(), 1):
        b = parse_label_line(line, n_classes, f"{path}:{i}")
        if b is not None:
            boxes.append(b)
            if len(boxes) > MAX_OBJECTS:
                raise DataError(f"{path}: more than {MAX_OBJECTS} objects in one image")
    return boxes


# -- data.yaml -------------------------------------------------------------------------


@dataclass
class Layout:
    """A parsed ``data.yaml``: class names and each split's image files."""

    root: Path
    names: list[str]
    splits: dict[str, list[Path]]  # "train", "val", "test" (those given)
    masks: bool
    #: boxes per image of the splits given as COCO JSON files (else from label files)
    coco: dict[Path, list[Box]] | None = None
    #: for segmentation, the masks per image of the COCO splits instead (else PNG masks)
    coco_masks: dict[Path, CocoMaskImage] | None = None


def _names(doc: dict[str, Any], where: Path) -> list[str]:
    names = doc.get("names")
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise DataError(f"{where}: 'names' keys must be class ids 0, 1, ...") from None
        if keys != list(range(len(keys))):
            raise DataError(f"{where}: 'names' must number the classes 0-{len(keys) - 1} "
                            f"without gaps, got ids {keys[:10]}")
        out = [str(names[k] if k in names else names[str(k)]) for k in keys]
    elif isinstance(names, list):
        out = [str(n) for n in names]
    elif names is None and isinstance(doc.get("nc"), int) and doc["nc"] > 0:
        out = [f"class {i}" for i in range(doc["nc"])]
    else:
        raise DataError(f"{where}: needs 'names' (a list, or {{0: name, ...}}) naming the classes")
    if not out:
        raise DataError(f"{where}: 'names' is empty: name at least one class")
    if isinstance(doc.get("nc"), int) and doc["nc"] != len(out):
        raise DataError(f"{where}: nc is {doc['nc']} but 'names' lists {len(out)} classes")
    return out


#: one image of a COCO file: its file, width and height in the JSON, ``images[k]``'s k
CocoImage = tuple[Path, int, int, int]


def coco_head(path: Path, root: Path, split: str, names: list[str] | None
              ) -> tuple[dict[str, Any], list[str], dict[int, int], dict[int, CocoImage]]:
    """What every COCO instances file reader needs: the parsed document, the class names
    (its categories, in id order, unless ``names`` is given), category id -> class index
    and image id -> :data:`CocoImage` (``file_name`` found as :func:`read_coco` says)."""
    import json

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path}: not a readable COCO JSON file: {str(e)[:200]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or \
            not isinstance(doc.get("annotations"), list):
        raise DataError(f"{path}: a COCO file needs 'images' and 'annotations' lists")
    cats = doc.get("categories") or []
    try:
        cat_ids = sorted({int(c["id"]): str(c.get("name", c["id"])) for c in cats}.items())
    except (TypeError, KeyError, ValueError):
        raise DataError(f"{path}: every category needs an integer 'id'") from None
    if names is None:
        names = [n for _, n in cat_ids]
        if not names:
            raise DataError(f"{path}: no 'categories': name the classes in data.yaml")
    index = {cid: i for i, (cid, _) in enumerate(cat_ids)}
    dirs = [root / "images" / split, root / "images", root / split, path.parent]
    images: dict[int, CocoImage] = {}
    for k, im in enumerate(doc["images"]):
        try:
            iid, fname = int(im["id"]), str(im["file_name"])
            w, h = int(im["width"]), int(im["height"])
        except (TypeError, KeyError, ValueError):
            raise DataError(f"{path}: images[{k}] needs 'id', 'file_name', 'width' and "
                            "'height'") from None
        f = next((d / fname for d in dirs if (d / fname).is_file()), None)
        if f is None:
            raise DataError(f"{path}: images[{k}] {fname!r} is in none of "
                            f"{', '.join(str(d) for d in dirs)}")
        if w < 1 or h < 1:
            raise DataError(f"{path}: images[{k}] has size {w} x {h}")
        images[iid] = (f, w, h, k)
    return doc, names, index, images


def coco_category(a: dict[str, Any], where: str, images: dict[int, CocoImage],
                  index: dict[int, int], n_names: int) -> tuple[CocoImage, int]:
    """An annotation's image and class index (refused, at ``where``, if unknown)."""
    try:
        iid, cid = int(a["image_id"]), int(a["category_id"])
    except (TypeError, KeyError, ValueError):
        raise DataError(f"{where} needs an integer 'image_id' and 'category_id'") from None
    if iid not in images:
        raise DataError(f"{where}: image_id {iid} is not in 'images'")
    if cid not in index or index[cid] >= n_names:
        raise DataError(f"{where}: category_id {cid} is not one of the "
                        f"{n_names} categories")
    return images[iid], index[cid]


def read_coco(path: Path, root: Path, split: str, names: list[str] | None
              ) -> tuple[list[str], list[Path], dict[Path, list[Box]]]:
    """A COCO instances file: the class names (its categories, in id order, unless
    ``names`` is given), the images it lists and their boxes (normalized xyxy).

    ``file_name`` is found under ``root/images/<split>/``, ``root/images/``, ``root/<split>/``
    or the JSON's own folder, in that order (the layouts COCO exports come in). Crowd
    annotations are skipped (COCO's own evaluation ignores them); a box outside its image,
    an unknown category or a missing image stops the load naming the file and the entry.
    For segmentation the masks are read instead (:func:`nasforge.data.coco_masks.read_coco_masks`).
    """
    doc, names, index, images = coco_head(path, root, split, names)
    boxes: dict[Path, list[Box]] = {im[0]: [] for im in images.values()}
    for k, a in enumerate(doc["annotations"]):
        where = f"{path}: annotations[{k}]"
        if not isinstance(a, dict):
            raise DataError(f"{where} is not an object")
        if a.get("iscrowd"):
            continue
        (f, w, h, _), cls = coco_category(a, where, images, index, len(names))
        try:
            x, y, bw, bh = (float(v) for v in a["bbox"])
        except (TypeError, KeyError, ValueError):
            raise DataError(f"{where} needs 'image_id', 'category_id' and 'bbox' [x, y, w, "
                            "h]") from None
        vals = (x / w, y / h, (x + bw) / w, (y + bh) / h)
        if not all(math.isfinite(v) for v in vals) or bw <= 0 or bh <= 0 or \
                min(vals) < -COORD_TOLERANCE or max(vals) > 1 + COORD_TOLERANCE:
            raise DataError(f"{where}: bbox {[x, y, bw, bh]} is not inside its {w} x {h} "
                            "image")
        x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in vals)
        boxes[f].append(Box(cls, x0, y0, x1, y1))
    return names, list(boxes), boxes


def _images_of(entry: Any, root: Path, where: Path, split: str) -> list[Path]:
    """The image files a split entry names: folders (searched recursively), ``.txt``
    lists of paths, single images, or a list of those."""
    entries = entry if isinstance(entry, list) else [entry]
    out: list[Path] = []
    for e in entries:
        if not isinstance(e, str) or not e.strip():
            raise DataError(f"{where}: '{split}' must be a folder, a .txt list or a list of "
                            f"those, got {e!r}")
        p = Path(e).expanduser()
        p = p if p.is_absolute() else root / p
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES
                          and f.is_file())
        elif p.suffix.lower() == ".txt" and p.is_file():
            for line in p.read_text().splitlines():
                if line.strip():
                    q = Path(line.strip())
                    out.append(q if q.is_absolute() else (p.parent / q))
        elif p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
            out.append(p)
        else:
            raise DataError(f"{where}: the '{split}' entry {e!r} is not there ({p})")
    return out


def read_layout(path: str | os.PathLike[str], task: str | None = None) -> Layout:
    """Parse ``data.yaml`` (or the folder holding it). COCO JSON split entries are read
    for ``task``: boxes for detection, masks (:mod:`nasforge.data.coco_masks`) for
    segmentation; None: segmentation when data.yaml has ``masks``."""
    import yaml

    from nasforge.data.coco_masks import read_coco_masks

    p = Path(path).expanduser()
    yml = p if p.is_file() else next((p / n for n in ("data.yaml", "data.yml")
                                      if (p / n).is_file()), None)
    if yml is None:
        raise DataError(f"{p}: no data.yaml here: a detection data set is a data.yaml with "
                        "'train', 'val' and 'names' (the YOLO layout); make one with "
                        "'nasforge datasets make detection DIR'")
    try:
        doc = yaml.safe_load(yml.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DataError(f"{yml}: not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise DataError(f"{yml}: expected a mapping with 'train', 'val' and 'names'")
    root = Path(str(doc.get("path") or ".")).expanduser()
    root = root if root.is_absolute() else (yml.parent / root)
    if "train" not in doc:
        raise DataError(f"{yml}: needs 'train' (the training images' folder)")
    coco_entries = {k: doc[k] for k in ("train", "val", "test")
                    if isinstance(doc.get(k), str) and doc[k].lower().endswith(".json")}
    names = _names(doc, yml) if doc.get("names") is not None or doc.get("nc") or \
        not coco_entries else None
    splits: dict[str, list[Path]] = {}
    coco: dict[Path, list[Box]] = {}
    coco_masks: dict[Path, CocoMaskImage] = {}
    seg = task == "segmentation" if task else bool(doc.get("masks"))
    for split, entry in coco_entries.items():
        jp = Path(entry).expanduser()
        jp = jp if jp.is_absolute() else root / jp
        if not jp.is_file():
            raise DataError(f"{yml}: the '{split}' entry {entry!r} is not there ({jp})")
        if seg:
            names, splits[split], m = read_coco_masks(jp, root, split, names)
            coco_masks.update(m)
        else:
            names, splits[split], b = read_coco(jp, root, split, names)
            coco.update(b)
        if not splits[split]:
            raise DataError(f"{jp}: the '{split}' split lists no images")
    assert names is not None
    for split in ("train", "val", "test"):
        if doc.get(split) and split not in splits:
            files = _images_of(doc[split], root, yml, split)
            if not files:
                raise DataError(f"{yml}: the '{split}' split has no images "
                                f"({', '.join(IMAGE_SUFFIXES)})")
            splits[split] = files
    return Layout(root=root, names=names, splits=splits, masks=bool(doc.get("masks")),
                  coco=coco or None, coco_masks=coco_masks or None)


def is_yolo_layout(path: Any) -> bool:
    """Whether ``path`` is a ``data.yaml`` (``.yml``) file or a folder holding one: the
    YOLO layout, read by :func:`load_detection` (cheap: nothing is parsed)."""
    if not isinstance(path, str | os.PathLike):
        return False
    p = Path(path).expanduser()
    if p.suffix.lower() in (".yaml", ".yml"):
        return True
    return p.is_dir() and any((p / n).is_file() for n in ("data.yaml", "data.yml"))


def layout_task(path: Any) -> str:
    """``segmentation`` when the layout's data.yaml has ``masks``, else ``detection``."""
    try:
        return "segmentation" if read_layout(path).masks else "detection"
    except DataError:
        return "detection"  # the load itself says what is wrong


#: the data set a detection or segmentation search generates when none is given: small
#: enough to make in seconds and train on one core (``generated_scenes``)
GENERATED = {"n_images": 600, "size": 96, "seed": 0, "min_px": 12, "max_px": 48,
             "max_objects": 4}


def cache_dir() -> Path:
    """Where generated data sets are kept: ``$NASFORGE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/nasforge`` (``~/.cache/nasforge``)."""
    env = os.environ.get("NASFORGE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nasforge"


def generated_scenes(kind: str = "detection", verbose: bool = True) -> Path:
    """The ``data.yaml`` of the generated :data:`GENERATED` scenes of ``kind``, made once
    under :func:`cache_dir` (a fixed seed: every search without a data set sees the same
    images, and a resumed run finds them again). Written to a temporary folder first and
    renamed, so an interrupted generation leaves nothing half made."""
    import shutil
    import tempfile

    from nasforge.data.scenes import make_scenes

    g = GENERATED
    root = cache_dir() / "scenes"
    out = root / f"{kind}-{g['size']}px-{g['n_images']}-seed{g['seed']}"
    if not (out / "data.yaml").is_file():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=root))
        try:
            make_scenes(tmp / "d", kind=kind, **g)
            try:
                (tmp / "d").rename(out)
            except OSError:  # another process made it first: use theirs
                if not (out / "data.yaml").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        made = "generated"
    else:
        made = "using the generated"
    if verbose:
        print(f"no data set given: {made} {kind} data set ({g['n_images']} images of "
              f"{g['size']} x {g['size']}, seed {g['seed']}) in {out}; give --dataset "
              "data.yaml for yours")
    return out / "data.yaml"


def _sibling(img: Path, folder: str, suffix: str) -> Path:
    """YOLO's rule: the last ``images`` folder of the path becomes ``folder``."""
    parts = list(img.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = folder
            return Path(*parts).with_suffix(suffix)
    return img.with_suffix(suffix)


# -- images ------------------------------------------------------------------------------


def letterbox_params(h: int, w: int, size: int) -> tuple[float, int, int, int, int]:
    """Scale and placement of an ``h x w`` image in a ``size`` square: ``(scale, new_h,
    new_w, top, left)``; what :func:`letterbox` does and what maps boxes back."""
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    return s, nh, nw, (size - nh) // 2, (size - nw) // 2


def letterbox(img: Any, size: int, resample: Any = None, fill: float | int = PAD_VALUE
              ) -> np.ndarray:
    """A PIL image resized to fit a ``size`` square, aspect kept, padded with ``fill``:
    float32 (H, W, C) in [0, 1] for images, the raw values for masks (nearest)."""
    from PIL import Image

    w, h = img.size
    _, nh, nw, top, left = letterbox_params(h, w, size)
    r = img.resize((nw, nh), resample if resample is not None else Image.Resampling.BILINEAR)
    arr = np.asarray(r)
    if img.mode in ("L", "P", "I"):
        out = np.full((size, size), fill, dtype=np.int64)
        out[top:top + nh, left:left + nw] = arr
        return out
    out_f = np.full((size, size, arr.shape[2]), fill, dtype=np.float32)
    out_f[top:top + nh, left:left + nw] = arr.astype(np.float32) / 255.0
    return out_f


def _open_rgb(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    from nasforge.data.folder import MAX_IMAGE_PIXELS

    try:
        im = Image.open(path)
        if im.width * im.height > MAX_IMAGE_PIXELS:
            raise DataError(f"{path}: {im.width} x {im.height} pixels is more than nasforge "
                            f"decodes ({MAX_IMAGE_PIXELS:,})")
        return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


def _default_size(files: Sequence[Path]) -> int:
    """The training images' largest side, rounded up to a multiple of 32, at most 320
    (CPU-sized; give ``image_size`` for more)."""
    from PIL import Image

    side = 0
    for f in files[:50]:
        try:
            with Image.open(f) as im:
                side = max(side, im.width, im.height)
        except OSError:
            continue
    return int(min(320, max(32, 32 * math.ceil(side / 32))))


def _read_split(files: list[Path], names: list[str], size: int, task: str,
                coco: dict[Path, list[Box]] | None = None,
                coco_masks: dict[Path, CocoMaskImage] | None = None
                ) -> tuple[np.ndarray, Any, dict[str, int]]:
    from PIL import Image

    from nasforge.data.coco_masks import class_map

    xs = np.empty((len(files), 3, size, size), dtype=np.float32)
    ys: list[Any] = []
    counts = {"images": len(files), "no_label_file": 0, "empty": 0, "objects": 0}
    for i, f in enumerate(files):
        im = _open_rgb(f)
        xs[i] = letterbox(im, size).transpose(2, 0, 1)
        s, nh, nw, top, left = letterbox_params(im.height, im.width, size)
        if task == "segmentation" and coco_masks is not None and f in coco_masks:
            cm = coco_masks[f]
            if (cm.width, cm.height) != im.size:
                raise DataError(f"{cm.where}: the JSON says {cm.width} x {cm.height}, the "
                                f"image {f} is {im.width} x {im.height}")
            counts["objects"] += len(cm.annotations)
            counts["empty"] += not cm.annotations
            # the same letterbox as a PNG mask's: nearest neighbour, IGNORE in the padding
            ys.append(letterbox(Image.fromarray(class_map(cm)), size,
                                Image.Resampling.NEAREST, fill=IGNORE))
            continue
        if task == "segmentation":
            mp = _sibling(f, "masks", ".png")
            if not mp.is_file():
                raise DataError(f"{f}: no mask {mp} (segmentation needs one PNG per image: "
                                "0 background, k + 1 for class k)")
            try:
                m = Image.open(mp)
                m.load()
            except OSError as e:
                raise DataError(f"cannot read mask {mp}: {e}") from None
            if m.size != im.size:
                raise DataError(f"{mp}: the mask is {m.width} x {m.height}, its image "
                                f"{im.width} x {im.height}")
            if m.mode not in ("L", "P"):
                m = m.convert("L")
            arr = letterbox(m, size, Image.Resampling.NEAREST, fill=IGNORE)
            bad = (arr > len(names)) & (arr != IGNORE)
            if bad.any():
                raise DataError(f"{mp}: pixel value {int(arr[bad].max())} is not a class: "
                                f"0 is background and 1-{len(names)} the classes of "
                                "data.yaml (255 ignored)")
            ys.append(arr)
            continue
        if coco is not None and f in coco:
            boxes: list[Box] | None = coco[f]
        else:
            lp = _sibling(f, "labels", ".txt")
            boxes = read_label_file(lp, len(names)) if lp.is_file() else None
        if boxes is None:
            counts["no_label_file"] += 1
            boxes = []
        elif not boxes:
            counts["empty"] += 1
        counts["objects"] += len(boxes)
        # to the letterboxed square: x_px = x * w * s + left, normalized by size
        rows = [(b.cls, (b.x0 * nw + left) / size, (b.y0 * nh + top) / size,
                 (b.x1 * nw + left) / size, (b.y1 * nh + top) / size) for b in boxes]
        ys.append(np.asarray(rows, np.float32).reshape(-1, 5))
    if task == "segmentation":
        return xs, np.stack(ys).astype(np.int64), counts
    return xs, ys, counts


def pad_boxes(rows: Sequence[np.ndarray], m: int | None = None) -> np.ndarray:
    """Per-image ``(k, 5)`` boxes as one ``(N, M, 5)`` array padded with class -1."""
    m = max([len(r) for r in rows] + [1]) if m is None else m
    out = np.zeros((len(rows), m, 5), np.float32)
    out[:, :, 0] = -1
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def load_detection(path: str | os.PathLike[str], *, task: str | None = None,
                   image_size: int | None = None, val_fraction: float = 0.1,
                   seed: int = 0, max_train: int | None = None,
                   verbose: bool = True,
                   task_options: dict[str, Any] | None = None) -> Dataset:
    """A YOLO-layout data set as a :class:`Dataset` (``task`` ``detection`` or
    ``segmentation``; None: segmentation when data.yaml has ``masks``). A missing
    ``val`` split is held out of ``train`` (``val_fraction``), a missing ``test`` split
    is the validation split's images again (said when loading). ``task_options`` go to
    the task (e.g. the detection neck's ``fpn_width``)."""
    lay = read_layout(path, task)
    task = task or ("segmentation" if lay.masks else "detection")
    if task not in ("detection", "segmentation"):
        raise DataError(f"a YOLO-layout data set is for detection or segmentation, not {task!r}")
    size = int(image_size or _default_size(lay.splits["train"]))
    if not 16 <= size <= 2048:
        raise DataError(f"image_size must be from 16 to 2048, got {size}")
    rng = np.random.default_rng(seed)
    train = list(lay.splits["train"])
    notes = []
    if max_train is not None and len(train) > max_train:
        train = [train[i] for i in sorted(rng.permutation(len(train))[:max_train])]
    if "val" in lay.splits:
        val = lay.splits["val"]
    else:
        keep, held = random_split(len(train), val_fraction, rng)
        train, val = [train[i] for i in keep], [train[i] for i in held]
        notes.append(f"no 'val' split: {len(val)} training images held out")
    test = lay.splits.get("test")
    if test is None:
        test = val
        notes.append("no 'test' split: the test scores are on the validation images")
    parts = {}
    counts = {}
    for name, files in (("train", train), ("val", val), ("test", test)):
        if not files:
            raise DataError(f"the '{name}' split of {path} is empty")
        x, y, counts[name] = _read_split(files, lay.names, size, task, lay.coco,
                                         lay.coco_masks)
        parts[name] = (x, y)
    if task == "detection":
        m = max(max((len(r) for r in y), default=0) for _, y in parts.values())
        parts = {k: (x, pad_boxes(y, max(1, m))) for k, (x, y) in parts.items()}
    x_tr = parts["train"][0]
    mean = tuple(float(v) for v in x_tr.mean(axis=(0, 2, 3)))
    std = tuple(float(max(v, 1e-3)) for v in x_tr.std(axis=(0, 2, 3)))
    mu, sd = np.array(mean, np.float32)[:, None, None], np.array(std, np.float32)[:, None, None]
    for x, _ in parts.values():
        x -= mu
        x /= sd
    if verbose:
        c = counts["train"]
        what = (f"{c['objects']} objects" if task == "detection" else "masks")
        extra = (f"; {c['no_label_file']} without a label file and {c['empty']} empty "
                 "(read as images without objects)"
                 if task == "detection" and (c["no_label_file"] or c["empty"]) else "")
        print(f"{task} data {lay.root}: {len(train)} train / {len(val)} val / "
              f"{len(test)} test images at {size} x {size}, {len(lay.names)} classes, "
              f"{what} in train{extra}" + "".join(f"; {n}" for n in notes))
    return Dataset(
        name=str(lay.root), x_train=parts["train"][0], y_train=parts["train"][1],
        x_val=parts["val"][0], y_val=parts["val"][1], x_test=parts["test"][0],
        y_test=parts["test"][1],
        classes=(["background"] + lay.names) if task == "segmentation" else lay.names,
        mean=mean, std=std, task=task, input_kind="image",
        task_options=dict(task_options or {}))
