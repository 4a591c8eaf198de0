"""Data loaders on data the tests make: IDX files, PNG folders, arrays in every layout."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from nasforge.data import (
    FASHION_MNIST_CLASSES,
    dataset_names,
    fashion_mnist_available,
    from_arrays,
    load_dataset,
    read_idx,
    stratified_split,
)
from nasforge.errors import DataError, NasforgeError


def _idx_bytes(a: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}[a.dtype]
    head = struct.pack(">BBBB", 0, 0, code, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


def _write_fashion(d: Path, n_train: int = 60, n_test: int = 20, gz: bool = True) -> dict:
    """Four tiny IDX files with class-dependent images, so splits can be checked."""
    rng = np.random.default_rng(1)
    out = {}
    for part, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n, dtype=np.uint8) % 10
        x = rng.integers(0, 50, size=(n, 28, 28), dtype=np.uint8)
        x[:, 0, 0] = y * 20  # pixel that encodes the label
        for kind, arr, dim in (("images", x, 3), ("labels", y, 1)):
            name = f"{part}-{kind}-idx{dim}-ubyte"
            raw = _idx_bytes(arr)
            if gz:
                (d / (name + ".gz")).write_bytes(gzip.compress(raw))
            else:
                (d / name).write_bytes(raw)
        out[part] = (x, y)
    return out


@pytest.fixture
def no_env(monkeypatch, tmp_path):
    """No NASFORGE_DATA_DIR and no system Fashion-MNIST: only what a test writes counts."""
    monkeypatch.delenv("NASFORGE_DATA_DIR", raising=False)
    monkeypatch.setattr("nasforge.data.idx.FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "nowhere"))


# ------------------------------------------------------------------------------ IDX
@pytest.mark.parametrize("gz", [True, False])
def test_idx_roundtrip(tmp_path, gz):
    a = np.arange(2 * 3 * 4, dtype=np.int32).reshape(2, 3, 4) - 5
    raw = _idx_bytes(a)
    p = tmp_path / ("a.idx.gz" if gz else "a.idx")
    p.write_bytes(gzip.compress(raw) if gz else raw)
    np.testing.assert_array_equal(read_idx(p), a)


def test_idx_bad_magic_and_truncated(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(p)
    raw = _idx_bytes(np.zeros((3, 4), np.uint8))
    p.write_bytes(raw[:-2])
    with pytest.raises(DataError, match="data bytes"):
        read_idx(p)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_from_data_dir(tmp_path, no_env, gz):
    made = _write_fashion(tmp_path, gz=gz)
    assert fashion_mnist_available(str(tmp_path))
    d = load_dataset("fashion-mnist", data_dir=str(tmp_path), val_fraction=0.2, seed=3)
    assert d.name == "fashion-mnist" and d.classes == FASHION_MNIST_CLASSES
    assert d.input_shape == (1, 28, 28)
    assert len(d.y_train) + len(d.y_val) == 60 and len(d.y_val) == 12
    assert len(d.y_test) == 20
    np.testing.assert_array_equal(d.y_test, made["t10k"][1])  # test split kept as given, in order
    # stratified: 12 of 60 held out, every class in validation (6 per class -> 1 or 2 each)
    assert set(np.bincount(d.y_val, minlength=10).tolist()) <= {1, 2}
    # the label pixel survives normalization: undo it and compare
    px = d.x_train[:, 0, 0, 0] * d.std[0] + d.mean[0]
    np.testing.assert_allclose(px * 255, d.y_train * 20, atol=1e-3)
    # normalization statistics come from the training split: it is ~zero-mean, unit-std
    assert abs(float(d.x_train.mean())) < 1e-4 and abs(float(d.x_train.std()) - 1) < 1e-3
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64


def test_fashion_env_var_and_auto(tmp_path, no_env, monkeypatch):
    assert not fashion_mnist_available()
    assert load_dataset("auto").name == "digits"
    _write_fashion(tmp_path)
    monkeypatch.setenv("NASFORGE_DATA_DIR", str(tmp_path))
    assert fashion_mnist_available()
    d = load_dataset("auto", image_size=14, max_train=30)
    assert d.name == "fashion-mnist" and d.input_shape == (1, 14, 14)
    assert len(d.y_train) + len(d.y_val) == 30


def test_fashion_missing_says_how_to_get_it(tmp_path, no_env):
    with pytest.raises(DataError) as e:
        load_dataset("fashion-mnist", data_dir=str(tmp_path))
    msg = str(e.value)
    assert "apt-get install -y dataset-fashion-mnist" in msg and "NASFORGE_DATA_DIR" in msg


# ---------------------------------------------------------------------------- digits
def test_digits():
    d = load_dataset("digits", seed=0)
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    n = len(d.y_train) + len(d.y_val) + len(d.y_test)
    assert n == 1797
    assert abs(len(d.y_test) / n - 0.2) < 0.01
    assert abs(len(d.y_val) / (len(d.y_train) + len(d.y_val)) - 0.1) < 0.01
    assert set(np.unique(d.y_test)) == set(range(10))
    assert 0 < d.std[0] < 1 and 0 < d.mean[0] < 1  # stats of [0, 1]-scaled pixels


def test_splits_are_seeded_and_disjoint():
    a, b, c = (load_dataset("digits", seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert not np.array_equal(a.y_val, c.y_val) or not np.array_equal(a.x_val, c.x_val)
    rows = lambda x: {r.tobytes() for r in x}  # noqa: E731
    # digits has a few duplicate images; overlap must stay at that level
    assert len(rows(a.x_train) & rows(a.x_val)) <= 2
    assert len(rows(a.x_train) & rows(a.x_test)) <= 4


def test_stratified_split_properties(rng):
    y = np.repeat(np.arange(4), [50, 30, 10, 1])
    keep, held = stratified_split(y, 0.2, rng)
    assert len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == len(y)
    assert np.bincount(y[held], minlength=4).tolist() == [10, 6, 2, 0]  # exact 20 % per class
    keep, held = stratified_split(y, 0.1, rng)
    assert len(held) == 9  # round(91 * 0.1), spread by largest remainder
    assert np.bincount(y[held], minlength=4).tolist() == [5, 3, 1, 0]
    keep, held = stratified_split(np.array([0, 0, 1]), 0.1, rng)  # rounding to 0 -> still one
    assert held.tolist() in ([0], [1])  # and never the only example of class 1


# ---------------------------------------------------------------------------- arrays
@pytest.mark.parametrize("layout", ["nhw", "nchw1", "nhwc1", "nchw3", "nhwc3"])
def test_arrays_layouts(layout):
    rng = np.random.default_rng(0)
    n = 40
    base = rng.integers(0, 256, size=(n, 3, 10, 12), dtype=np.uint8)
    x = {
        "nhw": base[:, 0],
        "nchw1": base[:, :1],
        "nhwc1": base[:, :1].transpose(0, 2, 3, 1),
        "nchw3": base,
        "nhwc3": base.transpose(0, 2, 3, 1),
    }[layout]
    y = np.arange(n) % 4
    d = from_arrays(x, y, val_fraction=0.25, test_fraction=0.0)
    c = 3 if layout.endswith("3") else 1
    assert d.input_shape == (c, 10, 12) and len(d.mean) == c and len(d.std) == c
    assert len(d.y_val) == 10 and len(d.y_test) == 0
    # undo normalization and find the original pixels back (uint8 scaled by 1/255)
    xr = (
        d.x_train * np.array(d.std, np.float32)[:, None, None]
        + np.array(d.mean, np.float32)[:, None, None]
    )
    orig = base[:, :c].astype(np.float32) / 255
    matches = [int(np.argmin(((orig - r) ** 2).sum(axis=(1, 2, 3)))) for r in xr]
    np.testing.assert_allclose(xr, orig[matches], atol=1e-5)


def test_arrays_float_labels_and_test_given():
    rng = np.random.default_rng(0)
    x = rng.random((30, 8, 8)).astype(np.float64)
    y = np.array(["cat", "dog", "eel"] * 10)
    xt, yt = rng.random((6, 8, 8)), np.array(["eel", "cat"] * 3)
    d = from_arrays(x, y, xt, yt, name="pets")
    assert d.classes == ["cat", "dog", "eel"] and d.name == "pets"
    assert d.y_test.tolist() == [2, 0] * 3
    # floats taken as [0, 1] values: the recorded mean matches the training pixels
    raw_train = d.x_train * d.std[0] + d.mean[0]
    assert abs(float(raw_train.mean()) - d.mean[0]) < 1e-5 and 0.4 < d.mean[0] < 0.6


def test_arrays_classes_and_resize():
    x = np.zeros((20, 16, 16), np.uint8)
    x[:, :8] = 255
    y = np.arange(20) % 2
    d = from_arrays(x, y, classes=["a", "b"], image_size=8)
    assert d.input_shape == (1, 8, 8) and d.classes == ["a", "b"]
    raw = d.x_train[0, 0] * d.std[0] + d.mean[0]
    # top half stays white, bottom black; the antialiased edge rows blur symmetrically
    np.testing.assert_allclose(raw[:3], 1.0, atol=1e-5)
    np.testing.assert_allclose(raw[5:], 0.0, atol=1e-5)
    np.testing.assert_allclose(raw[3] + raw[4], 1.0, atol=1e-5)
    assert 0.5 < raw[3, 0] < 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(x=np.zeros((0, 8, 8)), y=np.zeros(0)), "empty"),
        (dict(x=np.zeros((10, 8, 8)), y=np.zeros(10)), "single class"),
        (dict(x=np.zeros((10, 8, 8)), y=np.arange(9) % 2), "10 images but 9 labels"),
        (dict(x=np.zeros((10, 4, 4)), y=np.arange(10) % 2), "smaller than the 8x8"),
        (dict(x=np.zeros((10, 8, 8, 5)), y=np.arange(10) % 2), "C = 1 or 3"),
        (dict(x=np.zeros((10, 8)), y=np.arange(10) % 2), "expected"),
        (dict(x=np.full((10, 8, 8), np.nan), y=np.arange(10) % 2), "NaN"),
        (dict(x=np.zeros((10, 8, 8)), y=np.arange(10) % 2, classes=["a"]), "outside"),
        (dict(x=np.zeros((10, 8, 8)), y=np.arange(10) % 2, val_fraction=0.0), "val_fraction"),
        (dict(x=np.zeros((10, 8, 8)), y=np.arange(10) % 2, x_test=np.zeros((2, 8, 8))), "both"),
        (
            dict(
                x=np.zeros((10, 8, 8)),
                y=np.arange(10) % 2,
                x_test=np.zeros((2, 8, 8)),
                y_test=np.array([0, 5]),
            ),
            "never occur",
        ),
    ],
)
def test_arrays_errors(kwargs, match):
    with pytest.raises(DataError, match=match):
        from_arrays(**kwargs)


# ------------------------------------------------------------------------ image folders
def _png_folder(root: Path, sizes=((12, 10),), mode="L", per_class=5) -> Path:
    from PIL import Image

    for ci, cls in enumerate(["ants", "bees", "cats"]):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            w, h = sizes[i % len(sizes)]
            val = 40 + 80 * ci
            color = val if mode == "L" else (val, 0, 255 - val)
            Image.new(mode, (w, h), color).save(root / cls / f"{i}.png")
    (root / "ants" / "notes.txt").write_text("not an image, ignored")
    return root


def test_image_folder_gray_most_common_size(tmp_path):
    root = _png_folder(tmp_path / "imgs", sizes=((12, 10), (12, 10), (20, 20)))
    d = load_dataset(str(root), val_fraction=0.2)
    assert d.classes == ["ants", "bees", "cats"] and d.name == "imgs"
    assert d.input_shape == (1, 10, 12)  # (H, W) of the most common size
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 15
    raw = d.x_train * d.std[0] + d.mean[0]
    # each class has its own constant gray level: the label is recoverable from the pixels
    np.testing.assert_allclose(raw.mean(axis=(1, 2, 3)) * 255, 40 + 80 * d.y_train, atol=0.6)


def test_image_folder_rgb_and_image_size(tmp_path):
    root = _png_folder(tmp_path / "rgb", mode="RGB")
    d = load_dataset(str(root), image_size=9)
    assert d.input_shape == (3, 9, 9) and len(d.mean) == 3


@pytest.mark.parametrize("problem", ["empty_class", "one_class", "broken", "tiny", "no_classes"])
def test_image_folder_errors(tmp_path, problem):
    from PIL import Image

    root = tmp_path / "f"
    if problem == "one_class":
        (root / "only").mkdir(parents=True)
        Image.new("L", (10, 10)).save(root / "only" / "a.png")
        match = "only one class"
    elif problem == "no_classes":
        root.mkdir()
        match = "no class folders"
    else:
        _png_folder(root, sizes=((4, 4),) if problem == "tiny" else ((10, 10),))
        if problem == "empty_class":
            (root / "dogs").mkdir()
            match = "dogs has no images"
        elif problem == "broken":
            (root / "bees" / "bad.png").write_bytes(b"definitely not a png")
            match = "bad.png"
        else:
            match = "smaller than the 8x8"
    with pytest.raises(DataError, match=match):
        load_dataset(str(root))


def test_unknown_name_and_file(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("cifar-1000")
    assert all(n in str(e.value) for n in dataset_names())
    f = tmp_path / "x.txt"
    f.write_text("x")
    with pytest.raises(NasforgeError, match="not a data set"):
        load_dataset(str(f))


def test_dataset_names():
    assert {"auto", "digits", "fashion-mnist"} <= set(dataset_names())


# --------------------------------------------------------------- flips chosen by measurement
def _mirror_images(symmetric: bool, n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of 12x12 images: symmetric ones (a bright row 2, 6 or 10 across the
    whole width) or one-sided ones (a bright block on the left, on the right, or a bright
    row), whose mirror swaps class 0 and 1."""
    rng = np.random.default_rng(seed)
    y = rng.integers(3, size=n)
    x = rng.uniform(0, 0.3, size=(n, 12, 12)).astype(np.float32)
    for i, c in enumerate(y):
        if symmetric:
            x[i, 2 + 4 * c, :] = 1.0
        elif c == 2:
            x[i, 6, :] = 1.0
        elif c == 0:
            x[i, 3:9, :4] = 1.0
        else:
            x[i, 3:9, 8:] = 1.0
    return x, y


def test_flips_are_chosen_where_a_mirror_keeps_the_class(tmp_path):
    from PIL import Image

    from nasforge.data import default_augment, from_arrays, mirror_score

    sym = from_arrays(*_mirror_images(True), seed=0)
    one_sided = from_arrays(*_mirror_images(False), seed=0)
    assert mirror_score(sym) > 0.9 and default_augment(sym) == "flip"
    assert mirror_score(one_sided) < 0.5 and default_augment(one_sided) == "none"
    # named data sets keep their measured choice; digits fail the mirror test too
    assert default_augment("digits") == "none"
    assert mirror_score(load_dataset("digits", seed=0)) < 0.75
    # an image folder is measured from its images (the name says nothing)
    for kind, symmetric in (("sym", True), ("one", False)):
        x, y = _mirror_images(symmetric, n=120)
        for i, (im, c) in enumerate(zip(x, y, strict=True)):
            d = tmp_path / kind / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray((im * 255).astype(np.uint8), "L").save(d / f"{i}.png")
    assert default_augment(str(tmp_path / "sym")) == "flip"
    assert default_augment(str(tmp_path / "one")) == "none"
    assert default_augment(str(tmp_path / "missing")) == "none"
