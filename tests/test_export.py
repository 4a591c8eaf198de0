"""Model directory round trip, ONNX parity, predict() on every accepted input, and bad dirs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nasforge
from nasforge import spaces
from nasforge.data import Dataset, from_arrays
from nasforge.errors import NasforgeError, RunDirError
from nasforge.export import (
    ARCH_FILE,
    ONNX_FILE,
    SUMMARY_FILE,
    WEIGHTS_FILE,
    LoadedModel,
    Prediction,
    export_onnx,
    load,
    save_best,
)

H = W = 12
CLASSES = ["ant", "bee", "cat"]


def _data(channels: int, seed: int = 0) -> tuple[np.ndarray, Dataset]:
    """Random uint8 images with 3 classes; (N, H, W) for gray, (N, H, W, 3) for RGB."""
    rng = np.random.default_rng(seed)
    shape = (48, H, W) if channels == 1 else (48, H, W, 3)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    y = np.arange(48) % 3
    return x, from_arrays(x, y, classes=CLASSES, test_fraction=0.0)


def _scramble_buffers(model: torch.nn.Module, seed: int) -> None:
    """Give BN running stats non-default values so a lost buffer would change outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)


def _make(space_name: str, cfg: dict, data: Dataset, out: Path, seed: int = 3, **kw):
    space = spaces.get(space_name, **cfg)
    arch = space.sample(np.random.default_rng(seed))
    torch.manual_seed(seed)
    model = space.build(arch, data.input_shape, data.num_classes)
    _scramble_buffers(model, seed)
    d = save_best(out, model, arch, space, data, {"test_accuracy": 0.25}, {"trial": 7}, **kw)
    return d, model.eval(), arch


@pytest.fixture(scope="module")
def gray(tmp_path_factory):
    x, data = _data(1)
    d, model, arch = _make("cnn", {}, data, tmp_path_factory.mktemp("gray") / "best")
    return d, model, arch, x, data


@pytest.fixture(scope="module")
def nb201(tmp_path_factory):
    x, data = _data(1, seed=1)
    d, model, arch = _make("nb201", {"C": 4, "N": 1}, data, tmp_path_factory.mktemp("nb") / "best")
    return d, model, arch, x, data


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    x, data = _data(3, seed=2)
    d, model, arch = _make("cnn", {}, data, tmp_path_factory.mktemp("rgb") / "best", onnx=False)
    return d, model, arch, x, data


def _manual_probs(model: torch.nn.Module, x_unit_nchw: np.ndarray, data: Dataset) -> np.ndarray:
    """What predict must compute: normalize with the data set's statistics, softmax."""
    m = np.asarray(data.mean, np.float32)[None, :, None, None]
    s = np.asarray(data.std, np.float32)[None, :, None, None]
    with torch.no_grad():
        logits = model(torch.from_numpy(((x_unit_nchw - m) / s).astype(np.float32)))
    return torch.softmax(logits.double(), -1).numpy()


