"""Detection / segmentation data: the YOLO label parser, data.yaml, letterboxing and the
scene generator (``nasforge datasets make``)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from nasforge.data.detection import (
    load_detection,
    parse_label_line,
    read_label_file,
    read_layout,
)
from nasforge.data.scenes import make_scenes
from nasforge.errors import DataError

# -- the label parser -------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(cls=st.integers(0, 9), x0=st.floats(0, 0.9), y0=st.floats(0, 0.9),
       w=st.floats(0.01, 1), h=st.floats(0.01, 1))
def test_a_valid_line_round_trips_to_its_corners(cls, x0, y0, w, h) -> None:
    w, h = min(w, 1 - x0), min(h, 1 - y0)
    if w <= 1e-6 or h <= 1e-6:
        return
    line = f"{cls} {x0 + w / 2:.6f} {y0 + h / 2:.6f} {w:.6f} {h:.6f}"
    b = parse_label_line(line, 10, "f.txt:1")
    assert b is not None and b.cls == cls
    assert math.isclose(b.x0, x0, abs_tol=2e-6) and math.isclose(b.y1, y0 + h, abs_tol=2e-6)
    assert 0 <= b.x0 < b.x1 <= 1 and 0 <= b.y0 < b.y1 <= 1


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789 .-e+naif\t#x")), max_size=60))
def test_any_line_parses_or_fails_with_its_place(text) -> None:
    try:
        b = parse_label_line(text, 5, "labels/a.txt:7")
    except DataError as e:
        assert str(e).startswith("labels/a.txt:7: ") and "\n" not in str(e)
        return
    if b is not None:
        assert 0 <= b.cls < 5 and 0 <= b.x0 <= b.x1 <= 1 and 0 <= b.y0 <= b.y1 <= 1


@pytest.mark.parametrize("line, why", [
    ("0 0.5 0.5 0.2", "expected 5 fields"),
    ("7 0.5 0.5 0.2 0.2", "class id 7 is out of range: data.yaml names 3 class(es), ids 0-2"),
    ("-1 0.5 0.5 0.2 0.2", "out of range"),
    ("1.5 0.5 0.5 0.2 0.2", "must be an integer"),
    ("0 0.95 0.5 0.2 0.2", "outside the image"),
    ("0 64 32 10 12", "outside the image"),
    ("0 0.5 0.5 0 0.2", "must be positive"),
    ("0 a 0.5 0.2 0.2", "must be numbers"),
    ("0 nan 0.5 0.2 0.2", "finite"),
])
def test_bad_lines_name_file_and_line(line, why) -> None:
    with pytest.raises(DataError) as e:
        parse_label_line(line, 3, "x/labels/train/a.txt:3")
    assert str(e.value).startswith("x/labels/train/a.txt:3: ") and why in str(e.value)


def test_blank_comment_polygon_and_tolerance() -> None:
    assert parse_label_line("   ", 2, "w") is None and parse_label_line("# c", 2, "w") is None
    b = parse_label_line("1 0.1 0.2 0.5 0.2 0.3 0.7", 2, "w")  # a YOLO-seg polygon
    assert (b.cls, b.x0, b.y0, b.x1, b.y1) == (1, 0.1, 0.2, 0.5, 0.7)
    b = parse_label_line("0 0.5 0.5 1.008 1.0", 2, "w")  # rounding past the edge: clipped
    assert b.x0 == 0.0 and b.x1 == 1.0


def test_a_label_file_reports_the_failing_line(tmp_path) -> None:
    p = tmp_path / "a.txt"
    p.write_text("0 0.5 0.5 0.2 0.2\n\n1 0.5 0.5 0.2\n")
    with pytest.raises(DataError, match=r"a\.txt:3: expected 5 fields"):
        read_label_file(p, 2)
    p.write_bytes(b"\xff\xfe\x00bin")
    with pytest.raises(DataError, match="not a text file"):
        read_label_file(p, 2)


# -- data.yaml and loading --------------------------------------------------------------


def _layout(tmp_path, names="[cat, dog]", splits=("train", "val")) -> None:
    lines = [f"{s}: images/{s}" for s in splits] + [f"names: {names}"]
    (tmp_path / "data.yaml").write_text("\n".join(lines) + "\n")
    for s in splits:
        (tmp_path / "images" / s).mkdir(parents=True)
        (tmp_path / "labels" / s).mkdir(parents=True)


def _image(path, w, h, value=(200, 30, 30)) -> None:
    Image.new("RGB", (w, h), value).save(path)


def test_letterboxed_boxes_and_negatives_are_hand_checked(tmp_path, capsys) -> None:
    _layout(tmp_path, names="{0: cat, 1: dog}")
    _image(tmp_path / "images/train/a.png", 200, 100)
    (tmp_path / "labels/train/a.txt").write_text("1 0.5 0.5 0.5 0.5\n0 0.25 0.5 0.1 1.0\n")
    _image(tmp_path / "images/train/b.png", 100, 100)  # no label file: a negative
    _image(tmp_path / "images/train/c.png", 100, 100)
    (tmp_path / "labels/train/c.txt").write_text("")  # empty: a negative too
    _image(tmp_path / "images/val/v.png", 100, 200)
    (tmp_path / "labels/val/v.txt").write_text("0 0.5 0.5 1 1\n")
    d = load_detection(tmp_path, image_size=128)
    out = capsys.readouterr().out
    assert "1 without a label file and 1 empty" in out and "no 'test' split" in out
    assert d.task == "detection" and d.classes == ["cat", "dog"]
    assert d.x_train.shape == (3, 3, 128, 128) and d.y_train.shape == (3, 2, 5)
    # 200 x 100 -> 128 x 64, 32 px of padding above and below
    assert np.allclose(d.y_train[0, 0], [1, 0.25, 0.375, 0.75, 0.625], atol=1e-6)
    assert np.allclose(d.y_train[0, 1], [0, 0.2, 0.25, 0.3, 0.75], atol=1e-6)
    assert (d.y_train[1:, :, 0] == -1).all()  # padding rows of the negatives
    # 100 x 200 (portrait): the box spans the image, padded left and right
    assert np.allclose(d.y_val[0, 0], [0, 0.25, 0.0, 0.75, 1.0], atol=1e-6)
    assert d.y_test.shape[0] == 1  # the validation images stand in for a test split
    # padding is grey (114), the image red: normalized values differ there
    assert not np.allclose(d.x_train[0, :, 0, 64], d.x_train[0, :, 64, 64])


def test_bad_layouts_fail_with_one_line(tmp_path) -> None:
    with pytest.raises(DataError, match="no data.yaml here"):
        read_layout(tmp_path)
    (tmp_path / "data.yaml").write_text("train: images/train\n")
    with pytest.raises(DataError, match="needs 'names'"):
        read_layout(tmp_path)
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: {0: a, 2: b}\n")
    with pytest.raises(DataError, match="without gaps"):
        read_layout(tmp_path)
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [a]\n")
    with pytest.raises(DataError, match="'train' entry 'images/train' is not there"):
        read_layout(tmp_path)
    (tmp_path / "images/train").mkdir(parents=True)
    with pytest.raises(DataError, match="'train' split has no images"):
        read_layout(tmp_path)
    (tmp_path / "data.yaml").write_text("train: [unclosed\n")
    with pytest.raises(DataError, match="not valid YAML"):
        read_layout(tmp_path)


def test_a_bad_label_stops_the_load_naming_file_and_line(tmp_path) -> None:
    _layout(tmp_path)
    _image(tmp_path / "images/train/a.png", 64, 64)
    (tmp_path / "labels/train/a.txt").write_text("0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.2 0.2\n")
    _image(tmp_path / "images/val/b.png", 64, 64)
    with pytest.raises(DataError, match=r"labels/train/a\.txt:2: class id 5 is out of range"):
        load_detection(tmp_path, verbose=False)


# -- the generator ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes") / "seg"
    make_scenes(out, kind="segmentation", n_images=60, seed=3, size=96, fashion=False)
    return out


def test_generated_scenes_are_the_yolo_layout_with_tight_boxes(scenes) -> None:
    lay = read_layout(scenes)
    assert {k: len(v) for k, v in lay.splits.items()} == {"train": 48, "val": 6, "test": 6}
    assert lay.names[0] == "digit 0" and lay.masks
    touching = overlapping = 0
    for img in lay.splits["train"]:
        boxes = read_label_file(scenes / "labels/train" / (img.stem + ".txt"), len(lay.names))
        mask = np.asarray(Image.open(scenes / "masks/train" / (img.stem + ".png")))
        assert boxes, img  # every scene has at least one object
        covered = np.zeros(mask.shape, bool)
        for b in boxes:
            x0, y0 = round(b.x0 * 96), round(b.y0 * 96)
            x1, y1 = round(b.x1 * 96), round(b.y1 * 96)
            region = mask[y0:y1, x0:x1] == b.cls + 1
            # tight: the object's pixels reach every edge of its box
            assert region[0].any() and region[-1].any()
            assert region[:, 0].any() and region[:, -1].any()
            covered[y0:y1, x0:x1] = True
            touching += min(x0, y0) == 0 or max(x1, y1) == 96
        assert not (mask[~covered] > 0).any()  # no unlabelled object pixels
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                overlapping += min(a.x1, b.x1) > max(a.x0, b.x0) and \
                    min(a.y1, b.y1) > max(a.y0, b.y0)
    assert touching > 0 and overlapping > 0


def test_the_generator_is_seeded_and_loads_for_both_tasks(scenes, tmp_path) -> None:
    again = tmp_path / "again"
    make_scenes(again, kind="segmentation", n_images=60, seed=3, size=96, fashion=False)

    def digest(root):
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(root.rglob("*.png")))
                              ).hexdigest()

    assert digest(again) == digest(scenes)
    seg = load_detection(scenes, verbose=False)
    assert seg.task == "segmentation" and seg.classes[0] == "background"
    assert seg.y_train.shape == (48, 96, 96) and int(seg.y_train.max()) <= len(seg.classes) - 1
    det = load_detection(scenes, task="detection", image_size=64, verbose=False)
    assert det.x_train.shape == (48, 3, 64, 64) and det.y_test.shape[0] == 6
    real = det.y_train[det.y_train[..., 0] >= 0]
    assert (real[:, 1:] >= 0).all() and (real[:, 1:] <= 1).all()
    assert (real[:, 3] > real[:, 1]).all() and (real[:, 4] > real[:, 2]).all()


def test_datasets_make_on_the_command_line(tmp_path, capsys) -> None:
    from nasforge.cli import main

    out = tmp_path / "det"
    with pytest.raises(SystemExit) as e:
        main(["datasets", "make", "detection", str(out), "--images", "20", "--size", "64",
              "--max-object", "32", "--digits-only"])
    assert e.value.code in (0, None)
    assert "train 16 images" in capsys.readouterr().out
    assert not (out / "masks").exists() and len(list((out / "labels").rglob("*.txt"))) == 20
    for args, why in ((["detection", str(out)], "not empty"),
                      (["boxes", str(tmp_path / "x")], "unknown kind 'boxes'"),
                      (["detection", str(tmp_path / "y"), "--images", "3"], "--images")):
        with pytest.raises(SystemExit) as e:
            main(["datasets", "make", *args])
        err = capsys.readouterr().err
        assert e.value.code == 2 and why in err and "Traceback" not in err
    with pytest.raises(SystemExit) as e:
        main(["datasets"])
    assert e.value.code in (0, None) and "DIR/data.yaml" in capsys.readouterr().out


# -- COCO JSON ----------------------------------------------------------------------------


def _to_coco(root, split: str, names: list[str], cat_offset: int = 1) -> dict:
    """The YOLO labels of ``root``'s ``split`` as a COCO instances document (pixels)."""
    images, anns = [], []
    for i, f in enumerate(sorted((root / "images" / split).iterdir())):
        with Image.open(f) as im:
            w, h = im.size
        images.append({"id": i + 10, "file_name": f.name, "width": w, "height": h})
        for b in read_label_file(root / "labels" / split / f"{f.stem}.txt", len(names)):
            anns.append({"id": len(anns), "image_id": i + 10,
                         "category_id": b.cls + cat_offset, "iscrowd": 0,
                         "bbox": [b.x0 * w, b.y0 * h, (b.x1 - b.x0) * w, (b.y1 - b.y0) * h]})
    cats = [{"id": k + cat_offset, "name": n} for k, n in enumerate(names)]
    return {"images": images, "annotations": anns, "categories": cats}


