"""Progressive shrinking: train the OFA supernet once, largest network first."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nasforge.data import stratified_subset
from nasforge.errors import NasforgeError
from nasforge.oneshot.inherited import device_tensor
from nasforge.oneshot.ofa.supernet import PHASES, OFASupernet, StageConfig

if TYPE_CHECKING:
    from nasforge.data import Dataset


# --------------------------------------------------------------- progressive shrinking
def smallest_config(supernet: OFASupernet, phase: str, progress: float = 1.0) -> StageConfig:
    """The smallest sub-network ``phase`` trains: its smallest kernel, depth and expansion."""
    ks, ds, es = supernet.phase_options(phase, progress)
    return [[(int(ks[0]), int(es[0]))] * int(ds[0]) for _ in range(supernet.space.num_stages)]


def check_sandwich(sandwich: bool, inplace_kd: bool) -> None:
    """Refuse in-place distillation without the sandwich rule (its teacher); called by
    :func:`train_progressive` and up front by ``run_ofa``, before a run folder exists."""
    if inplace_kd and not sandwich:
        raise NasforgeError(
            "in-place distillation (--inplace-kd) learns from the largest sub-network "
            "that the sandwich rule trains each step: add --sandwich"
        )


def _step_configs(
    supernet: OFASupernet,
    rng: np.random.Generator,
    phase: str,
    progress: float,
    largest: StageConfig,
    n_random: int,
    sandwich: bool,
) -> list[StageConfig]:
    """The sub-networks one step trains: the largest alone in the largest phase; else
    ``n_random`` random ones, after the largest and the smallest with the sandwich rule."""
    if phase == "largest":
        return [largest]
    randoms = [supernet.sample_config(rng, phase, progress) for _ in range(n_random)]
    if not sandwich:
        return randoms
    return [largest, smallest_config(supernet, phase, progress), *randoms]


def _phase_epochs(phase_epochs: Mapping[str, int] | Sequence[int] | int) -> dict[str, int]:
    if isinstance(phase_epochs, int) and not isinstance(phase_epochs, bool):
        out = dict.fromkeys(PHASES, phase_epochs)
    elif isinstance(phase_epochs, Mapping):
        unknown = sorted(set(phase_epochs) - set(PHASES))
        if unknown:
            raise NasforgeError(f"unknown phase(s) {unknown}; phases are {', '.join(PHASES)}")
        out = {p: phase_epochs.get(p, 0) for p in PHASES}
    else:
        vals = list(phase_epochs)
        if len(vals) != len(PHASES):
            raise NasforgeError(
                f"phase_epochs needs {len(PHASES)} numbers ({', '.join(PHASES)}), got {vals}"
            )
        out = dict(zip(PHASES, vals, strict=True))
    for p, v in out.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise NasforgeError(f"epochs of phase {p!r} must be an integer >= 0, got {v!r}")
    if not any(out.values()):
        raise NasforgeError("progressive shrinking needs at least one epoch in some phase")
    return out


def _soft_ce(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the teacher's soft labels (OFA's distillation loss)."""
    return -(F.softmax(target_logits, dim=1) * F.log_softmax(logits, dim=1)).sum(1).mean()


