"""The training loop and model scoring every part of nasforge shares.

``train_model`` / ``evaluate_model`` / ``score_model`` are plain functions so the train
estimator, the final retraining and the one-shot methods run the exact same loop (it is
not an estimator itself; :mod:`nasforge.estimators.training` re-exports it). The loop
keeps whole splits as tensors and slices batches itself: a DataLoader's per-sample
Python overhead would dominate the small networks NAS trains by the hundred.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nasforge.errors import NasforgeError

if TYPE_CHECKING:
    from nasforge.data import Dataset

OPTIMIZERS = ("sgd", "adamw")
AUGMENTS = ("none", "flip", "flip+shift")
DEFAULT_LR = {"sgd": 0.05, "adamw": 1e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 0.05}

EpochCallback = Callable[[int, dict[str, float]], "bool | None"]


def _as_tensor(a: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return t.to(dtype)


def _augment(x: torch.Tensor, gen: torch.Generator, flip: bool, shift: int,
             flips: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Random horizontal flips (per example) and one random shift of up to ``shift``
    pixels (per batch, zero padded): cheap on CPU, and what small image sets need.
    ``flips`` (a list) receives the per-example flip mask, for targets that move too."""
    if flip:
        f = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(f.to(x.device)[:, None, None, None], x.flip(3), x)
        if flips is not None:
            flips.append(f.to(x.device))
    if shift:
        h, w = x.shape[-2:]
        dy, dx = torch.randint(0, 2 * shift + 1, (2,), generator=gen).tolist()
        x = F.pad(x, (shift, shift, shift, shift))[:, :, dy : dy + h, dx : dx + w]
    return x