def test_coco_json_splits_load_like_the_yolo_labels(tmp_path):
    import json

    root = make_scenes(tmp_path / "s", n_images=12, seed=2, size=64, fashion=False).parent
    yolo = load_detection(root, verbose=False)
    names = read_layout(root).names
    (root / "annotations").mkdir()
    for split in ("train", "val", "test"):
        (root / "annotations" / f"{split}.json").write_text(json.dumps(
            _to_coco(root, split, names)))
    # no names: the COCO categories name the classes (ids 1.. mapped to 0..)
    (root / "coco.yaml").write_text("train: annotations/train.json\n"
                                    "val: annotations/val.json\ntest: annotations/test.json\n")
    coco = load_detection(root / "coco.yaml", verbose=False)
    assert coco.classes == names
    assert np.allclose(coco.x_train, yolo.x_train)
    assert np.allclose(coco.y_train, yolo.y_train, atol=1e-5)
    assert np.allclose(coco.y_test, yolo.y_test, atol=1e-5)
    # a crowd box is skipped, a box outside its image and an unknown category are refused
    doc = _to_coco(root, "train", names)
    doc["annotations"][0]["iscrowd"] = 1
    (root / "annotations" / "train.json").write_text(json.dumps(doc))
    crowd = load_detection(root / "coco.yaml", verbose=False)
    assert (crowd.y_train[..., 0] >= 0).sum() == (yolo.y_train[..., 0] >= 0).sum() - 1
    for key, val, msg in (("bbox", [60.0, 60.0, 20.0, 20.0], "not inside"),
                          ("category_id", 99, "category_id 99")):
        bad = _to_coco(root, "train", names)
        bad["annotations"][0][key] = val
        (root / "annotations" / "train.json").write_text(json.dumps(bad))
        with pytest.raises(DataError, match=msg) as e:
            load_detection(root / "coco.yaml", verbose=False)
        assert "annotations[0]" in str(e.value)


