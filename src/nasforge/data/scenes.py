"""Generated detection and segmentation scenes (``nasforge datasets make detection``).

No detection data ships offline, so nasforge makes its own for demos, tests and
benchmarks: objects cut from Fashion-MNIST (when installed) and scikit-learn's digits,
scaled to 12-64 px, several per image, on cluttered backgrounds (smooth noise, lines and
boxes in random greys and colours), some overlapping and some cut by the border. Boxes
and masks are the objects' *visible* pixels, so occlusion and the border shrink them as
they would a hand label; a placement that would hide more than half of an object (or
leave less than half of it inside the image) is drawn again.

The output is the YOLO layout Ultralytics users already have (``data.yaml``,
``images/{train,val,test}``, ``labels/...`` with ``class cx cy w h`` normalized), plus
``masks/...`` (one PNG per image: 0 background, ``k + 1`` for class ``k``) for
segmentation. The test split's objects come from the sources' own test images, so no
object instance is shared between the training and the test scenes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nasforge.errors import DataError

KINDS = ("detection", "segmentation")
DIGIT_NAMES = [f"digit {i}" for i in range(10)]
#: objects whose alpha is above this are "their pixels" (boxes and masks)
ALPHA_ON = 0.5
MIN_VISIBLE = 0.5  # of an object's own pixels, after occlusion and the border
SPLITS = {"train": 0.8, "val": 0.1, "test": 0.1}


@dataclass
class _Sources:
    """Object cut-outs per split group ("fit": train and val scenes, "test"): grey
    images in [0, 1] and their class ids into ``names``."""

    images: dict[str, list[np.ndarray]]
    labels: dict[str, np.ndarray]
    names: list[str]


def _sources(seed: int, fashion: bool | None, data_dir: str | None) -> _Sources:
    """Fashion-MNIST (if found, unless ``fashion`` is False) and digits, split so the test
    scenes use the sources' held-out images."""
    from sklearn.datasets import load_digits

    from nasforge.data.idx import FASHION_MNIST_CLASSES, _fashion_files, read_idx

    rng = np.random.default_rng(seed)
    imgs: dict[str, list[np.ndarray]] = {"fit": [], "test": []}
    labs: dict[str, list[int]] = {"fit": [], "test": []}
    names: list[str] = []
    files = _fashion_files(data_dir) if fashion is not False else None
    if fashion and files is None:
        raise DataError("Fashion-MNIST was asked for but not found: apt-get install "
                        "dataset-fashion-mnist, or set NASFORGE_DATA_DIR")
    if files is not None:
        per = 300  # cut-outs per class and group: plenty of variety, quick to load
        for group, (xk, yk) in (("fit", ("x_train", "y_train")), ("test", ("x_test", "y_test"))):
            x, y = read_idx(files[xk]), read_idx(files[yk])
            for c in range(10):
                idx = rng.permutation(np.flatnonzero(y == c))[:per]
                imgs[group] += [x[i].astype(np.float32) / 255.0 for i in idx]
                labs[group] += [c] * len(idx)
        names += list(FASHION_MNIST_CLASSES)
    d = load_digits()
    order = rng.permutation(len(d.target))
    cut = int(0.8 * len(order))
    base = len(names)
    for group, idx in (("fit", order[:cut]), ("test", order[cut:])):
        imgs[group] += [d.images[i].astype(np.float32) / 16.0 for i in idx]
        labs[group] += [base + int(d.target[i]) for i in idx]
    names += DIGIT_NAMES
    return _Sources(imgs, {k: np.asarray(v, np.int64) for k, v in labs.items()}, names)


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize(
        (w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Clutter: a smooth colour field, then random lines and box outlines (H, W, 3)."""
    from PIL import Image, ImageDraw

    coarse = rng.random((4, 4, 3)).astype(np.float32)
    field = np.stack([_resize(coarse[..., c], size, size) for c in range(3)], -1)
    field = 0.15 + 0.55 * field + rng.normal(0, 0.03, (size, size, 3)).astype(np.float32)
    img = Image.fromarray((np.clip(field, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 8))):
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        a, b = rng.integers(0, size, 2), rng.integers(0, size, 2)
        if rng.random() < 0.5:
            draw.line([tuple(a), tuple(b)], fill=col, width=int(rng.integers(1, 3)))
        else:
            x0, x1 = sorted((int(a[0]), int(b[0])))
            y0, y1 = sorted((int(a[1]), int(b[1])))
            draw.rectangle([x0, y0, x1, y1], outline=col, width=1)
    return np.asarray(img, dtype=np.float32) / 255.0


_Object = tuple[int, tuple[int, int, int, int]]


def _scene(rng: np.random.Generator, src: _Sources, group: str, size: int, min_px: int,
           max_px: int, max_objects: int) -> tuple[np.ndarray, list[_Object], np.ndarray]:
    """One image (H, W, 3) uint8, its objects (class, visible box x0, y0, x1, y1 in
    pixels, x1/y1 exclusive) and its instance map (0 none, i + 1 object i)."""
    img = _background(rng, size)
    inst = np.zeros((size, size), np.int32)
    areas: list[int] = []
    classes: list[int] = []
    n_want = int(rng.integers(1, max_objects + 1))
    pool, labels = src.images[group], src.labels[group]
    for _ in range(n_want):
        for _try in range(20):
            k = int(rng.integers(len(pool)))
            obj = pool[k]
            s = int(rng.integers(min_px, max_px + 1))
            aspect = float(rng.uniform(0.8, 1.25))
            h = max(4, int(round(s * min(1.0, 1 / aspect))))
            w = max(4, int(round(s * min(1.0, aspect))))
            alpha = np.clip(_resize(obj, h, w) * 2.0, 0.0, 1.0)
            on = alpha > ALPHA_ON
            if on.sum() < 8:
                continue
            # allowed to hang over the border by up to a third of its size
            y0 = int(rng.integers(-h // 3, size - 2 * h // 3 + 1))
            x0 = int(rng.integers(-w // 3, size - 2 * w // 3 + 1))
            ys, xs = slice(max(0, y0), min(size, y0 + h)), slice(max(0, x0), min(size, x0 + w))
            sub_on = on[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0]
            if sub_on.sum() < MIN_VISIBLE * on.sum():
                continue
            trial = inst.copy()
            trial[ys, xs][sub_on] = len(areas) + 1
            counts = np.bincount(trial.ravel(), minlength=len(areas) + 2)
            if any(counts[i + 1] < MIN_VISIBLE * areas[i] for i in range(len(areas))):
                continue  # would hide too much of an earlier object
            sub_a = alpha[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0, None]
            colour = rng.uniform(0.0, 1.0, 3).astype(np.float32)
            shade = 0.35 + 0.65 * sub_a
            img[ys, xs] = img[ys, xs] * (1 - sub_a) + sub_a * colour * shade
            inst = trial
            areas.append(int(on.sum()))
            classes.append(int(labels[k]))
            break
    objects = []
    for i, c in enumerate(classes):
        yy, xx = np.nonzero(inst == i + 1)
        objects.append((c, (int(xx.min()), int(yy.min()), int(xx.max()) + 1, int(yy.max()) + 1)))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8), objects, inst


def make_scenes(out_dir: str | Path, *, kind: str = "detection", n_images: int = 1000,
                seed: int = 0, size: int = 128, min_px: int = 12, max_px: int = 64,
                max_objects: int = 6, fashion: bool | None = None,
                data_dir: str | None = None) -> Path:
    """Write ``n_images`` generated scenes in the YOLO layout under ``out_dir``; returns
    the ``data.yaml`` path. ``kind="segmentation"`` also writes ``masks/``. ``fashion``:
    None uses Fashion-MNIST when it is installed, False digits only, True requires it."""
    import yaml
    from PIL import Image

    if kind not in KINDS:
        raise DataError(f"unknown kind {kind!r}: give one of {', '.join(KINDS)}")
    if not 10 <= n_images <= 200_000:
        raise DataError(f"--images must be from 10 to 200000, got {n_images}")
    if not 32 <= size <= 1024:
        raise DataError(f"--size must be from 32 to 1024 pixels, got {size}")
    if not 4 <= min_px <= max_px <= size:
        raise DataError(f"object sizes must satisfy 4 <= min ({min_px}) <= max ({max_px}) "
                        f"<= the image size ({size})")
    if not 1 <= max_objects <= 50:
        raise DataError(f"--max-objects must be from 1 to 50, got {max_objects}")
    out = Path(out_dir).expanduser()
    if (out / "data.yaml").exists() or (out.exists() and any(out.iterdir())):
        raise DataError(f"{out} exists and is not empty: give a new folder (nothing there "
                        "was changed)")
    src = _sources(seed, fashion, data_dir)
    rng = np.random.default_rng(seed + 1)
    counts = {s: int(round(f * n_images)) for s, f in SPLITS.items()}
    counts["train"] = n_images - counts["val"] - counts["test"]
    stats: dict[str, Any] = {}
    for split, n in counts.items():
        group = "test" if split == "test" else "fit"
        dirs = {d: out / d / split for d in ("images", "labels") + (
            ("masks",) if kind == "segmentation" else ())}
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        n_obj = 0
        for i in range(n):
            img, objects, inst = _scene(rng, src, group, size, min_px, max_px, max_objects)
            stem = f"{split}_{i:06d}"
            Image.fromarray(img).save(dirs["images"] / f"{stem}.png")
            lines = [f"{c} {(x0 + x1) / 2 / size:.6f} {(y0 + y1) / 2 / size:.6f} "
                     f"{(x1 - x0) / size:.6f} {(y1 - y0) / size:.6f}"
                     for c, (x0, y0, x1, y1) in objects]
            (dirs["labels"] / f"{stem}.txt").write_text("".join(ln + "\n" for ln in lines))
            if kind == "segmentation":
                lut = np.array([0] + [c + 1 for c, _ in objects], np.uint8)
                Image.fromarray(lut[inst]).save(dirs["masks"] / f"{stem}.png")
            n_obj += len(objects)
        stats[split] = {"images": n, "objects": n_obj}
    doc = {"path": ".", "train": "images/train", "val": "images/val", "test": "images/test",
           "nc": len(src.names), "names": {i: n for i, n in enumerate(src.names)}}
    if kind == "segmentation":
        doc["masks"] = "masks"  # nasforge's key: masks/<split>/<stem>.png, 0 = background
    (out / "data.yaml").write_text(
        "# generated by nasforge (nasforge datasets make): "
        + json.dumps({"kind": kind, "seed": seed, "size": size, "images": n_images}) + "\n"
        + yaml.safe_dump(doc, sort_keys=False))
    (out / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    return out / "data.yaml"
