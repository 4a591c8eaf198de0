"""The segmentation benchmark's pure parts: per-class IoU against nasforge's mask_metrics,
and the hand U-Net peer's shape and schedule."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def seg():
    pytest.importorskip("torchmetrics")
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return _load("segmentation_bench", BENCH / "segmentation.py")


@pytest.fixture(scope="module")
def unet():
    return _load("hand_unet", BENCH / "peers" / "hand_unet.py")


def test_per_class_iou_by_hand(seg):
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 3, 0]])
    ious = seg.per_class_iou(seg.confusion(pred, target, 5))
    # class 0: tp 2 (pixels 0, 7), union {0, 1, 5, 7} = 4; class 1: tp 2, union 3;
    # class 2: tp 1, union 2; 3 and 4 appear nowhere once the ignored pixel is dropped
    assert ious == pytest.approx([0.5, 2 / 3, 0.5, None, None])


def test_mean_of_per_class_iou_is_mask_metrics_miou(seg):
    from nasforge.tasks.segmentation import mask_metrics

    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (3, 16, 16), generator=g)
    target[0, :2] = 255
    pred = torch.where(torch.rand(3, 16, 16, generator=g) < 0.6, target.clamp(max=5),
                       torch.randint(0, 7, (3, 16, 16), generator=g))  # 6: never a target
    ious = [v for v in seg.per_class_iou(seg.confusion(pred, target, 8)) if v is not None]
    assert sum(ious) / len(ious) == pytest.approx(mask_metrics(pred, target, 8)["miou"],
                                                  abs=1e-5)


def test_unet_keeps_the_input_size(unet):
    net = unet.UNet(3, 5, base=4, levels=4).eval()
    with torch.no_grad():
        assert net(torch.zeros(2, 3, 40, 40)).shape == (2, 5, 40, 40)
        assert net(torch.zeros(1, 3, 36, 44)).shape == (1, 5, 36, 44)


def test_unet_schedule_warms_up_then_decays_to_zero(unet):
    f = [unet.lr_factor(t, 100.0) for t in (0.0, 1.5, 3.0, 50.0, 100.0, 200.0)]
    assert f[0] == pytest.approx(0.01) and f[1] == pytest.approx(0.5)
    assert f[2] == pytest.approx(1.0) and 0.4 < f[3] < 0.6 and f[4] == f[5] == pytest.approx(0)