# -- COCO JSON masks (segmentation) --------------------------------------------------------


def _runs(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts of a binary mask: column-major run lengths, zeros
    first (written by hand here so the test does not trust the loader's reader)."""
    flat = mask.flatten(order="F").astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    runs = np.diff(bounds).tolist()
    return ([0] + runs) if flat[0] else runs


def _rle(mask: np.ndarray) -> dict:
    """pycocotools' compressed RLE of a binary mask, JSON-ready."""
    from pycocotools import mask as coco_mask

    r = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode("ascii")}


def _row_polygons(mask: np.ndarray) -> list[list[float]]:
    """A binary mask as polygons that rasterize back to exactly its pixels: one
    rectangle [x0, x1) x [y, y + 1) per horizontal run (COCO's pixel k spans [k, k+1))."""
    polys = []
    for y, row in enumerate(mask.astype(np.int8)):
        d = np.diff(np.concatenate([[0], row, [0]]))
        for x0, x1 in zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1), strict=True):
            polys.append([float(v) for v in (x0, y, x1, y, x1, y + 1, x0, y + 1)])
    return polys


def _seg_doc(w: int, h: int, segs: list, cats=("a", "b"), **extra) -> dict:
    """One image ``a.png`` of ``w x h`` with one annotation per ``(category index, seg)``."""
    anns = [{"id": 100 + i, "image_id": 1, "category_id": c + 1, "iscrowd": 0,
             "segmentation": s, **extra} for i, (c, s) in enumerate(segs)]
    return {"images": [{"id": 1, "file_name": "a.png", "width": w, "height": h}],
            "annotations": anns,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(cats)]}