def _resize(x: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """Bilinear resize of a (N, C, H, W) batch to ``resolution`` squared (no-op if None/same)."""
    if resolution is None or tuple(x.shape[-2:]) == (resolution, resolution):
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


def _resize_all(x: torch.Tensor, resolution: int | None, chunk: int = 4096) -> torch.Tensor:
    """Resize a whole split once, in chunks, instead of every batch of every epoch."""
    if resolution is None or tuple(x.shape[-2:]) == (resolution, resolution):
        return x
    return torch.cat([_resize(x[i : i + chunk], resolution) for i in range(0, len(x), chunk)])


def evaluate_model(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    batch_size: int = 512,
    resolution: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[float, float]:
    """``(accuracy in [0, 1], mean cross-entropy)`` of a classifier on ``x, y``."""
    from nasforge.tasks import Classification

    m = score_model(model, x, y, Classification(), batch_size=batch_size,
                    resolution=resolution, device=device)
    return m["accuracy"], m["loss"]


def model_outputs(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    batch_size: int = 512,
    resolution: int | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """The raw outputs of ``model`` on all of ``x`` (eval, no_grad), on the CPU as float32.

    The model is moved to ``device``; inputs are resized to ``resolution`` like in
    training. The model's train/eval mode and memory layout are restored afterwards.
    """
    n = len(x)
    if n == 0:
        raise ValueError("evaluating a model needs at least one example")
    dev = torch.device(device)
    xt = _as_tensor(x, torch.float32)
    # channels_last: ~25 % faster CPU inference too (see train_model); a model that came
    # in the default layout leaves in it (safetensors and ONNX want contiguous weights)
    fmt = torch.channels_last if xt.dim() == 4 else torch.contiguous_format
    restore = _layout(model)
    model.to(dev, memory_format=fmt)
    was_training = model.training
    model.eval()
    outs = []
    try:
        with torch.no_grad():
            for i in range(0, n, batch_size):
                xb = _resize(xt[i : i + batch_size].to(dev, non_blocking=True), resolution)
                outs.append(model(xb.contiguous(memory_format=fmt)).float().cpu())
    finally:
        model.train(was_training)
        model.to(memory_format=restore)
    return torch.cat(outs)


def score_model(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    task: Any,
    batch_size: int = 512,
    resolution: int | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """The task's metrics (unprefixed: ``accuracy``, ``rmse`` ...) of ``model`` on ``x, y``."""
    if len(y) == 0:
        raise ValueError("evaluating a model needs at least one example")
    out = model_outputs(model, x, batch_size, resolution, device)
    return task.metrics(out, task.encode(y))


def _layout(model: nn.Module) -> torch.memory_format:
    """The memory format of ``model``'s 4-d weights: of the first whose two layouts differ
    (a 1-channel or 1x1 kernel reads as both), the default if none does."""
    for p in model.parameters():
        if p.dim() == 4:
            cl = p.is_contiguous(memory_format=torch.channels_last)
            if cl != p.is_contiguous():
                return torch.channels_last if cl else torch.contiguous_format
    return torch.contiguous_format


def _optimizer(
    model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0
        )
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise NasforgeError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")


def train_model(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    data_fraction: float = 1.0,
    resolution: int | None = None,
    batch_size: int = 128,
    optimizer: str = "sgd",
    lr: float | None = None,
    momentum: float = 0.9,
    weight_decay: float | None = None,
    label_smoothing: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    deadline: float | None = None,
    on_epoch: EpochCallback | None = None,
    eval_every_epoch: bool | None = None,
    seconds: float | None = None,
    augment: str = "none",
    warmup: float = 0.0,
    include_val: bool = False,
    max_val: int | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place on ``data``'s training split; return its history.

    SGD (Nesterov momentum, default lr 0.05, weight decay 5e-4) or AdamW (lr 1e-3,
    weight decay 0.05) with a per-step cosine schedule to zero over all epochs.
    ``data_fraction`` trains on a seeded stratified subset of the training split;
    ``resolution`` resizes inputs (bilinear) to a square, in training and validation.
    ``deadline`` is a ``time.monotonic()`` time: past it, :class:`TimeoutError` is raised
    (checked between steps). A non-finite training loss raises :class:`FloatingPointError`.

    The validation split is scored after every epoch when ``on_epoch`` is given (or
    ``eval_every_epoch``), else only after the last. ``on_epoch(epoch, record)`` gets
    ``{"epoch", "train_loss", "val_<metric>"...}`` (the data's task's metrics: accuracy
    and loss for classification); returning ``False`` stops.

    ``seconds`` makes the budget wall-clock time instead of epochs: training stops when
    that much time has passed (``epochs`` is then only a cap) and the learning-rate
    schedule runs over the time, so a network uses exactly its share whatever its speed
    (a bigger one sees fewer examples: the trade-off a time budget is about). ``warmup``
    is the share of the schedule with a linear warm-up. ``augment``: ``"flip"`` (random
    horizontal flips) or ``"flip+shift"`` (and random shifts of up to 2 pixels), for
    images. ``include_val`` trains on the training *and* validation splits (the final
    model: nothing is left to validate on, so the validation figures are not computed and
    are NaN); ``max_val`` scores on a fixed stratified part of
    the validation split.

    Returns ``{"epochs" (run, fractional with ``seconds``), "train_loss",
    "val_accuracy", "val_loss", "curve" (one record per epoch), "stopped_early",
    "num_train", "train_time_s", "lr", "weight_decay", "steps"}``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not 0.0 < data_fraction <= 1.0:
        raise ValueError(f"data_fraction must be in (0, 1], got {data_fraction}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds must be a positive number, got {seconds}")
    if augment not in AUGMENTS:
        raise NasforgeError(f"augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup must be in [0, 1), got {warmup}")
    optimizer = optimizer.lower()
    lr = DEFAULT_LR.get(optimizer, 0.0) if lr is None else float(lr)
    wd = DEFAULT_WEIGHT_DECAY.get(optimizer, 0.0) if weight_decay is None else float(weight_decay)
    if eval_every_epoch is None:
        eval_every_epoch = on_epoch is not None
    t_start = time.perf_counter()
    dev = torch.device(device)

    def check_deadline() -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError("training passed its deadline")

    torch.manual_seed(seed)  # dropout and other stochastic layers
    gen = torch.Generator().manual_seed(seed)  # batch order, independent of the global RNG
    task = data.make_task()
    x_all, y_all = data.x_train, data.y_train
    if include_val and len(data.y_val):
        x_all = np.concatenate([x_all, data.x_val])
        y_all = np.concatenate([y_all, data.y_val])
    idx = data.subset(y_all, data_fraction, seed)
    x = _as_tensor(x_all[idx], torch.float32)
    y = task.encode(y_all[idx])
    x_val, y_val = data.x_val, data.y_val
    if include_val:  # it trains on them: scoring them would cost time and say nothing
        x_val, y_val = x_val[:0], y_val[:0]
    if max_val is not None and 0 < max_val < len(y_val):
        keep = data.subset(y_val, max_val / len(y_val), 0)
        x_val, y_val = x_val[keep], y_val[keep]

    def validate() -> dict[str, float]:
        if not len(y_val):
            return {f"val_{k}": math.nan for k in task.metric_names}
        m = score_model(model, x_val, y_val, task, resolution=resolution, device=dev)
        return {f"val_{k}": v for k, v in m.items()}

    x = _resize_all(x, resolution)
    if dev.type != "cpu":  # the whole (small) split on the device: no per-step copies
        x, y = x.to(dev), y.to(dev)
    n = len(y)
    if n == 0:
        raise ValueError("no training examples")
    bs = min(batch_size, n)
    # a last batch of one breaks BatchNorm in train mode: drop that single example
    n_used = n - 1 if n % bs == 1 and n > 1 else n
    steps_per_epoch = math.ceil(n_used / bs)
    total_steps = epochs * steps_per_epoch
    flip = augment.startswith("flip") and x.dim() == 4
    # a spatial task's targets (boxes, masks) are flipped with the image; shifts are not
    # applied to them (a 2-pixel shift would move every box off its object)
    spatial = bool(getattr(task, "spatial", False))
    shift = 2 if augment == "flip+shift" and x.dim() == 4 and min(x.shape[-2:]) > 8 \
        and not spatial else 0
    t_sched = time.monotonic()

    def progress(step: int) -> float:
        """Share of the schedule done: by steps, or by time under a ``seconds`` budget
        (counted from the first step, so at least one step is always taken)."""
        nonlocal t_sched
        if seconds is None:
            return step / total_steps
        if step == 0:
            t_sched = time.monotonic()
        return (time.monotonic() - t_sched) / seconds

    def lr_at(p: float) -> float:
        if p < warmup:
            return lr * (p + 1.0 / total_steps) / warmup
        return 0.5 * lr * (1.0 + math.cos(math.pi * min(1.0, (p - warmup) / (1.0 - warmup))))

    # channels_last makes oneDNN's CPU convolutions (depthwise ones above all) 1.5-2.7x
    # faster here; weights go back to the default layout afterwards (safetensors, ONNX).
    fmt = torch.channels_last if x.dim() == 4 else torch.contiguous_format
    model.to(dev, memory_format=fmt)
    opt = _optimizer(model, optimizer, lr, momentum, wd)
    loss_fn = task.loss(label_smoothing)
    curve: list[dict[str, float]] = []
    step = 0
    stopped = False
    check_deadline()
    out_of_time = False
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)[:n_used]
        if dev.type != "cpu":
            perm = perm.to(dev)
        loss_sum = torch.zeros((), device=dev)
        seen = 0
        for i in range(0, n_used, bs):
            check_deadline()
            p = progress(step)
            if seconds is not None and p >= 1.0:
                out_of_time = True
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(p)
            b = perm[i : i + bs]
            xb, yb = x[b], y[b]
            if flip or shift:
                flips: list[torch.Tensor] = []
                xb = _augment(xb, gen, flip, shift, flips if spatial else None)
                if flips:
                    yb = task.flip_targets(yb, flips[0])
            xb = xb.contiguous(memory_format=fmt)
            loss = loss_fn(model(xb), yb)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss ({loss.item()}) at epoch {epoch}, step "
                    f"{i // bs + 1}; the network diverged (try a lower lr, now {lr:g})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(b)
            seen += len(b)
            step += 1
        if seen == 0 and curve:  # the time ran out right at an epoch boundary
            break
        rec: dict[str, float] = {"epoch": epoch if not out_of_time else
                                 epoch - 1 + seen / n_used,
                                 "train_loss": float(loss_sum) / max(seen, 1)}
        last = epoch == epochs or out_of_time
        if eval_every_epoch or last:
            check_deadline()
            rec.update(validate())
        curve.append(rec)
        if out_of_time:
            break
        if on_epoch is not None and on_epoch(epoch, dict(rec)) is False and not last:
            stopped = True
            break
    if "val_loss" not in curve[-1]:  # stopped at an epoch boundary: score it now
        curve[-1].update(validate())
    model.to(memory_format=torch.contiguous_format)
    final = curve[-1]
    return {
        "epochs": float(final["epoch"]) if seconds is not None else len(curve),
        "steps": step,
        "train_loss": final["train_loss"],
        **{k: v for k, v in final.items() if k.startswith("val_")},
        "curve": curve,
        "stopped_early": stopped,
        "num_train": n,
        "train_time_s": time.perf_counter() - t_start,
        "lr": lr,
        "weight_decay": wd,
    }
