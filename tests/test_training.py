"""Training loop and the ``train`` estimator on digits with tiny hand-made spaces."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn as nn

from nasforge import estimators
from nasforge.data import Dataset, from_arrays, load_dataset
from nasforge.errors import NasforgeError
from nasforge.estimators.training import TrainingEstimator, evaluate_model, train_model
from nasforge.spaces.base import Choice, SearchSpace


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class _Sleep(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.02)
        return x


class TinySpace(SearchSpace):
    """A conv + linear net; ``mode`` injects the failures the estimator must survive."""

    name = "tiny"

    def __init__(self) -> None:
        self.built_shapes: list[tuple[int, ...]] = []

    def choices(self) -> tuple[Choice, ...]:
        return (
            Choice("width", (4, 8)),
            Choice("mode", ("ok", "inf", "raise", "slow")),
        )

    def build(self, arch, input_shape, num_classes):  # type: ignore[no-untyped-def]
        self.built_shapes.append(tuple(input_shape))
        if arch["mode"] == "raise":
            raise RuntimeError("cannot build this candidate")
        c, h, w = input_shape
        width = int(arch["width"])
        layers: list[nn.Module] = [
            nn.Conv2d(c, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(width * h * w, num_classes),
        ]
        if arch["mode"] == "inf":
            layers.append(_Scale(float("inf")))
        if arch["mode"] == "slow":
            layers.insert(0, _Sleep())
        return nn.Sequential(*layers)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", seed=0)


@pytest.fixture
def space() -> TinySpace:
    return TinySpace()


def _mlp(shape=(1, 8, 8), classes=10, hidden=32) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(shape), hidden), nn.ReLU(), nn.Linear(hidden, classes)
    )


# ------------------------------------------------------------------------- functions
def test_train_model_learns_digits(digits):
    torch.manual_seed(0)
    model = _mlp()
    acc0, loss0 = evaluate_model(model, digits.x_val, digits.y_val)
    t0 = time.perf_counter()
    hist = train_model(model, digits, epochs=3, batch_size=32, seed=0, eval_every_epoch=True)
    took = time.perf_counter() - t0
    assert hist["val_accuracy"] > 0.8 > acc0 + 0.3  # chance is 0.1
    assert hist["val_loss"] < loss0 / 2
    losses = [r["train_loss"] for r in hist["curve"]]
    assert losses[0] > losses[-1] and len(losses) == 3
    assert all("val_accuracy" in r for r in hist["curve"])
    assert hist["num_train"] == len(digits.y_train) and not hist["stopped_early"]
    assert hist["lr"] == 0.05 and hist["weight_decay"] == 5e-4
    assert took < 10


def test_train_model_adamw_defaults_and_smoothing(digits):
    torch.manual_seed(0)
    hist = train_model(
        _mlp(), digits, epochs=2, batch_size=64, optimizer="adamw", label_smoothing=0.1
    )
    assert hist["lr"] == 1e-3 and hist["weight_decay"] == 0.05
    assert hist["val_accuracy"] > 0.5


def test_evaluate_model_exact_values():
    class Const(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = nn.Parameter(torch.zeros(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(len(x), 4) + self.p
            out[:, 2] = 1.0
            return out

    y = np.array([2, 2, 0, 1, 3, 2, 2, 1])
    x = np.zeros((8, 1, 8, 8), np.float32)
    acc, loss = evaluate_model(Const(), x, y, batch_size=3)
    assert acc == pytest.approx(4 / 8)
    lse = math.log(3 + math.e)  # log-sum-exp of logits (0, 0, 1, 0)
    assert loss == pytest.approx(((lse - 1) * 4 + lse * 4) / 8, rel=1e-6)


def test_on_epoch_false_stops_early(digits):
    seen: list[dict] = []

    def cb(epoch: int, rec: dict) -> bool:
        seen.append(rec)
        return epoch < 2

    hist = train_model(_mlp(), digits, epochs=6, batch_size=128, on_epoch=cb)
    assert hist["epochs"] == 2 and hist["stopped_early"]
    assert [r["epoch"] for r in seen] == [1, 2]
    assert set(seen[0]) == {"epoch", "train_loss", "val_accuracy", "val_loss"}
    # returning None keeps going
    hist = train_model(_mlp(), digits, epochs=3, on_epoch=lambda e, r: None)
    assert hist["epochs"] == 3 and not hist["stopped_early"]


def test_data_fraction_is_stratified_subset(digits):
    hist = train_model(_mlp(), digits, epochs=1, data_fraction=0.25)
    assert hist["num_train"] == round(0.25 * len(digits.y_train))


def test_nan_loss_raises(digits):
    model = nn.Sequential(_mlp(), _Scale(float("inf")))
    with pytest.raises(FloatingPointError, match="non-finite training loss"):
        train_model(model, digits, epochs=1)


def test_deadline_raises(digits):
    with pytest.raises(TimeoutError):
        train_model(_mlp(), digits, epochs=1, deadline=time.monotonic() - 1)


def test_resolution_in_training_and_eval(digits):
    torch.manual_seed(0)
    model = _mlp(shape=(1, 12, 12))  # only fits 12x12 inputs
    hist = train_model(model, digits, epochs=1, resolution=12, batch_size=64)
    assert hist["val_accuracy"] > 0.3
    acc, _ = evaluate_model(model, digits.x_val, digits.y_val, resolution=12)
    assert acc == pytest.approx(hist["val_accuracy"])
    with pytest.raises(RuntimeError):  # at native 8x8 the shapes do not fit
        evaluate_model(model, digits.x_val, digits.y_val)


def test_batch_of_one_left_over_does_not_break_batchnorm():
    rng = np.random.default_rng(0)
    d = from_arrays(rng.random((23, 8, 8)), np.arange(23) % 2, val_fraction=0.2, test_fraction=0)
    assert len(d.y_train) == 18  # 18 % 17 == 1: one example left over in every epoch
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 2))
    hist = train_model(model, d, epochs=1, batch_size=17)
    assert hist["epochs"] == 1


# ------------------------------------------------------------------------- estimator
def test_registered_and_config_roundtrip():
    e = estimators.get("train", epochs=2, optimizer="adamw", timeout=5)
    assert isinstance(e, TrainingEstimator)
    cfg = e.config()
    assert cfg["epochs"] == 2 and cfg["optimizer"] == "adamw" and cfg["timeout"] == 5.0
    assert estimators.get("train", **cfg).config() == cfg


def test_estimator_metrics_and_determinism(space, digits):
    e = TrainingEstimator(epochs=1, batch_size=32, latency_repeats=3)
    arch = space.make({"width": 4, "mode": "ok"})
    r1 = e.evaluate(arch, space, digits)
    r2 = e.evaluate(arch, space, digits)
    assert r1.ok, r1.error
    expected = {
        "val_accuracy", "val_loss", "params", "flops", "latency_ms",
        "peak_memory_mb", "train_time_s", "epochs", "data_fraction",
    }  # fmt: skip
    assert set(r1.metrics) == expected
    assert r1.metrics["val_accuracy"] > 0.3  # one epoch on 1.3k digits, chance is 0.1
    assert r1.metrics["params"] == 4 * 9 + 4 + 8 + 4 * 64 * 10 + 10
    assert r1.metrics["flops"] == 2 * 9 * 4 * 64 + 2 * 4 * 64 * 10
    assert r1.metrics["latency_ms"] > 0 and r1.metrics["peak_memory_mb"] > 0
    assert r1.cost >= r1.metrics["train_time_s"] > 0
    for k in ("val_accuracy", "val_loss", "params", "flops", "epochs"):
        assert r1.metrics[k] == r2.metrics[k], k
    # the seed is part of the recipe: another seed gives another network
    r3 = TrainingEstimator(epochs=1, batch_size=32, seed=1, measure_latency=False).evaluate(
        arch, space, digits
    )
    assert "latency_ms" not in r3.metrics
    assert r3.metrics["val_loss"] != r1.metrics["val_loss"]


def test_nan_is_failed_with_message(space, digits):
    r = TrainingEstimator().evaluate(space.make({"width": 4, "mode": "inf"}), space, digits)
    assert r.status == "failed" and "non-finite training loss" in r.error
    r = TrainingEstimator(lr=1e10).evaluate(space.make({"width": 8, "mode": "ok"}), space, digits)
    assert r.status == "failed" and "non-finite" in r.error


def test_timeout_is_failed(space, digits):
    e = TrainingEstimator(epochs=5, batch_size=16, timeout=0.3)
    t0 = time.perf_counter()
    r = e.evaluate(space.make({"width": 4, "mode": "slow"}), space, digits)
    assert r.status == "failed" and r.error.startswith("timed out after 0.3 s")
    assert time.perf_counter() - t0 < 3  # stopped between steps, not after 5 slow epochs


def test_build_exception_is_failed(space, digits):
    r = TrainingEstimator().evaluate(space.make({"width": 4, "mode": "raise"}), space, digits)
    assert r.status == "failed" and "cannot build this candidate" in r.error


def test_fidelity_overrides(space, digits):
    e = TrainingEstimator(epochs=1, measure_latency=False)
    arch = space.make({"width": 4, "mode": "ok"})
    r = e.evaluate(arch, space, digits, {"epochs": 2, "data_fraction": 0.5, "batch_size": 64})
    assert r.ok, r.error
    assert r.metrics["epochs"] == 2 and r.metrics["data_fraction"] == 0.5
    assert e.config()["epochs"] == 1  # the override is for that call only


def test_resolution_builds_for_the_new_size(space, digits):
    e = TrainingEstimator(epochs=1, measure_latency=False)
    arch = space.make({"width": 4, "mode": "ok"})
    native = e.evaluate(arch, space, digits)
    r = e.evaluate(arch, space, digits, {"resolution": 16})
    assert r.ok, r.error
    # (every build is preceded by its size check on the meta device: drop repeats)
    seen = space.built_shapes
    shapes = [s for i, s in enumerate(seen) if not i or s != seen[i - 1]]
    assert shapes[-1] == (1, 16, 16) and shapes[-2] == (1, 8, 8)
    assert r.metrics["flops"] == 4 * native.metrics["flops"]  # 4x the pixels, FLOPs linear in them


def test_user_errors_raise(space, digits):
    arch = space.make({"width": 4, "mode": "ok"})
    with pytest.raises(NasforgeError, match="needs a dataset"):
        TrainingEstimator().evaluate(arch, space, None)
    with pytest.raises(NasforgeError, match="valid keys"):
        TrainingEstimator().evaluate(arch, space, digits, {"epoch": 2})
    with pytest.raises(NasforgeError, match="epochs"):
        TrainingEstimator().evaluate(arch, space, digits, {"epochs": 0})
    bad = [
        dict(epochs=0),
        dict(epochs=1.5),
        dict(data_fraction=0),
        dict(data_fraction=1.5),
        dict(optimizer="adam"),
        dict(lr=-1),
        dict(batch_size=0),
        dict(resolution=4),
        dict(timeout=0),
        dict(device="tpu9"),
        dict(latency_repeats=0),
        dict(label_smoothing=1.0),
    ]
    for kw in bad:
        with pytest.raises(NasforgeError):
            TrainingEstimator(**kw)