def _seg_layout(tmp_path, doc: dict, w: int = 10, h: int = 10):
    import json

    (tmp_path / "images").mkdir(exist_ok=True)
    _image(tmp_path / "images" / "a.png", w, h)
    (tmp_path / "seg.json").write_text(json.dumps(doc))
    (tmp_path / "data.yaml").write_text("train: seg.json\nval: seg.json\n")
    return tmp_path / "data.yaml"


def test_a_coco_square_polygon_sets_exactly_its_pixels(tmp_path) -> None:
    pytest.importorskip("pycocotools")
    # the square (2, 2) - (6, 6) in pixel coordinates covers pixels 2..5 in x and y
    yml = _seg_layout(tmp_path, _seg_doc(10, 10, [(1, [[2, 2, 6, 2, 6, 6, 2, 6]])]))
    want = np.zeros((10, 10), np.int64)
    want[2:6, 2:6] = 2  # class 1 ('b') is 2 in the map, 0 background
    from nasforge.data.coco_masks import class_map, read_coco_masks

    _, files, maps = read_coco_masks(tmp_path / "seg.json", tmp_path, "train", None)
    assert files == [tmp_path / "images" / "a.png"]
    assert np.array_equal(class_map(maps[files[0]]), want)  # at the image's own size
    d = load_detection(yml, task="segmentation", image_size=20, verbose=False)
    assert d.task == "segmentation" and d.classes == ["background", "a", "b"]
    assert d.y_train.shape == (1, 20, 20) and d.y_train.dtype == np.int64
    assert np.array_equal(d.y_train[0], np.kron(want, np.ones((2, 2), np.int64)))
    # the same file without --task is a detection data set: its bbox-free polygon is refused
    # there, so give it a box and check the route picks boxes
    doc = _seg_doc(10, 10, [(1, [[2, 2, 6, 2, 6, 6, 2, 6]])], bbox=[2, 2, 4, 4])
    _seg_layout(tmp_path, doc)
    det = load_detection(yml, image_size=20, verbose=False)
    assert det.task == "detection" and np.allclose(det.y_train[0, 0], [1, .2, .2, .6, .6])