# ------------------------------------------------------------------------ round trip
@pytest.mark.parametrize("which", ["gray", "nb201"])
def test_save_load_round_trip_gives_identical_outputs(which, request):
    d, model, arch, x, data = request.getfixturevalue(which)
    for f in (ARCH_FILE, WEIGHTS_FILE, ONNX_FILE, SUMMARY_FILE):
        assert (d / f).is_file(), f
    lm = nasforge.load(d)
    assert isinstance(lm, LoadedModel)
    assert lm.arch == arch and lm.arch.text == arch.text
    assert lm.classes == CLASSES
    assert lm.input_shape == data.input_shape
    assert lm.space.config() == model_space_config(d)
    assert not lm.module.training
    xin = torch.from_numpy(data.x_val[:6])
    with torch.no_grad():
        assert torch.equal(model(xin), lm.module(xin))
    # buffers (BN running stats) survive too
    for (k, a), (k2, b) in zip(
        model.state_dict().items(), lm.module.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(a, b), k


def model_space_config(d: Path) -> dict:
    return json.loads((d / ARCH_FILE).read_text())["space_config"]


def test_arch_json_and_summary_contents(gray):
    d, model, arch, _, data = gray
    doc = json.loads((d / ARCH_FILE).read_text())
    assert doc["space"] == "cnn"
    assert doc["arch"]["arch"] == arch.text
    assert doc["input_shape"] == [1, H, W]
    assert doc["num_classes"] == 3 and doc["classes"] == CLASSES
    assert doc["mean"] == pytest.approx(list(data.mean))
    assert doc["std"] == pytest.approx(list(data.std))
    assert doc["nasforge_version"] == nasforge.__version__
    assert isinstance(doc["format_version"], int)
    summary = json.loads((d / SUMMARY_FILE).read_text())
    assert summary["arch"] == arch.text
    assert summary["metrics"]["test_accuracy"] == 0.25
    assert summary["metrics"]["params"] == sum(p.numel() for p in model.parameters())
    assert summary["extra"] == {"trial": 7}
    assert summary["onnx"]["error"] is None


# ---------------------------------------------------------------------------- ONNX
@pytest.mark.parametrize("which", ["gray", "nb201"])
def test_onnx_matches_torch(which, request):
    import onnxruntime as ort

    d, model, _, _, data = request.getfixturevalue(which)
    sess = ort.InferenceSession(str(d / ONNX_FILE), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for n in (1, 5):  # the batch axis is dynamic
        x = data.x_val[:n]
        out = sess.run(None, {name: x})[0]
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        assert out.shape == (n, 3)
        np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)


def test_export_onnx_standalone_restores_mode(tmp_path):
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3),
        torch.nn.BatchNorm2d(2),
        torch.nn.Flatten(),
        torch.nn.LazyLinear(4),
    )
    model(torch.zeros(2, 1, 8, 8))  # materialize the lazy layer
    model.train()
    info = export_onnx(model, (1, 8, 8), tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").is_file()
    assert model.training  # mode restored
    assert info.max_abs_diff is not None and info.max_abs_diff <= 1e-4
    assert isinstance(info.opset, int)


def test_onnx_failure_is_recorded_not_fatal(tmp_path, monkeypatch):
    import nasforge.export.modeldir as ex  # save_best looks export_onnx up there

    def boom(*a, **k):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(ex, "export_onnx", boom)
    _, data = _data(1)
    d, model, _ = _make("cnn", {}, data, tmp_path / "best")
    summary = json.loads((d / SUMMARY_FILE).read_text())
    assert "exporter exploded" in summary["onnx"]["error"]
    assert not (d / ONNX_FILE).exists()
    lm = load(d)  # the rest is intact
    with torch.no_grad():
        x = torch.from_numpy(data.x_val[:2])
        assert torch.equal(lm.module(x), model(x))


# --------------------------------------------------------------------------- predict
def test_predict_numpy_layouts_match_manual_preprocessing(gray):
    d, model, _, x, data = gray
    lm = load(d)
    xs = x[:5]
    expected = _manual_probs(model, xs[:, None].astype(np.float32) / 255.0, data)
    variants = {
        "N,H,W uint8": xs,
        "N,H,W float": xs.astype(np.float32) / 255.0,
        "N,H,W,1": xs[..., None],
        "N,1,H,W": xs[:, None],
        "N,H,W,3 gray-RGB": np.repeat(xs[..., None], 3, axis=-1),
        "N,3,H,W gray-RGB": np.repeat(xs[:, None], 3, axis=1),
        "list of arrays": list(xs),
    }
    for what, arr in variants.items():
        p = lm.predict(arr)
        assert isinstance(p, Prediction)
        np.testing.assert_allclose(p.probabilities, expected, atol=1e-5, err_msg=what)
        np.testing.assert_array_equal(p.class_ids, expected.argmax(1), err_msg=what)
    single = lm.predict(xs[2])  # (H, W): one image
    assert len(single) == 1
    np.testing.assert_allclose(single.probabilities[0], expected[2], atol=1e-5)


def test_prediction_container(gray):
    d, *_, x, _ = gray
    p = load(d).predict(x[:4], batch_size=3)  # batching must not change anything
    q = load(d).predict(x[:4], batch_size=256)
    np.testing.assert_allclose(p.probabilities, q.probabilities, atol=1e-6)
    assert len(p) == 4
    np.testing.assert_allclose(p.probabilities.sum(axis=1), 1.0, atol=1e-9)
    assert p.class_ids.dtype.kind == "i"
    assert p.labels == [CLASSES[i] for i in p.class_ids]
    tops = list(p)
    assert [t.label for t in tops] == p.labels
    assert tops[0].probability == pytest.approx(p.probabilities[0].max())
    top2 = p.top_k(2)
    assert len(top2) == 4 and all(len(r) == 2 for r in top2)
    assert all(r[0].probability >= r[1].probability for r in top2)
    assert top2[0][0].class_id == p.class_ids[0]


def test_predict_resizes_other_sizes(gray):
    d, *_ = gray
    lm = load(d)
    big = np.random.default_rng(5).integers(0, 256, (3, 2 * H, 3 * W), dtype=np.uint8)
    p = lm.predict(big)
    assert p.probabilities.shape == (3, 3)
    # a constant image stays the same constant after resizing
    const = np.full((1, 2 * H, 2 * W), 77, np.uint8)
    np.testing.assert_allclose(
        lm.predict(const).probabilities,
        lm.predict(np.full((1, H, W), 77, np.uint8)).probabilities,
        atol=1e-5,
    )


def test_predict_png_files_and_pil_images(gray, tmp_path):
    d, _, _, x, _ = gray
    lm = load(d)
    ref = lm.predict(x[:3])
    paths = []
    for i in range(3):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(x[i], "L").save(p)
        paths.append(p)
    by_path = lm.predict([str(p) for p in paths])
    np.testing.assert_allclose(by_path.probabilities, ref.probabilities, atol=1e-5)
    one = lm.predict(paths[1])  # a single Path
    np.testing.assert_allclose(one.probabilities[0], ref.probabilities[1], atol=1e-5)
    # RGB PNG of the same gray image converts back to the same gray
    rgb_path = tmp_path / "rgb.png"
    Image.fromarray(np.repeat(x[0][..., None], 3, axis=-1), "RGB").save(rgb_path)
    np.testing.assert_allclose(
        lm.predict(rgb_path).probabilities[0], ref.probabilities[0], atol=1e-2
    )
    pil = [Image.fromarray(x[i], "L") for i in range(3)]
    np.testing.assert_allclose(lm.predict(pil).probabilities, ref.probabilities, atol=1e-5)
    np.testing.assert_allclose(lm.predict(pil[2]).probabilities[0], ref.probabilities[2], atol=1e-5)


def test_predict_rgb_model(rgb, tmp_path):
    d, model, _, x, data = rgb
    lm = load(d)
    assert lm.input_shape == (3, H, W)
    xs = x[:4]  # (N, H, W, 3)
    expected = _manual_probs(model, np.moveaxis(xs, 3, 1).astype(np.float32) / 255.0, data)
    np.testing.assert_allclose(lm.predict(xs).probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(lm.predict(np.moveaxis(xs, 3, 1)).probabilities, expected, atol=1e-5)
    one = lm.predict(xs[1])  # a single (H, W, 3) image
    np.testing.assert_allclose(one.probabilities[0], expected[1], atol=1e-5)
    rgba = np.concatenate([xs, np.full((*xs.shape[:3], 1), 255, np.uint8)], axis=-1)
    np.testing.assert_allclose(lm.predict(rgba).probabilities, expected, atol=1e-5)
    # a gray image is repeated to RGB
    gray_img = xs[0, :, :, 0]
    p_gray = lm.predict(gray_img)
    p_rep = lm.predict(np.repeat(gray_img[None, :, :, None], 3, axis=-1))
    np.testing.assert_allclose(p_gray.probabilities, p_rep.probabilities, atol=1e-5)
    path = tmp_path / "g.png"
    Image.fromarray(gray_img, "L").save(path)
    np.testing.assert_allclose(lm.predict(path).probabilities, p_rep.probabilities, atol=1e-5)


def test_predict_bad_input_is_a_clear_error(gray, tmp_path):
    d, _, _, x, _ = gray
    lm = load(d)
    with pytest.raises(NasforgeError, match="no images"):
        lm.predict([])
    with pytest.raises(NasforgeError, match="no images"):
        lm.predict(np.zeros((0, H, W), np.uint8))
    missing = tmp_path / "nope.png"
    with pytest.raises(NasforgeError, match="nope.png"):
        lm.predict([missing])
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    with pytest.raises(NasforgeError, match="junk.png"):
        lm.predict(junk)
    with pytest.raises(NasforgeError, match="channel"):
        lm.predict(np.zeros((2, 5, H, W), np.uint8))
    with pytest.raises(NasforgeError, match=r"\[0, 1\]"):
        lm.predict(x[:2].astype(np.float32))  # 0..255 floats
    with pytest.raises(NasforgeError, match="shape"):
        lm.predict(np.zeros((1, 1, 1, H, W), np.uint8))
    with pytest.raises(NasforgeError):
        lm.predict(42)


def test_alpha_is_dropped_and_unknown_channel_counts_fail(gray):
    lm = load(gray[0])
    xs = gray[3][:2]
    la = np.stack([xs, np.full_like(xs, 255)], axis=1)  # (N, 2, H, W) gray + alpha
    np.testing.assert_allclose(
        lm.predict(la).probabilities, lm.predict(xs).probabilities, atol=1e-6
    )
    with pytest.raises(NasforgeError, match="channel"):
        lm.predict(np.zeros((2, 5, H, W), np.uint8))


# ------------------------------------------------------------------ bad model dirs
@pytest.fixture
def copy_of(tmp_path, gray):
    dst = tmp_path / "model"
    shutil.copytree(gray[0], dst)
    return dst


def test_load_accepts_run_dir_and_arch_json(tmp_path, gray):
    run = tmp_path / "run"
    shutil.copytree(gray[0], run / "best")
    assert load(run).path == run / "best"
    assert load(run / "best" / ARCH_FILE).arch == gray[2]


def test_tampered_weights_are_rejected(copy_of):
    w = copy_of / WEIGHTS_FILE
    raw = bytearray(w.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte inside the tensor data
    w.write_bytes(bytes(raw))
    with pytest.raises(RunDirError, match="checksum"):
        load(copy_of)


def test_garbage_weights_are_rejected_without_checksum(copy_of):
    doc = json.loads((copy_of / ARCH_FILE).read_text())
    del doc["weights"]["sha256"]
    (copy_of / ARCH_FILE).write_text(json.dumps(doc))
    (copy_of / WEIGHTS_FILE).write_bytes(b"\x00" * 50)
    with pytest.raises(RunDirError, match="safetensors"):
        load(copy_of)


def test_missing_files_are_rejected(copy_of, tmp_path):
    (copy_of / WEIGHTS_FILE).unlink()
    with pytest.raises(RunDirError, match=WEIGHTS_FILE):
        load(copy_of)
    (copy_of / ARCH_FILE).unlink()
    with pytest.raises(RunDirError, match=ARCH_FILE):
        load(copy_of)
    with pytest.raises(RunDirError, match="no such"):
        load(tmp_path / "does-not-exist")


def test_corrupt_or_foreign_arch_json_is_rejected(copy_of):
    good = (copy_of / ARCH_FILE).read_text()
    (copy_of / ARCH_FILE).write_text(good[: len(good) // 2])
    with pytest.raises(RunDirError, match="corrupt"):
        load(copy_of)
    doc = json.loads(good)
    doc["format_version"] = 999
    (copy_of / ARCH_FILE).write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match="version"):
        load(copy_of)
    doc = json.loads(good)
    doc["space"] = "no-such-space"
    (copy_of / ARCH_FILE).write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match="cnn"):  # lists the valid spaces
        load(copy_of)


def test_weights_that_do_not_fit_the_architecture_are_rejected(tmp_path, nb201):
    dst = tmp_path / "model"
    shutil.copytree(nb201[0], dst)
    doc = json.loads((dst / ARCH_FILE).read_text())
    doc["space_config"]["C"] = 8  # twice as wide: every conv's shape differs
    (dst / ARCH_FILE).write_text(json.dumps(doc))  # checksum of the weights still valid
    with pytest.raises(RunDirError, match="does not fit"):
        load(dst)