def train_progressive(
    supernet: OFASupernet,
    data: Dataset,
    phase_epochs: Mapping[str, int] | Sequence[int] | int = (2, 1, 1, 1),
    *,
    batch_size: int = 64,
    lr: float = 0.05,
    shrink_lr: float | None = None,
    momentum: float = 0.9,
    weight_decay: float = 5e-5,
    grad_clip: float | None = 5.0,
    subnets_per_step: int = 1,
    kd_ratio: float = 0.0,
    sandwich: bool = False,
    inplace_kd: bool = False,
    data_fraction: float = 1.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    deadline: float | None = None,
    on_epoch: Callable[[str, int, dict[str, float]], Any] | None = None,
) -> dict[str, Any]:
    """Progressive shrinking: train the largest network, then kernel, depth, expansion.

    Each phase runs its epochs (``phase_epochs``: 4 numbers, a mapping or one number for
    all) with its own SGD (Nesterov) and per-step cosine schedule from ``lr`` (largest
    phase) or ``shrink_lr`` (later phases; default ``lr / 2``, OFA also lowers it). Every
    step samples ``subnets_per_step`` sub-networks among those the phase trains
    (:meth:`OFASupernet.sample_config`) and accumulates their gradients; the hidden
    channels are importance-sorted when the expansion phase starts. With ``kd_ratio > 0``
    the loss adds ``kd_ratio`` x soft cross-entropy to a frozen copy of the network as it
    was after the largest phase (needs that phase).

    ``sandwich`` (the sandwich rule of Yu & Huang 2019, BigNAS): every step of a
    shrinking phase also trains the largest and the smallest sub-network the phase allows,
    besides the ``subnets_per_step`` random ones, so both ends of the space get a gradient
    each step (the random ones then cover the middle). ``inplace_kd`` (in-place
    distillation, needs ``sandwich``): the other sub-networks learn from the largest's
    soft labels of the same batch (detached) instead of the hard labels, a teacher that
    improves as training goes and costs no extra forward pass. ``deadline``
    (``time.monotonic()``) stops early between steps. Returns ``{"phases": {phase:
    {"epochs", "steps", "curve", "time_s"}}, "train_time_s", "stopped_early"}``.
    """
    epochs = _phase_epochs(phase_epochs)
    if subnets_per_step < 1:
        raise NasforgeError(f"subnets_per_step must be >= 1, got {subnets_per_step}")
    if kd_ratio < 0:
        raise NasforgeError(f"kd_ratio must be >= 0, got {kd_ratio}")
    if kd_ratio > 0 and epochs["largest"] < 1:
        raise NasforgeError("distillation (kd_ratio > 0) needs a largest phase (the teacher)")
    check_sandwich(sandwich, inplace_kd)
    if not 0.0 < data_fraction <= 1.0:
        raise NasforgeError(f"data_fraction must be in (0, 1], got {data_fraction}")
    shrink_lr = lr / 2 if shrink_lr is None else shrink_lr
    dev = torch.device(device)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 21])
    idx = stratified_subset(data.y_train, data_fraction, seed)
    x = device_tensor(data.x_train[idx], torch.float32, dev)
    y = device_tensor(data.y_train[idx], torch.long, dev)
    n = len(y)
    bs = min(batch_size, n)
    n_used = n - 1 if n % bs == 1 and n > 1 else n  # no BN batch of one
    steps_per_epoch = math.ceil(n_used / bs)
    # channels_last: oneDNN's depthwise convolutions run ~2x faster on CPU in that layout
    fmt = torch.channels_last
    supernet.to(dev, memory_format=fmt).train()
    teacher: OFASupernet | None = None
    largest = supernet.config_of(None)
    history: dict[str, Any] = {"phases": {}, "stopped_early": False}
    stopped = False
    for phase in PHASES:
        n_ep = epochs[phase]
        if n_ep == 0 or stopped:
            continue
        if phase == "expand" and len(supernet.space.expansions) > 1:
            supernet.sort_channels()
            supernet.channels_sorted = True
        if kd_ratio > 0 and phase != "largest" and teacher is None:
            teacher = copy.deepcopy(supernet).eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        base_lr = lr if phase == "largest" else shrink_lr
        decay, no_decay = [], []
        for name, p in supernet.named_parameters():
            (no_decay if p.ndim <= 1 or ".ktm." in name else decay).append(p)
        opt = torch.optim.SGD(
            [{"params": decay, "weight_decay": weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=base_lr, momentum=momentum, nesterov=momentum > 0,
        )  # fmt: skip
        total = n_ep * steps_per_epoch
        step = 0
        t_phase = time.perf_counter()
        curve: list[dict[str, float]] = []
        for epoch in range(1, n_ep + 1):
            progress = epoch / n_ep
            perm = torch.from_numpy(rng.permutation(n)[:n_used]).to(dev)
            loss_sum, seen = 0.0, 0
            for i in range(0, n_used, bs):
                if deadline is not None and time.monotonic() > deadline:
                    stopped = True
                    break
                for g in opt.param_groups:
                    g["lr"] = 0.5 * base_lr * (1.0 + math.cos(math.pi * step / total))
                b = perm[i : i + bs]
                xb, yb = x[b].contiguous(memory_format=fmt), y[b]
                soft = None
                if teacher is not None:
                    with torch.no_grad():
                        soft = teacher(xb, largest)
                opt.zero_grad(set_to_none=True)
                step_loss = 0.0
                cfgs = _step_configs(supernet, rng, phase, progress, largest,
                                     subnets_per_step, sandwich)  # fmt: skip
                inplace: torch.Tensor | None = None
                for j, cfg in enumerate(cfgs):
                    out = supernet(xb, cfg)
                    if inplace is not None:  # sandwich: cfgs[0] was the largest
                        loss = _soft_ce(out, inplace)
                    else:
                        loss = F.cross_entropy(out, yb)
                    if soft is not None:
                        loss = loss + kd_ratio * _soft_ce(out, soft)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"OFA training diverged in phase {phase!r}, epoch {epoch} "
                            f"(lr {base_lr:g}); try a lower lr"
                        )
                    loss.backward()
                    step_loss += float(loss.detach())
                    if j == 0 and inplace_kd and len(cfgs) > 1:
                        inplace = out.detach()
                if grad_clip:
                    nn.utils.clip_grad_norm_(supernet.parameters(), grad_clip)
                opt.step()
                loss_sum += step_loss / len(cfgs) * len(b)
                seen += len(b)
                step += 1
            if seen:
                rec = {"epoch": epoch, "train_loss": loss_sum / seen,
                       "time_s": time.perf_counter() - t0}  # fmt: skip
                curve.append(rec)
                if on_epoch is not None:
                    on_epoch(phase, epoch, dict(rec))
            if stopped:
                break
        history["phases"][phase] = {
            "epochs": len(curve), "steps": step, "curve": curve, "lr": base_lr,
            "time_s": time.perf_counter() - t_phase,
        }  # fmt: skip
    history["train_time_s"] = time.perf_counter() - t0
    history["stopped_early"] = stopped
    history["num_train"] = n
    supernet.to(memory_format=torch.contiguous_format).eval()
    return history