def test_coco_masks_are_letterboxed_like_png_masks(tmp_path) -> None:
    pytest.importorskip("pycocotools")
    # a 10 x 6 image: padded above and below, nearest-neighbour, 255 in the padding
    want = np.zeros((6, 10), np.uint8)
    want[1:4, 2:9] = 1
    want[3:6, 0:3] = 2
    coco = tmp_path / "coco"
    coco.mkdir()
    segs = [(k, _row_polygons(want == k + 1)) for k in (0, 1)]
    cm = load_detection(_seg_layout(coco, _seg_doc(10, 6, segs), 10, 6),
                        task="segmentation", image_size=16, verbose=False)
    png = tmp_path / "png"
    png.mkdir()
    _layout(png, names="[a, b]")
    (png / "masks" / "train").mkdir(parents=True)
    (png / "masks" / "val").mkdir(parents=True)
    for s in ("train", "val"):
        _image(png / "images" / s / "a.png", 10, 6)
        Image.fromarray(want).save(png / "masks" / s / "a.png")
    pm = load_detection(png, task="segmentation", image_size=16, verbose=False)
    assert (cm.y_train == 255).any() and np.array_equal(cm.y_train, pm.y_train)
    assert np.array_equal(cm.y_val, pm.y_val)


def test_coco_rle_round_trips_through_pycocotools_encode(tmp_path) -> None:
    pytest.importorskip("pycocotools")
    rng = np.random.default_rng(0)
    a = rng.random((12, 17)) < 0.3
    b = ~a & (rng.random((12, 17)) < 0.5)
    a[0, 0] = True  # a run of ones first: the counts start with a zero run
    # compressed string (pycocotools.mask.encode) and an iscrowd uncompressed counts list
    doc = _seg_doc(17, 12, [(0, _rle(a)), (1, {"size": [12, 17], "counts": _runs(b)})])
    doc["annotations"][1]["iscrowd"] = 1
    d = load_detection(_seg_layout(tmp_path, doc, 17, 12), task="segmentation",
                       image_size=17, verbose=False)
    # 17 x 12 in a 17 square: 2 rows of padding above, 3 below
    got = d.y_train[0]
    assert (got[:2] == 255).all() and (got[14:] == 255).all()
    assert np.array_equal(got[2:14], a * 1 + b * 2)


