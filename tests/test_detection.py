"""The detection task: FCOS assignment and box decoding, NMS, the COCO metrics wiring,
predictions in the original pixels, ONNX vs torch, and a tiny search from the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import nasforge
from nasforge import spaces, tasks
from nasforge.cli import main
from nasforge.data import load_dataset
from nasforge.data.detection import letterbox_params
from nasforge.data.scenes import make_scenes
from nasforge.errors import NasforgeError
from nasforge.tasks import detection as D


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> str:
    """20 generated 64 x 64 scenes (16 train / 2 val / 2 test), digits only (fast)."""
    out = tmp_path_factory.mktemp("det") / "scenes"
    return str(make_scenes(out, n_images=20, seed=3, size=64, min_px=12, max_px=32,
                           max_objects=3, fashion=False))


@pytest.fixture(scope="module")
def data(scenes):
    return load_dataset(scenes, task="detection", verbose=False)


@pytest.fixture(scope="module")
def net(data):
    space = spaces.get("cnn")
    torch.manual_seed(0)
    return data.build_network(space, space.known_good()[0]).eval()


def _raw(points: torch.Tensor, ltrb: torch.Tensor, n_classes: int, side: float) -> torch.Tensor:
    """A raw output (1, A, 10 + C) with the given locations (x, y, stride) and distances."""
    a = len(points)
    out = torch.zeros(1, a, 5 + n_classes + D.N_EXTRA)
    out[0, :, :4] = ltrb
    out[0, :, -5:-2] = points
    out[0, :, -2:] = side
    return out


# -- assignment and decoding ----------------------------------------------------------------


def test_known_boxes_round_trip_through_assignment_and_decoding():
    side = 64.0
    ys, xs = torch.meshgrid(torch.arange(8) * 8 + 4.0, torch.arange(8) * 8 + 4.0, indexing="ij")
    pts = torch.stack([xs.reshape(-1), ys.reshape(-1), torch.full((64,), 8.0)], -1)
    y = torch.tensor([[[1, 8 / 64, 8 / 64, 40 / 64, 32 / 64],  # class, x0 y0 x1 y1
                       [0, 36 / 64, 40 / 64, 60 / 64, 62 / 64],
                       [-1, 0, 0, 0, 0]]])  # padding
    pos, matched, cls = D.assign(_raw(pts, torch.zeros(64, 4), 2, side), y)
    assert pos.sum() > 0 and set(cls[pos].tolist()) == {0, 1}
    # encode: the distances of every positive to its box; decode them back
    px, py = pts[:, 0], pts[:, 1]
    m = matched[0]
    ltrb = torch.stack([px - m[:, 0], py - m[:, 1], m[:, 2] - px, m[:, 3] - py], -1)
    boxes, scores = D.decode_raw(_raw(pts, ltrb, 2, side))
    want = (y[0, :2, 1:] * side)
    got = boxes[0, pos[0]]
    for b, c in zip(got, cls[0, pos[0]], strict=True):
        assert torch.allclose(b, want[0 if c == 1 else 1], atol=1e-5)
    assert scores.shape == (1, 64, 2) and torch.allclose(scores, torch.full_like(scores, 0.5))


def test_padding_rows_and_empty_images_give_no_positives():
    pts = torch.tensor([[4.0, 4.0, 8.0], [12.0, 4.0, 8.0]])
    y = torch.tensor([[[-1, 0, 0, 0, 0]]])
    pos, _, _ = D.assign(_raw(pts, torch.ones(2, 4), 1, 16.0), y)
    assert not pos.any()
    loss = D.FCOSLoss(1)(_raw(pts, torch.ones(2, 4), 1, 16.0).requires_grad_(), y)
    assert torch.isfinite(loss)


def test_the_detector_trains_a_step_on_padded_targets(data, net):
    task = data.make_task()
    assert task.n_outputs() == len(data.classes) == 10
    out = net.train()(torch.as_tensor(data.x_train[:4]))
    assert out.shape[-1] == task.raw_width()
    loss = task.loss()(out, task.encode(data.y_train[:4]))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.backbone.parameters())
    net.eval()


def test_the_training_loop_flips_boxes_with_their_images(data, monkeypatch):
    from nasforge import training

    seen = []
    real = training._augment

    def spy(x, gen, flip, shift, flips=None):
        out = real(x, gen, flip, shift, flips)
        seen.append((shift, None if flips is None else flips[0].clone()))
        return out

    monkeypatch.setattr(training, "_augment", spy)
    space = spaces.get("cnn", max_blocks=2, widths=[16], stem_widths=[16])
    torch.manual_seed(0)
    net = data.build_network(space, space.sample(np.random.default_rng(1)))
    hist = training.train_model(net, data, epochs=1, batch_size=8, augment="flip+shift")
    assert math.isfinite(hist["train_loss"]) and seen
    assert all(shift == 0 and f is not None for shift, f in seen)  # no shift for boxes


def test_flipping_targets_mirrors_the_boxes_of_flipped_images_only():
    y = torch.tensor([[[0, 0.1, 0.2, 0.3, 0.4], [-1, 0, 0, 0, 0]],
                      [[1, 0.1, 0.2, 0.3, 0.4], [-1, 0, 0, 0, 0]]])
    out = tasks.get("detection", n_classes=2).flip_targets(y, torch.tensor([True, False]))
    assert torch.allclose(out[0, 0], torch.tensor([0, 0.7, 0.2, 0.9, 0.4]))
    assert torch.equal(out[1], y[1]) and torch.equal(out[0, 1], y[0, 1])


# -- NMS -----------------------------------------------------------------------------------


def test_nms_on_hand_cases_torch_and_numpy_agree():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]],
                     np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    # box 3 (best) overlaps box 0 at IoU 100 / 105 = 0.95 and box 1 at 85.5 / 119.5 = 0.72:
    # both go at 0.5, only box 0 at 0.75
    assert D.nms_numpy(boxes, scores, 0.5).tolist() == [3, 2]
    assert D.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.5).tolist() == [3, 2]
    assert D.nms_numpy(boxes, scores, 0.75).tolist() == [3, 1, 2]
    assert D.nms(torch.from_numpy(boxes), torch.from_numpy(scores), 0.75).tolist() == [3, 1, 2]
    assert D.nms_numpy(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_postprocess_is_class_wise_and_thresholded():
    det = np.zeros((1, 3, 4 + 2), np.float32)
    det[0, :, :4] = [[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10]]
    det[0, 0, 4] = 0.9  # class 0
    det[0, 1, 4] = 0.8  # class 0, overlapping: suppressed
    det[0, 2, 5] = 0.85  # class 1 on the same box: kept
    det[0, 2, 4] = 0.1  # under conf
    (b, s, c), = D.postprocess(det, conf=0.25, iou=0.5)
    assert c.tolist() == [0, 1] and np.allclose(s, [0.9, 0.85])
    assert np.allclose(b, [[0, 0, 10, 10], [0, 0, 10, 10]])


# -- metrics -------------------------------------------------------------------------------


def test_map_is_one_for_perfect_predictions_and_drops_for_a_shifted_box():
    gt = [(np.array([[10, 10, 50, 50], [60, 60, 90, 80]]), np.array([0, 1]))]
    perfect = [(gt[0][0], np.array([0.9, 0.8]), gt[0][1])]
    m = D.coco_map(perfect, gt, 2)
    assert m["map50_95"] == pytest.approx(1.0) and m["map50"] == pytest.approx(1.0)
    # class 0's box shifted by 4 px: IoU 1440 / 1760 = 0.818, a hit at thresholds
    # 0.50 ... 0.80 (7 of 10): AP 0.7 for class 0, 1.0 for class 1
    shifted = [(np.array([[14, 10, 54, 50], [60, 60, 90, 80]]), np.array([0.9, 0.8]),
                np.array([0, 1]))]
    m = D.coco_map(shifted, gt, 2)
    assert m["map50_95"] == pytest.approx((0.7 + 1.0) / 2, abs=1e-6)
    assert m["map50"] == pytest.approx(1.0)
    # the wrong class finds nothing; no predictions at all is 0
    assert D.coco_map([(gt[0][0], np.array([0.9, 0.8]), np.array([1, 0]))], gt, 2
                      )["map50_95"] == 0.0
    assert D.coco_map([(np.zeros((0, 4)), np.zeros(0), np.zeros(0))], gt, 2)["map50"] == 0.0


def test_both_coco_backends_agree_and_a_missing_one_says_what_to_install(monkeypatch):
    pytest.importorskip("pycocotools")
    pytest.importorskip("faster_coco_eval")
    rng = np.random.default_rng(0)
    gt, pred = [], []
    for _ in range(5):
        xy = rng.uniform(0, 50, (3, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(8, 30, (3, 2))], 1)
        gt.append((boxes, rng.integers(0, 3, 3)))
        pred.append((boxes + rng.normal(0, 2, boxes.shape), rng.uniform(0, 1, 3),
                     rng.integers(0, 3, 3)))
    fast = D.coco_map(pred, gt, 3)
    import builtins

    real = builtins.__import__

    def no_fast(name, *a, **k):
        if name.startswith("faster_coco_eval"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_fast)
    ref = D.coco_map(pred, gt, 3)  # pycocotools, the reference implementation
    assert fast == pytest.approx(ref, abs=1e-9)

    def none(name, *a, **k):
        if name.startswith(("faster_coco_eval", "pycocotools")):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", none)
    with pytest.raises(NasforgeError, match=r"pip install 'nasforge\[detection\]'") as e:
        D.coco_map(pred, gt, 3)
    assert "\n" not in str(e.value)


def test_task_metrics_score_decoded_outputs(data, net):
    task = data.make_task()
    with torch.no_grad():
        out = net(torch.as_tensor(data.x_val))
    m = task.metrics(out, task.encode(data.y_val))
    assert set(m) == {"map50_95", "map50", "loss"}
    assert 0.0 <= m["map50_95"] <= m["map50"] <= 1.0 and math.isfinite(m["loss"])


# -- using the result ----------------------------------------------------------------------


def test_unletterbox_inverts_the_letterbox():
    h, w, size = 50, 120, 64
    s, nh, nw, top, left = letterbox_params(h, w, size)
    orig = np.array([[10, 5, 60, 45], [0, 0, 120, 50]], np.float32)
    boxed = orig.copy()
    boxed[:, [0, 2]] = orig[:, [0, 2]] * nw / w + left
    boxed[:, [1, 3]] = orig[:, [1, 3]] * nh / h + top
    assert np.allclose(D.unletterbox(boxed, (h, w), (size, size)), orig, atol=1e-4)


@pytest.fixture(scope="module")
def model_dir(data, net, tmp_path_factory):
    from nasforge.export import save_best

    space = spaces.get("cnn")
    out = tmp_path_factory.mktemp("det_model") / "best"
    save_best(out, net, space.known_good()[0], space, data, {"test_map50_95": 0.0})
    return out


def test_predict_answers_in_the_original_pixels(model_dir, monkeypatch):
    import nasforge

    model = nasforge.load(model_dir)
    size = model.input_shape[1]
    orig = np.array([30.0, 10.0, 90.0, 40.0])  # in a 150 x 60 image
    h, w = 60, 150
    _, nh, nw, top, left = letterbox_params(h, w, size)
    boxed = [orig[0] * nw / w + left, orig[1] * nh / h + top,
             orig[2] * nw / w + left, orig[3] * nh / h + top]

    class OneBox(torch.nn.Module):  # a served detector that finds one box of class 2
        def forward(self, x):
            out = torch.zeros(len(x), 1, 4 + model.task.n_outputs())
            out[:, 0, :4] = torch.tensor(boxed)
            out[:, 0, 4 + 2] = 0.9
            return out

    monkeypatch.setattr(model, "module", OneBox())
    img = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
    pil = Image.fromarray(img)
    res = model([img, pil, np.stack([img, img])])  # an array, a PIL image, a batch
    assert len(res) == 4
    for r in res:
        assert np.allclose(r.boxes, [orig], atol=0.05)
        assert r.class_ids.tolist() == [2] and r.labels == [model.classes[2] if model.classes
                                                            else model.task.classes[2]]
        assert r.scores.tolist() == pytest.approx([0.9])
    assert res[0].draw().size == (w, h)
    assert len(model(img, conf=0.95)[0]) == 0
    with pytest.raises(NasforgeError, match="do not apply"):
        model(img, top_k=3)


def test_onnx_matches_torch_on_generated_images(model_dir, scenes):
    import glob
    import os

    import onnxruntime as ort

    import nasforge

    model = nasforge.load(model_dir)
    files = sorted(glob.glob(os.path.join(os.path.dirname(scenes), "images", "test", "*.png")))
    x, _ctx = model._letterboxed(files)
    with torch.no_grad():
        want = model.module(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["detections"]
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert got.shape == want.shape and np.allclose(got, want, atol=1e-4)
    for (b1, s1, c1), (b2, s2, c2) in zip(D.postprocess(got, conf=0.05),
                                          D.postprocess(want, conf=0.05), strict=True):
        assert np.array_equal(c1, c2) and np.allclose(b1, b2, atol=1e-3)
        assert np.allclose(s1, s2, atol=1e-4)


def test_cli_predict_json_and_drawings(model_dir, scenes, tmp_path, capsys):
    import os

    img = os.path.join(os.path.dirname(scenes), "images", "test", "test_000000.png")
    with pytest.raises(SystemExit) as e:
        main(["predict", str(model_dir), img, "--json", "--conf", "0.01", "--iou", "0.5",
              "--save", str(tmp_path / "drawn")])
    assert e.value.code in (0, None)
    doc = json.loads(capsys.readouterr().out)
    assert doc[0]["image"] == img and (tmp_path / "drawn" / "test_000000.png").is_file()
    for d in doc[0]["detections"]:
        assert d["score"] >= 0.01 and 0 <= d["box"][0] <= d["box"][2] <= 64


# -- end to end ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_tiny_detection_search_from_the_cli(scenes, tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        # (8 stem channels are avoided: torch 2.13.0's CPU backward of a stride-2 1x1
        # conv 8 -> 16 at 64 x 64 in channels_last segfaults, whatever the task)
        main(["search", "--dataset", scenes, "--trials", "2", "--epochs", "1",
              "--final-epochs", "1", "--space-opt", "max_blocks=3", "--space-opt",
              "widths=[16,24]", "--space-opt", "stem_widths=[16]", "--out", str(run),
              "--no-progress"])
    out = capsys.readouterr()
    assert e.value.code in (0, None), out.err
    summary = json.loads((run / "best" / "summary.json").read_text())
    assert 0.0 <= summary["metrics"]["test_map50_95"] <= 1.0
    assert summary["onnx"]["error"] is None
    doc = json.loads((run / "best" / "arch.json").read_text())
    assert doc["task"]["task"] == "detection" and doc["task"]["n_classes"] == 10


# -- segmentation --------------------------------------------------------------------------


def test_segmentation_metrics_on_a_hand_case():
    from nasforge.tasks.segmentation import mask_metrics

    target = torch.tensor([[[0, 0, 1, 2, 2, 2, 255]]])
    assert mask_metrics(target.clone(), target, 4) == {"miou": 1.0, "dice": 1.0}
    pred = torch.tensor([[[0, 0, 1, 1, 2, 2, 0]]])  # the ignored pixel does not count
    m = mask_metrics(pred, target, 4)
    # IoU: background 1, class 1 1/2, class 2 2/3 (class 3 absent: left out)
    assert m["miou"] == pytest.approx((1 + 0.5 + 2 / 3) / 3)
    assert m["dice"] == pytest.approx((1 + 2 / 3 + 0.8) / 3)


def test_segmentation_builds_trains_and_decodes_to_the_original_size():
    task = tasks.get("segmentation", classes=["background", "a", "b"])
    space = spaces.get("cnn")
    net = task.build_network(space, space.known_good()[0], (3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    y = torch.randint(0, 3, (2, 32, 32))
    y[:, :4] = 255
    out = net(x)
    assert out.shape == (2, 3, 32, 32)
    task.loss()(out, y).backward()
    assert torch.equal(task.flip_targets(y, torch.tensor([True, False]))[0], y[0].flip(-1))
    prob = np.zeros((1, 3, 32, 32), np.float32)
    prob[0, 0] = 1
    _, nh, nw, top, left = letterbox_params(20, 40, 32)
    prob[0, 2, top:top + nh, left + nw // 2:left + nw] = 2  # the right half is class "b"
    res = task.decode(prob, sizes=[(20, 40)], input_shape=(3, 32, 32))
    assert res[0].mask.shape == (20, 40)
    assert (res[0].mask[:, 22:] == 2).all() and (res[0].mask[:, :18] == 0).all()
    assert set(res[0].to_json()["classes"]) == {"background", "b"}


# -- data routing --------------------------------------------------------------------------


def test_a_data_yaml_or_its_folder_loads_as_detection(scenes):
    import os

    from nasforge.errors import DataError

    for src in (scenes, os.path.dirname(scenes)):
        d = load_dataset(src, verbose=False)
        assert d.task == "detection" and d.y_train.ndim == 3 and d.y_train.shape[-1] == 5
    with pytest.raises(DataError, match="not for task 'classification'"):
        load_dataset(scenes, task="classification", verbose=False)
    with pytest.raises(DataError, match="reads the YOLO layout"):
        load_dataset("digits", task="detection", verbose=False)


def test_no_data_set_generates_a_cached_one_and_says_so(tmp_path, monkeypatch, capsys):
    import nasforge.data.detection as DD

    monkeypatch.setenv("NASFORGE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(DD, "GENERATED", {**DD.GENERATED, "n_images": 10, "size": 32,
                                          "min_px": 8, "max_px": 16})
    d = load_dataset("auto", task="detection")
    first = capsys.readouterr().out
    assert "no data set given: generated detection data set (10 images of 32 x 32, seed 0)" \
        in first and str(tmp_path) in first
    assert d.task == "detection" and d.input_shape == (3, 32, 32)
    load_dataset("auto", task="detection")
    assert "using the generated" in capsys.readouterr().out


def test_a_missing_metrics_library_fails_before_training(monkeypatch):
    import builtins

    real = builtins.__import__

    def none(name, *a, **k):
        if name.startswith(("faster_coco_eval", "pycocotools", "torchmetrics")):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", none)
    y = np.zeros((2, 1, 5), np.float32)
    with pytest.raises(NasforgeError, match=r"pip install 'nasforge\[detection\]'"):
        tasks.get("detection", n_classes=2).fit(y)
    with pytest.raises(NasforgeError, match=r"pip install 'nasforge\[segmentation\]'"):
        tasks.get("segmentation", n_classes=3).fit(np.zeros((2, 4, 4), np.int64))


def test_compound_scaling_refuses_a_detector_in_one_line(model_dir, scenes, capsys):
    from nasforge.cli import main

    with pytest.raises(SystemExit) as e:
        main(["scale", str(model_dir), "--max-flops", "1G", "--dataset", scenes])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "neck and head" in err


def test_map_and_latency_make_a_pareto_front_under_a_params_bound(scenes, tmp_path):
    """Latency and params work for a detector as for a classifier: objectives, bounds."""
    from nasforge.store import RunStore

    res = nasforge.search(scenes, task="detection", trials=3, final_epochs=1,
                          estimator_options={"epochs": 1},
                          objectives=["val_map50_95:max", "latency_ms:min"],
                          constraints=["params<=400k"], out=tmp_path / "r", progress=False,
                          space_options={"max_blocks": 3, "widths": [16, 32],
                                         "stem_widths": [16]})
    ok = [t for t in res.trials if t.ok]
    assert ok and all(t.metrics["params"] <= 400_000 for t in ok)
    assert all("latency_ms" in t.metrics and "val_map50_95" in t.metrics for t in ok)
    with RunStore.open(tmp_path / "r") as store:
        assert store.trials()
    assert res.model_dir is not None
