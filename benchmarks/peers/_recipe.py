"""What the torch peers share: the budget clock, the data, the training recipe, the test.

Not a peer itself. ``hand_cnn.py`` and ``optuna_tpe.py`` import it from their own folder,
so that the hand design and Optuna's winner are trained by the same code: AdamW (lr 2e-3,
weight decay 5e-4), batch 128, label smoothing 0.1, random horizontal flips, channels_last,
and a cosine learning rate over a *wall-clock* training time (progress = elapsed / seconds).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

RECIPE: dict[str, Any] = {"optimizer": "AdamW", "lr": 2e-3, "weight_decay": 5e-4,
                          "batch_size": 128, "label_smoothing": 0.1, "augment": "hflip",
                          "schedule": "cosine over wall-clock time"}


class Clock:
    """The budget counted from process start; ``left`` keeps ``EXIT_S`` back for writing
    the result and the interpreter's exit, which the runner's stopwatch sees too."""

    EXIT_S = 1.0

    def __init__(self, budget: float) -> None:
        self.budget = float(budget)
        from nasforge.budget import process_age  # the same clock nasforge's CLI uses

        self.t0 = time.monotonic() - process_age()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def left(self) -> float:
        return self.budget - self.EXIT_S - self.elapsed()


def setup(seed: int) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    np.random.seed(seed)


def load(seed: int, name: str = "fashion-mnist") -> Any:
    """A data set as nasforge loads it: normalized float32 NCHW, 10 % validation."""
    from nasforge.data import load_dataset

    return load_dataset(name, val_fraction=0.1, seed=seed)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, *, seconds: float | None = None,
          epochs: float | None = None, seed: int = 0,
          on_half_epoch: Callable[[int], None] | None = None,
          hard_stop: float | None = None) -> dict[str, float]:
    """Train with the recipe for ``seconds`` of wall time (cosine over time) or ``epochs``
    (cosine over steps). ``on_half_epoch(k)`` is called after each half epoch (k = 1, 2,
    ...; it may raise to stop). ``hard_stop`` (a ``time.monotonic()`` value) ends the
    training early whatever the schedule. Returns epochs, steps and seconds trained."""
    t0 = time.monotonic()  # the set-up below (lazy imports of the optimizer) counts too
    if (seconds is None) == (epochs is None):
        raise ValueError("give seconds or epochs")
    model.to(memory_format=torch.channels_last).train()
    lr, bs = RECIPE["lr"], RECIPE["batch_size"]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=RECIPE["weight_decay"])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    n = len(xt)
    per_epoch = max(1, n // bs)  # the last partial batch is dropped
    total_steps = None if epochs is None else max(1, round(epochs * per_epoch))
    half = max(1, per_epoch // 2)
    g = torch.Generator().manual_seed(seed)
    step = 0
    while True:
        perm = torch.randperm(n, generator=g)
        for i in range(per_epoch):
            now = time.monotonic()
            progress = (now - t0) / seconds if seconds is not None else step / total_steps
            if progress >= 1.0 or (hard_stop is not None and now >= hard_stop):
                return {"epochs": step / per_epoch, "steps": step,
                        "seconds": time.monotonic() - t0}
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * progress))
            idx = perm[i * bs:(i + 1) * bs]
            xb = xt[idx]
            flip = (torch.rand(len(idx), generator=g) < 0.5) & RECIPE.get("flip", True)
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            xb = xb.contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(model(xb), yt[idx],
                                   label_smoothing=RECIPE["label_smoothing"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if on_half_epoch is not None and step % half == 0:
                on_half_epoch(step // half)
                model.train()


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, *, tta: bool = False,
             batch: int = 1000) -> float:
    """Top-1 accuracy in eval mode; ``tta`` averages the softmax of the image and its
    mirror (how nasforge serves a model trained with flips)."""
    model.to(memory_format=torch.channels_last).eval()
    correct = 0
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i:i + batch]).contiguous(memory_format=torch.channels_last)
        p = model(xb).softmax(1)
        if tta:
            p = p + model(xb.flip(3)).softmax(1)
        correct += int((p.argmax(1) == torch.from_numpy(y[i:i + batch]).long()).sum())
    return correct / len(x)


def test_seconds(model: nn.Module, data: Any, probe: int = 500) -> float:
    """Estimated wall time of the test pass, from a timed pass over ``probe`` images
    (after a short warm-up), with a 15 % margin: what a peer keeps back for the test."""
    xs = data.x_test[:probe]
    accuracy(model, xs[:50], data.y_test[:50])
    t = time.monotonic()
    accuracy(model, xs, data.y_test[:probe], batch=probe)
    return 1.15 * (time.monotonic() - t) * len(data.x_test) / len(xs) + 1.0


def test(model: nn.Module, data: Any) -> dict[str, Any]:
    """Plain top-1 accuracy on the official 10k test set (no test-time augmentation)."""
    t = time.monotonic()
    acc = accuracy(model, data.x_test, data.y_test)
    return {"test_accuracy": acc, "test_s": time.monotonic() - t}


def all_train(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """Train + validation: all 60k official training images."""
    return (np.concatenate([data.x_train, data.x_val]),
            np.concatenate([data.y_train, data.y_val]))


def write(path: str | os.PathLike[str], doc: dict[str, Any]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=float) + "\n")
    os.replace(tmp, p)


def exit_now(rc: int) -> None:
    """Exit without the interpreter's teardown, which takes seconds with torch (and
    keras) loaded on a busy core and counts against the budget on the runner's clock;
    the result file is already written (atomically) when this is called."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