def test_overlapping_coco_masks_smaller_wins_then_later(tmp_path) -> None:
    pytest.importorskip("pycocotools")
    from nasforge.data.coco_masks import class_map, read_coco_masks

    big = [[0, 0, 8, 0, 8, 8, 0, 8]]      # 64 px, class a
    small = [[4, 4, 10, 4, 10, 10, 4, 10]]  # 36 px, class b, listed first
    same = [[2, 2, 8, 2, 8, 8, 2, 8]]     # 36 px too, class a, listed after small
    _seg_layout(tmp_path, _seg_doc(10, 10, [(1, small), (0, big)]))
    _, _, maps = read_coco_masks(tmp_path / "seg.json", tmp_path, "train", None)
    m = class_map(next(iter(maps.values())))
    assert (m[4:10, 4:10] == 2).all()  # the smaller one wins although listed first
    assert m[0, 0] == 1 and m[7, 3] == 1 and (m[8:, :4] == 0).all()
    _seg_layout(tmp_path, _seg_doc(10, 10, [(1, small), (0, same)]))
    _, _, maps = read_coco_masks(tmp_path / "seg.json", tmp_path, "train", None)
    m = class_map(next(iter(maps.values())))
    assert (m[4:8, 4:8] == 1).all()  # equal areas: the later annotation wins
    assert m[9, 9] == 2 and m[2, 2] == 1


@pytest.mark.parametrize("seg, why", [
    ([[1, 1, 5, 5]], "polygon 0 has 2 point(s): a polygon needs at least 3"),
    ([[1, 1, 5, 1, 5, 5, 1, 5], [1, 1, 5, 1, 5]], "polygon 1 has an odd number"),
    ([[1, 1, 50, 1, 50, 5]], "outside its 10 x 10 image"),
    ([[1, 1, 5, "x", 5, 5]], "finite numbers"),
    ({"size": [10, 12], "counts": [120]}, "size [10, 12] (height, width) does not match"),
    ({"size": [10, 10], "counts": [5, 10]}, "runs cover 15 pixels"),
    ({"size": [10, 10], "counts": "P1"}, "runs cover"),
    ({"size": [10, 10], "counts": "\u00e9\u00e9"}, "not COCO's compressed RLE"),
    ({"size": [10, 10], "counts": [50, -1, 51]}, "non-negative"),
    (None, "has no mask"),
    ([], "has no mask"),
    ("polygon", "must be polygons"),
])
def test_bad_coco_masks_fail_in_one_line_naming_file_and_annotation(tmp_path, seg, why):
    import json

    doc = _seg_doc(10, 10, [(0, [[0, 0, 3, 0, 3, 3]]), (1, seg)], bbox=[0, 0, 3, 3])
    if seg is None:
        del doc["annotations"][1]["segmentation"]  # a box only
    yml = _seg_layout(tmp_path, doc)
    with pytest.raises(DataError) as e:
        load_detection(yml, task="segmentation", verbose=False)
    msg = str(e.value)
    assert why in msg and "\n" not in msg, msg
    assert msg.startswith(f"{tmp_path / 'seg.json'}: annotations[1] (id 101)"), msg
    # a detection load of the same file does not look at the masks
    (tmp_path / "seg.json").write_text(json.dumps(doc))
    assert load_detection(yml, verbose=False).task == "detection"


def test_a_coco_image_whose_file_differs_from_its_json_size_is_refused(tmp_path) -> None:
    pytest.importorskip("pycocotools")
    yml = _seg_layout(tmp_path, _seg_doc(12, 10, [(0, [[0, 0, 3, 0, 3, 3]])]), 10, 10)
    with pytest.raises(DataError, match=r"images\[0\] 'a.png': the JSON says 12 x 10, the "
                                         r"image .* is 10 x 10"):
        load_detection(yml, task="segmentation", verbose=False)


