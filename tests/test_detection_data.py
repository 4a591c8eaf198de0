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
