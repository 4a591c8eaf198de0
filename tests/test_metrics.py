"""Cost metrics against textbook formulas and measured behaviour."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from nasforge.metrics import (
    count_flops,
    count_params,
    measure_latency,
    measure_onnx_latency,
    peak_memory_mb,
)


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def test_params_linear_conv_and_shared():
    assert count_params(nn.Linear(10, 20)) == 10 * 20 + 20
    assert count_params(nn.Conv2d(3, 8, 5)) == 3 * 8 * 25 + 8
    lin = nn.Linear(4, 4)
    shared = nn.Sequential(lin, nn.ReLU(), lin)
    assert count_params(shared) == 20  # one parameter set, used twice
    frozen = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    frozen[0].requires_grad_(False)
    assert count_params(frozen, trainable_only=True) == 3
    assert count_params(frozen) == 9


def test_flops_linear_and_conv_match_formula():
    # flop_counter counts 2 * MACs (bias and element-wise ops not counted)
    assert count_flops(nn.Linear(10, 20), (10,)) == 2 * 10 * 20
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
    h_out = w_out = (16 + 2 - 3) // 2 + 1
    assert count_flops(conv, (3, 16, 16)) == 2 * 3 * 8 * 9 * h_out * w_out
    # per sample: a whole network is the sum of its layers
    m = _cnn()
    assert count_flops(m, (1, 8, 8)) == 2 * 1 * 4 * 9 * 64 + 2 * 4 * 3


def test_flops_keeps_training_mode():
    m = _cnn().train()
    count_flops(m, (1, 8, 8))
    assert m.training
    m.eval()
    peak_memory_mb(m, (1, 8, 8))
    assert not m.training


def test_latency_positive_finite_and_restores_threads():
    m = _cnn()
    before = torch.get_num_threads()
    r = measure_latency(m, (1, 8, 8), warmup=1, repeats=5, threads=2)
    assert r["threads"] == 2 and r["repeats"] == 5
    assert torch.get_num_threads() == before
    assert 0 < r["min_ms"] <= r["median_ms"] <= r["p90_ms"] and math.isfinite(r["p90_ms"])
    assert measure_latency(m, (1, 8, 8), warmup=0, repeats=3)["threads"] == before
    with pytest.raises(ValueError):
        measure_latency(m, (1, 8, 8), repeats=0)


def test_latency_grows_with_work():
    small = nn.Conv2d(1, 4, 3, padding=1)
    big = nn.Sequential(*[nn.Conv2d(64, 64, 3, padding=1) for _ in range(3)])
    t_small = measure_latency(small, (1, 8, 8), warmup=1, repeats=5)["median_ms"]
    t_big = measure_latency(big, (64, 32, 32), warmup=1, repeats=5)["median_ms"]
    assert t_big > 3 * t_small  # ~7000x the FLOPs: far beyond timing noise


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_latency(tmp_path):
    pytest.importorskip("onnxruntime")
    m = _cnn().eval()
    path = tmp_path / "m.onnx"
    torch.onnx.export(m, (torch.zeros(1, 1, 8, 8),), str(path), dynamo=False)
    r = measure_onnx_latency(path, (1, 8, 8), warmup=1, repeats=5, threads=1)
    assert r["threads"] == 1 and 0 < r["median_ms"] <= r["p90_ms"] and math.isfinite(r["p90_ms"])


def test_peak_memory_grows_with_input_and_counts_activations():
    m = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 1)).eval()
    small = peak_memory_mb(m, (1, 16, 16))
    big = peak_memory_mb(m, (1, 64, 64))
    batch = peak_memory_mb(m, (1, 16, 16), batch_size=8)
    assert big > 10 * small and batch > 5 * small
    weights = sum(p.numel() for p in m.parameters()) * 4 / 2**20
    # at 64x64: input + conv output + relu output (live together) at least, all float32
    acts = (1 + 16 + 16) * 64 * 64 * 4 / 2**20
    assert weights + acts <= big < weights + 3 * acts


def test_peak_memory_frees_dead_activations():
    # a long chain of same-size layers: freed intermediates must not accumulate
    layers = [nn.Conv2d(8, 8, 3, padding=1) for _ in range(12)]
    m = nn.Sequential(*[x for conv in layers for x in (conv, nn.ReLU())]).eval()
    act = 8 * 32 * 32 * 4 / 2**20
    weights = sum(p.numel() for p in m.parameters()) * 4 / 2**20
    peak = peak_memory_mb(m, (8, 32, 32))
    assert peak < weights + 4 * act  # 24 activations of this size were made, <= 3 live at once