def _scenes_to_coco(root, split: str, names: list[str], form: str) -> dict:
    """The PNG masks of ``root``'s ``split`` as a COCO instances document: one
    annotation per class present, as row polygons, compressed or uncompressed RLE."""
    images, anns = [], []
    for i, f in enumerate(sorted((root / "images" / split).iterdir())):
        m = np.asarray(Image.open(root / "masks" / split / f.name))
        h, w = m.shape
        images.append({"id": i + 1, "file_name": f.name, "width": w, "height": h})
        for c in sorted(set(np.unique(m).tolist()) - {0}):
            on = m == c
            seg = (_row_polygons(on) if form == "polygons" else _rle(on)
                   if form == "rle" else {"size": [h, w], "counts": _runs(on)})
            yy, xx = np.nonzero(on)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": c,
                         "iscrowd": int(form == "counts"), "segmentation": seg,
                         "bbox": [int(xx.min()), int(yy.min()), int(xx.max() - xx.min() + 1),
                                  int(yy.max() - yy.min() + 1)]})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(names)]
    return {"images": images, "annotations": anns, "categories": cats}


def test_coco_json_of_the_generated_masks_loads_like_the_png_masks(scenes, tmp_path):
    import json

    pytest.importorskip("pycocotools")
    from nasforge.data import load_dataset
    from nasforge.data.detection import layout_task

    names = read_layout(scenes).names
    png = load_detection(scenes, task="segmentation", image_size=64, verbose=False)
    ann = tmp_path / "annotations"
    ann.mkdir()
    for split, form in (("train", "polygons"), ("val", "rle"), ("test", "counts")):
        (ann / f"{split}.json").write_text(json.dumps(_scenes_to_coco(scenes, split, names,
                                                                      form)))
    yml = tmp_path / "coco.yaml"
    yml.write_text(f"path: {scenes}\ntrain: {ann}/train.json\nval: {ann}/val.json\n"
                   f"test: {ann}/test.json\n")
    # the route: --task segmentation reads the masks, no task the boxes
    coco = load_dataset(str(yml), task="segmentation", image_size=64, verbose=False)
    assert coco.task == "segmentation" and coco.classes == png.classes
    assert np.allclose(coco.x_train, png.x_train)
    for part in ("y_train", "y_val", "y_test"):
        assert np.array_equal(getattr(coco, part), getattr(png, part)), part
    assert layout_task(yml) == "detection"
    det = load_dataset(str(yml), image_size=64, verbose=False)
    assert det.task == "detection" and det.y_train.shape[-1] == 5
    yml.write_text(yml.read_text() + "masks: true\n")  # segmentation without --task
    assert layout_task(yml) == "segmentation"


@pytest.mark.slow
def test_a_tiny_segmentation_search_on_coco_json_from_the_cli(tmp_path, capsys):
    import json

    pytest.importorskip("pycocotools")
    pytest.importorskip("torchmetrics")
    from nasforge.cli import main

    root = make_scenes(tmp_path / "s", kind="segmentation", n_images=12, seed=1, size=64,
                       fashion=False).parent
    names = read_layout(root).names
    for split in ("train", "val", "test"):
        (root / f"{split}.json").write_text(json.dumps(_scenes_to_coco(root, split, names,
                                                                       "rle")))
    (root / "coco.yaml").write_text("train: train.json\nval: val.json\ntest: test.json\n")
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["search", "--task", "segmentation", "--dataset", str(root / "coco.yaml"),
              "--trials", "1", "--epochs", "1", "--final-epochs", "1", "--space-opt",
              "max_blocks=3", "--space-opt", "widths=[16,24]", "--space-opt",
              "stem_widths=[16]", "--out", str(run), "--no-progress"])
    out = capsys.readouterr()
    assert e.value.code in (0, None), out.err
    summary = json.loads((run / "best" / "summary.json").read_text())
    assert 0.0 <= summary["metrics"]["test_miou"] <= 1.0
    doc = json.loads((run / "best" / "arch.json").read_text())
    assert doc["task"]["task"] == "segmentation"
