"""Once-for-All (Cai et al., ICLR 2020) on the ``mobile`` space: train once, specialize many times.

One elastic supernet holds every sub-network of :class:`~nasforge.spaces.mobile.MobileSpace`:

- **elastic kernel**: a block stores only its largest depthwise kernel; a smaller kernel is
  the *centre crop* of the next larger one passed through a learned *kernel transformation
  matrix* (one ``k^2 x k^2`` matrix per block and size step, shared by all channels,
  identity at init), as in OFA. ``kernel_transform=False`` gives plain centre crops.
- **elastic expansion**: a block stores the largest expansion; a smaller one uses the
  *first* ``in_channels * e`` hidden channels. Before the expansion phase the channels are
  sorted by importance (L1 norm of their projection weights, OFA's rule), so "first k"
  means "the k most important" (:meth:`OFASupernet.sort_channels`, function-preserving).
- **elastic depth**: a stage runs its first ``d`` blocks and skips the rest (they are
  residual blocks, so skipping is the identity).

:func:`train_progressive` trains it once with *progressive shrinking*: the largest network
first, then elastic kernel, then depth, then expansion, one (or ``subnets_per_step``)
sampled sub-network(s) per step, optionally distilled from the largest network
(``kd_ratio``). :func:`specialize` then picks a sub-network for a parameter or latency
budget *without retraining*: constrained evolution (or random search) over sub-networks
whose cost is measured on the extracted stand-alone network (params counted, CPU latency
batch 1 median via :func:`nasforge.metrics.measure_latency`, cached in a
:class:`CostModel`) and whose accuracy is the inherited-weight accuracy on the validation
split after per-sub-network BN recalibration. :meth:`OFASupernet.extract` returns the
stand-alone ``mobile`` network with the supernet's weights (bit-for-bit the same function).

:func:`run_ofa` does all of it the way :func:`~nasforge.oneshot.run_oneshot` does SPOS:
every evaluated sub-network is a trial in ``RUN_DIR/nasforge.db`` and the chosen one
(optionally fine-tuned briefly) is exported to ``RUN_DIR/best`` with
:func:`~nasforge.export.save_best`. The trained supernet is saved beside it
(``RUN_DIR/supernet``) so later runs specialize for other budgets without training
(``supernet=RUN_DIR/supernet``). ``register_cli`` adds ``nasforge ofa``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import typer  # the CLI options below are evaluated by typer from this module's globals

from nasforge.data import stratified_subset
from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.oneshot.inherited import InheritedWeights, device_tensor
from nasforge.spaces.base import Arch
from nasforge.spaces.cnn import ACTIVATIONS
from nasforge.spaces.mobile import MobileNet, MobileSpace, conv_bn_act

if TYPE_CHECKING:
    from nasforge.data import Dataset

#: progressive-shrinking phases, in training order
PHASES = ("largest", "kernel", "depth", "expand")
#: per-stage ``[(kernel, expand), ...]``: a sub-network as the supernet runs it
StageConfig = list[list[tuple[int, int]]]
SUPERNET_WEIGHTS = "supernet.safetensors"
SUPERNET_META = "supernet.json"


# ------------------------------------------------------------------------- elastic layers
class DynamicBN(nn.BatchNorm2d):
    """BatchNorm over the first ``C`` channels of its features, ``C`` read from the input.

    Running statistics are updated in place through slices of the full buffers, with the
    same momentum / cumulative-average rule as ``nn.BatchNorm2d`` (so
    :func:`~nasforge.oneshot.supernet.recalibrate_bn` works on it unchanged).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        factor = 0.0
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = (
                1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            )
        return F.batch_norm(
            x, self.running_mean[:n], self.running_var[:n], self.weight[:n], self.bias[:n],
            self.training, factor, self.eps,
        )  # fmt: skip


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, n: int) -> None:
    dst.weight.copy_(src.weight[:n])
    dst.bias.copy_(src.bias[:n])
    dst.running_mean.copy_(src.running_mean[:n])
    dst.running_var.copy_(src.running_var[:n])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


class ElasticBlock(nn.Module):
    """An inverted-residual block holding the largest kernel and expansion of its position."""

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        kernels: Sequence[int],
        expansions: Sequence[int],
        act: str,
        kernel_transform: bool = True,
    ) -> None:
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride
        self.kernels = tuple(sorted(kernels))
        self.expansions = tuple(sorted(expansions))
        self.kmax = self.kernels[-1]
        hmax = cin * self.expansions[-1]
        self.expand_conv = nn.Conv2d(cin, hmax, 1, bias=False)
        self.expand_bn = DynamicBN(hmax)
        self.dw_conv = nn.Conv2d(hmax, hmax, self.kmax, stride, self.kmax // 2, groups=hmax,
                                 bias=False)  # fmt: skip
        self.dw_bn = DynamicBN(hmax)
        self.project_conv = nn.Conv2d(hmax, cout, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(cout)
        self.act = ACTIVATIONS[act]()
        self.residual = stride == 1 and cin == cout
        # kernel transformation matrices, one per step down (7 -> 5, 5 -> 3), identity at init
        self.ktm: nn.ParameterDict | None = None
        if kernel_transform and len(self.kernels) > 1:
            steps = zip(self.kernels[1:], self.kernels[:-1], strict=True)
            self.ktm = nn.ParameterDict(
                {f"{big}to{small}": nn.Parameter(torch.eye(small * small)) for big, small in steps}
            )

    def dw_weight(self, k: int, hidden: int) -> torch.Tensor:
        """The depthwise kernel of size ``k`` for the first ``hidden`` channels."""
        w = self.dw_conv.weight[:hidden]
        cur = self.kmax
        for small in reversed(self.kernels):
            if small >= cur or cur <= k:
                continue
            s = (cur - small) // 2
            w = w[:, :, s : s + small, s : s + small]
            if self.ktm is not None:
                mat = self.ktm[f"{cur}to{small}"]
                w = (w.reshape(hidden, small * small) @ mat).reshape(hidden, 1, small, small)
            cur = small
        return w

    def forward(self, x: torch.Tensor, k: int, e: int) -> torch.Tensor:
        h = self.cin * e
        y = self.act(self.expand_bn(F.conv2d(x, self.expand_conv.weight[:h])))
        y = F.conv2d(y, self.dw_weight(k, h), None, self.stride, k // 2, 1, h)
        y = self.act(self.dw_bn(y))
        y = self.project_bn(F.conv2d(y, self.project_conv.weight[:, :h]))
        return x + y if self.residual else y

    @torch.no_grad()
    def copy_to(self, m: nn.Module, k: int, e: int) -> None:
        """Write this block's weights for ``(k, e)`` into a stand-alone ``InvertedResidual``."""
        h = self.cin * e
        m.expand[0].weight.copy_(self.expand_conv.weight[:h])
        _copy_bn(m.expand[1], self.expand_bn, h)
        m.dw[0].weight.copy_(self.dw_weight(k, h))
        _copy_bn(m.dw[1], self.dw_bn, h)
        m.project[0].weight.copy_(self.project_conv.weight[:, :h])
        _copy_bn(m.project[1], self.project_bn, self.cout)

    @torch.no_grad()
    def sort_channels(self) -> torch.Tensor:
        """Reorder hidden channels by importance (L1 norm of projection weights), descending.

        Every layer touching the hidden channels is permuted together, so the largest
        block computes exactly the same function; returns the permutation.
        """
        importance = self.project_conv.weight.abs().sum(dim=(0, 2, 3))
        idx = torch.argsort(importance, descending=True, stable=True)
        self.expand_conv.weight.copy_(self.expand_conv.weight[idx])
        self.dw_conv.weight.copy_(self.dw_conv.weight[idx])
        self.project_conv.weight.copy_(self.project_conv.weight[:, idx])
        for bn in (self.expand_bn, self.dw_bn):
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t.copy_(t[idx])
        return idx


# ------------------------------------------------------------------------------ supernet
class OFASupernet(nn.Module):
    """The elastic network of a ``mobile`` space (see module docstring)."""

    def __init__(
        self,
        space: MobileSpace,
        input_shape: Sequence[int],
        num_classes: int,
        kernel_transform: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(space, MobileSpace):
            raise NasforgeError("Once-for-All needs the mobile space (spaces.get('mobile', ...))")
        c, _, _ = space.check_input(tuple(int(s) for s in input_shape))
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise NasforgeError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.space = space
        self.input_shape = (c, int(input_shape[1]), int(input_shape[2]))
        self.num_classes = num_classes
        self.kernel_transform = bool(kernel_transform)
        #: whether :meth:`sort_channels` ran (first-k expansion = most important k)
        self.channels_sorted = False
        self.stem = conv_bn_act(c, space.stem_channels, 3, space.stem_stride, 1, space.act)
        stages = []
        cin = space.stem_channels
        for s, cout in enumerate(space.stage_widths):
            blocks = [
                ElasticBlock(cin if i == 0 else cout, cout, space.strides[s] if i == 0 else 1,
                             space.kernels, space.expansions, space.act, kernel_transform)
                for i in range(space.max_depth)
            ]  # fmt: skip
            stages.append(nn.ModuleList(blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.head = conv_bn_act(space.stage_widths[-1], space.head_channels, 1, 1, 1, space.act)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(space.head_channels, num_classes)

    def config_of(self, arch: Arch | str | StageConfig | None) -> StageConfig:
        """A sub-network given as an Arch, its string, a stage config, or None (largest)."""
        if arch is None:
            return self.space.stage_config(self.space.largest())
        if isinstance(arch, str):
            return self.space.stage_config(self.space.parse(arch))
        if isinstance(arch, Arch):
            if arch.space != self.space.name:
                raise NasforgeError(f"not an architecture of the mobile space: {arch.text!r}")
            return self.space.stage_config(arch)
        return self.space.stage_config(self.space.from_stages(arch))  # validates

    def forward(
        self, x: torch.Tensor, arch: Arch | str | StageConfig | None = None
    ) -> torch.Tensor:
        cfg = self.config_of(arch)
        x = self.stem(x)
        for blocks, stage in zip(self.stages, cfg, strict=True):
            for blk, (k, e) in zip(blocks, stage, strict=False):
                x = blk(x, k, e)
        x = self.head(x)
        return self.classifier(torch.flatten(self.pool(x), 1))

    @torch.no_grad()
    def extract(self, arch: Arch | str | StageConfig) -> MobileNet:
        """The stand-alone ``mobile`` network of ``arch`` with the supernet's weights.

        BN statistics are copied as they are: recalibrate them for ``arch`` first
        (:meth:`SubnetEvaluator.recalibrate`). The result is on the supernet's device, in
        eval mode, and computes exactly what ``self(x, arch)`` computes in eval mode.
        """
        cfg = self.config_of(arch)
        a = self.space.from_stages(cfg)
        try:
            dev = next(self.parameters()).device
        except StopIteration:  # pragma: no cover - a supernet always has parameters
            dev = torch.device("cpu")
        with torch.random.fork_rng(devices=[]):  # building initializes weights we overwrite
            model = self.space.build(a, self.input_shape, self.num_classes)
        assert isinstance(model, MobileNet)
        model.to(dev)
        model.stem.load_state_dict(self.stem.state_dict())
        model.head.load_state_dict(self.head.state_dict())
        model.classifier.load_state_dict(self.classifier.state_dict())
        for s, stage in enumerate(cfg):
            for i, (k, e) in enumerate(stage):
                self.stages[s][i].copy_to(model.stages[s][i], k, e)
        return model.eval()

    def sort_channels(self) -> None:
        """Importance-sort every block's hidden channels (before the expansion phase)."""
        for stage in self.stages:
            for blk in stage:
                blk.sort_channels()

    # -- sampling ---------------------------------------------------------------------------
    def phase_options(
        self, phase: str, progress: float = 1.0
    ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """``(kernels, depths, expansions)`` allowed in ``phase``.

        In the depth and expansion phases the smaller options are added progressively:
        at ``progress`` p in (0, 1] the largest ``1 + ceil((n - 1) * p)`` options are allowed
        (OFA's two sub-stages, e.g. depth {4, 3} then {4, 3, 2}).
        """
        sp = self.space
        if phase not in PHASES:
            raise NasforgeError(f"unknown phase {phase!r}; phases are {', '.join(PHASES)}")

        def top(opts: tuple[int, ...]) -> tuple[int, ...]:
            n = 1 + math.ceil((len(opts) - 1) * min(max(progress, 0.0), 1.0))
            return opts[-n:]

        i = PHASES.index(phase)
        kernels = sp.kernels if i >= 1 else sp.kernels[-1:]
        depths = (top(sp.depths) if i == 2 else sp.depths) if i >= 2 else sp.depths[-1:]
        exps = top(sp.expansions) if i == 3 else sp.expansions[-1:]
        return kernels, depths, exps

    def sample_config(
        self, rng: np.random.Generator, phase: str = "expand", progress: float = 1.0
    ) -> StageConfig:
        """A random sub-network among those ``phase`` trains (uniform per choice)."""
        ks, ds, es = self.phase_options(phase, progress)
        cfg: StageConfig = []
        for _ in range(self.space.num_stages):
            d = int(ds[int(rng.integers(len(ds)))])
            cfg.append([(int(ks[int(rng.integers(len(ks)))]), int(es[int(rng.integers(len(es)))]))
                        for _ in range(d)])  # fmt: skip
        return cfg


def save_supernet(supernet: OFASupernet, out_dir: str | os.PathLike[str]) -> Path:
    """Weights (safetensors) and what rebuilds the supernet (JSON) in ``out_dir``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in supernet.state_dict().items()}
    save_file(state, str(out / SUPERNET_WEIGHTS), metadata={"format": "nasforge-ofa-supernet"})
    meta = {
        "format": "nasforge-ofa-supernet",
        "space": supernet.space.name,
        "space_config": supernet.space.config(),
        "input_shape": list(supernet.input_shape),
        "num_classes": supernet.num_classes,
        "kernel_transform": supernet.kernel_transform,
        "channels_sorted": bool(getattr(supernet, "channels_sorted", False)),
    }
    (out / SUPERNET_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def load_supernet(path: str | os.PathLike[str]) -> OFASupernet:
    """A supernet saved by :func:`save_supernet` (a folder, or a run directory holding one)."""
    from safetensors.torch import load_file

    from nasforge import spaces

    p = Path(path).expanduser()
    if (p / "supernet" / SUPERNET_META).is_file():
        p = p / "supernet"
    if not (p / SUPERNET_META).is_file() or not (p / SUPERNET_WEIGHTS).is_file():
        raise NasforgeError(
            f"{p} holds no saved OFA supernet ({SUPERNET_META} + {SUPERNET_WEIGHTS}); give the "
            "supernet folder of an earlier `nasforge ofa` run (RUN_DIR/supernet)"
        )
    from nasforge.jsonio import read_json
    from nasforge.spaces.base import check_input_shape

    meta = read_json(p / SUPERNET_META, kind=dict)
    try:
        if not isinstance(meta.get("space_config"), dict) or not isinstance(meta.get("space"),
                                                                             str):
            raise ValueError("'space' must be a name and 'space_config' an object")
        space = spaces.get(meta["space"], **meta["space_config"])
        shape = check_input_shape(meta["input_shape"], meta["num_classes"])
        sn = OFASupernet(space, shape, int(meta["num_classes"]),
                         kernel_transform=bool(meta["kernel_transform"]))  # fmt: skip
        sn.load_state_dict(load_file(str(p / SUPERNET_WEIGHTS)), strict=True)
    except NasforgeError as e:
        raise NasforgeError(f"cannot load the OFA supernet in {p}: {e}") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise NasforgeError(f"cannot load the OFA supernet in {p}: {type(e).__name__}: "
                            f"{str(e)[:300]}") from None
    sn.channels_sorted = bool(meta.get("channels_sorted", False))
    return sn


# --------------------------------------------------------------- progressive shrinking
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
    was after the largest phase (needs that phase). ``deadline`` (``time.monotonic()``)
    stops early between steps. Returns ``{"phases": {phase: {"epochs", "steps", "curve",
    "time_s"}}, "train_time_s", "stopped_early"}``.
    """
    epochs = _phase_epochs(phase_epochs)
    if subnets_per_step < 1:
        raise NasforgeError(f"subnets_per_step must be >= 1, got {subnets_per_step}")
    if kd_ratio < 0:
        raise NasforgeError(f"kd_ratio must be >= 0, got {kd_ratio}")
    if kd_ratio > 0 and epochs["largest"] < 1:
        raise NasforgeError("distillation (kd_ratio > 0) needs a largest phase (the teacher)")
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
                for _ in range(subnets_per_step if phase != "largest" else 1):
                    cfg = largest if phase == "largest" else supernet.sample_config(
                        rng, phase, progress
                    )
                    out = supernet(xb, cfg)
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
                if grad_clip:
                    nn.utils.clip_grad_norm_(supernet.parameters(), grad_clip)
                opt.step()
                loss_sum += step_loss / (subnets_per_step if phase != "largest" else 1) * len(b)
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


# -------------------------------------------------------------- inherited-weight scores
class SubnetEvaluator(InheritedWeights):
    """Scores a sub-network with its inherited weights (no training).

    The BN statistics of the sub-network are recalibrated first on ``calib_batches``
    *fixed* training batches (the same for every candidate, so scores are comparable and
    repeatable); then accuracy and loss are taken in eval mode on the validation split
    (a stratified ``max_val`` examples of it, if given).
    """

    name = "ofa-inherited"
    needs_data = False
    fixed_calibration = True
    calib_key = 22

    supernet: OFASupernet

    def subnet(self, arch: Arch | str | StageConfig) -> StageConfig:
        """The stage config of ``arch``."""
        return self.supernet.config_of(arch)

    def extract(self, arch: Arch | str | StageConfig) -> MobileNet:
        """Recalibrate, then :meth:`OFASupernet.extract`: the sub-network ready to use."""
        self.recalibrate(arch)
        return self.supernet.extract(arch)


# ------------------------------------------------------------------------------- costs
class CostModel:
    """Measured cost of stand-alone sub-networks, cached by architecture (a lookup table).

    ``params`` (counted) and ``flops`` are exact properties of the extracted network;
    ``latency_ms`` is the median CPU time of a batch-1 forward
    (:func:`nasforge.metrics.measure_latency`, ``threads`` intra-op threads), measured once
    per architecture and then looked up, so a constraint check never re-rolls noise.
    Weights do not change these numbers, so a freshly built network is measured.
    """

    def __init__(
        self,
        space: MobileSpace,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        latency: bool = True,
        threads: int | None = 1,
        repeats: int = 20,
        warmup: int = 5,
    ) -> None:
        self.space = space
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = num_classes
        self.latency = latency
        self.threads = threads
        self.repeats = repeats
        self.warmup = warmup
        self.table: dict[str, dict[str, float]] = {}
        self.measured = 0

    def __call__(
        self, arch: Arch, latency: bool | None = None, flops: bool = True
    ) -> dict[str, float]:
        """``{"params"[, "flops"][, "latency_ms"]}`` of ``arch``, each measured at most once.

        ``latency=False`` / ``flops=False`` skip the slow measurements for this call (a
        constraint check counts params first); default latency: the model's ``latency``.
        """
        want_latency = self.latency if latency is None else latency and self.latency
        cost = self.table.setdefault(arch.text, {})
        wanted = {"params": True, "flops": flops, "latency_ms": want_latency}
        need = [k for k, want in wanted.items() if want and k not in cost]
        if not need:
            return cost
        from nasforge import metrics

        with torch.random.fork_rng(devices=[]):
            model = self.space.build(arch, self.input_shape, self.num_classes)
        if "params" in need:
            cost["params"] = metrics.count_params(model)
        if "flops" in need:
            cost["flops"] = metrics.count_flops(model, self.input_shape)
        if "latency_ms" in need:
            lat = metrics.measure_latency(model, self.input_shape, batch_size=1,
                                          warmup=self.warmup, repeats=self.repeats,
                                          threads=self.threads)  # fmt: skip
            cost["latency_ms"] = lat["median_ms"]
            self.measured += 1
        return cost

    def to_json(self) -> dict[str, Any]:
        return {"threads": self.threads, "repeats": self.repeats, "table": self.table}


@dataclass(frozen=True)
class Constraint:
    """An efficiency budget: at most ``max_params`` parameters and/or ``max_latency_ms``."""

    max_params: int | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        if self.max_params is None and self.max_latency_ms is None:
            raise NasforgeError("give a constraint: --max-params N and/or --max-latency-ms X")
        for name, v in (("max_params", self.max_params), ("max_latency_ms", self.max_latency_ms)):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or v <= 0:
                raise NasforgeError(f"{name} must be a positive number, got {v!r}")

    @property
    def needs_latency(self) -> bool:
        return self.max_latency_ms is not None

    def ok(self, cost: Mapping[str, float]) -> bool:
        if self.max_params is not None and cost["params"] > self.max_params:
            return False
        return self.max_latency_ms is None or cost["latency_ms"] <= self.max_latency_ms

    def check(self, arch: Arch, costs: CostModel) -> bool:
        """Whether ``arch`` fits; latency is only measured when the cheap checks pass."""
        c = costs(arch, latency=False, flops=False)
        if self.max_params is not None and c["params"] > self.max_params:
            return False
        return self.ok(costs(arch, flops=False)) if self.needs_latency else True

    def describe(self) -> str:
        parts = []
        if self.max_params is not None:
            parts.append(f"params <= {self.max_params:,}")
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms:g} ms")
        return " and ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"max_params": self.max_params, "max_latency_ms": self.max_latency_ms}


# ------------------------------------------------------------------------ specialization
@dataclass
class Specialization:
    """What :func:`specialize` found: the best feasible sub-network and every trial."""

    constraint: Constraint
    best: Arch
    best_metrics: dict[str, float]
    trials: list[tuple[Arch, Result]] = field(default_factory=list)
    rejected: int = 0
    search_time_s: float = 0.0


def specialize(
    evaluator: SubnetEvaluator,
    costs: CostModel,
    constraint: Constraint,
    *,
    strategy: str = "evolution",
    num_candidates: int = 50,
    population_size: int = 16,
    parent_ratio: float = 0.25,
    mutation_ratio: float = 0.5,
    mutate_prob: float = 0.1,
    max_tries: int = 10,
    seed: int = 0,
    on_start: Callable[[Arch, dict[str, Any]], Any] | None = None,
    on_finish: Callable[[Any, Arch, Result, dict[str, Any]], None] | None = None,
) -> Specialization:
    """Best sub-network under ``constraint`` by inherited-weight accuracy, no retraining.

    ``strategy="evolution"`` is OFA's: a population of feasible sub-networks; each
    generation keeps the best ``parent_ratio`` and refills with mutants (each choice
    resampled with probability ``mutate_prob``) and uniform crossovers of parents.
    ``"random"`` samples feasible sub-networks uniformly. Only feasible candidates are
    evaluated (``num_candidates`` distinct ones); a candidate over budget is resampled up
    to ``max_tries`` times, then shrunk one option at a time (depth, kernel or expansion
    one step down) until it fits. ``on_start(arch, state)`` / ``on_finish(token, arch,
    result, state)`` bracket each evaluation (how :func:`run_ofa` stores trials).
    Raises :class:`NasforgeError` if even the smallest sub-network is over budget.
    """
    space = evaluator.supernet.space
    if strategy not in ("evolution", "random"):
        raise NasforgeError(f"strategy must be 'evolution' or 'random', not {strategy!r}")
    if num_candidates < 1:
        raise NasforgeError(f"num_candidates must be >= 1, got {num_candidates}")
    if population_size < 2:
        raise NasforgeError(f"population_size must be >= 2, got {population_size}")
    if constraint.needs_latency and not costs.latency:
        raise NasforgeError("a latency constraint needs a CostModel that measures latency")
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 23])
    smallest = space.smallest()
    if not constraint.check(smallest, costs):
        c = costs(smallest)
        lat = f", {c['latency_ms']:.3g} ms" if "latency_ms" in c else ""
        raise NasforgeError(
            f"no sub-network fits {constraint.describe()}: the smallest one ({smallest.text}) "
            f"has {int(c['params']):,} params{lat}. Loosen the constraint or use a smaller "
            "space (e.g. a lower width_mult)."
        )
    rejected = 0
    scored: dict[Arch, float] = {}
    trials: list[tuple[Arch, Result]] = []
    state: dict[str, Any] = {"strategy": f"ofa-{strategy}", "generation": 0, "rejected": 0}

    def feasible(a: Arch) -> bool:
        nonlocal rejected
        ok = constraint.check(a, costs)
        rejected += not ok
        return ok

    def shrink(a: Arch) -> Arch:
        """Step random choices one option down until ``a`` fits (ends at the smallest)."""
        while not feasible(a):
            d = a.as_dict()
            cands = [c for c in space.choices()
                     if space.is_active(c.name, d) and c.options.index(d[c.name]) > 0]  # fmt: skip
            c = cands[int(rng.integers(len(cands)))]
            d[c.name] = c.options[c.options.index(d[c.name]) - 1]
            a = space.make(d)
        return a

    def fit(make: Callable[[], Arch]) -> Arch | None:
        """A new feasible arch from ``make`` (resampled, then shrunk); None if all seen."""
        a = make()
        for _ in range(max_tries):
            if a not in scored and feasible(a):
                return a
            a = make()
        a = shrink(a)
        return None if a in scored else a

    def evaluate(a: Arch) -> None:
        token = on_start(a, dict(state)) if on_start is not None else None
        res = evaluator.evaluate(a, space)
        if res.ok:
            res.metrics.update(costs(a))
        trials.append((a, res))
        scored[a] = float(res.metrics["val_accuracy"]) if res.ok else -math.inf
        state["rejected"] = rejected
        if on_finish is not None:
            on_finish(token, a, res, dict(state))

    def mutate(a: Arch) -> Arch:
        d = a.as_dict()
        for c in space.choices():
            if rng.random() < mutate_prob:
                d[c.name] = c.options[int(rng.integers(len(c.options)))]
        return space.make(d)

    def budget_left() -> bool:
        return len(scored) < num_candidates

    misses = 0  # consecutive failures to find a new feasible arch: the feasible set is used up
    max_misses = 10
    population: list[Arch] = []
    while budget_left() and len(population) < population_size and misses < max_misses:
        a = fit(lambda: space.sample(rng))
        if a is None:
            misses += 1
            continue
        misses = 0
        evaluate(a)
        population.append(a)
    if strategy == "random":
        while budget_left() and misses < max_misses:
            a = fit(lambda: space.sample(rng))
            if a is None:
                misses += 1
                continue
            misses = 0
            evaluate(a)
    else:
        n_parents = max(1, int(round(parent_ratio * population_size)))
        n_mut = int(round(mutation_ratio * population_size))
        while budget_left() and misses < max_misses:
            state["generation"] += 1
            parents = sorted(population, key=lambda p: -scored[p])[:n_parents]
            children: list[Arch] = []
            for j in range(population_size - n_parents):
                if not budget_left() or misses >= max_misses:
                    break
                if j < n_mut or len(parents) < 2:
                    par = parents[int(rng.integers(len(parents)))]
                    a = fit(lambda par=par: mutate(par))
                else:
                    i1, i2 = rng.choice(len(parents), 2, replace=False)
                    pa, pb = parents[int(i1)], parents[int(i2)]
                    a = fit(lambda pa=pa, pb=pb: space.crossover(pa, pb, rng))
                if a is None:
                    misses += 1
                    continue
                misses = 0
                evaluate(a)
                children.append(a)
            population = parents + children
    ok = [(a, r) for a, r in trials if r.ok]
    if not ok:
        errs = {r.error for _, r in trials}
        raise NasforgeError(f"every evaluated sub-network failed: {sorted(map(str, errs))[:3]}")
    best, best_res = max(ok, key=lambda t: t[1].metrics["val_accuracy"])  # first of ties
    return Specialization(constraint, best, dict(best_res.metrics), trials, rejected,
                          time.perf_counter() - t0)  # fmt: skip


# --------------------------------------------------------------------------- end to end
@dataclass
class OFAResult:
    """What :func:`run_ofa` did: the chosen sub-network, the search, the exported model."""

    arch: str
    run_dir: Path
    model_dir: Path | None
    constraint: Constraint
    final: dict[str, Any] = field(default_factory=dict)
    search: Specialization | None = None
    supernet_history: dict[str, Any] | None = None
    supernet_dir: Path | None = None
    search_time_s: float = 0.0
    total_time_s: float = 0.0


def run_ofa(
    dataset: str | Dataset = "auto",
    *,
    max_latency_ms: float | None = None,
    max_params: int | None = None,
    out: str | os.PathLike[str] | None = None,
    space: MobileSpace | None = None,
    width_mult: float = 0.5,
    supernet: OFASupernet | str | os.PathLike[str] | None = None,
    data_dir: str | None = None,
    image_size: int | None = None,
    max_train: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    phase_epochs: Mapping[str, int] | Sequence[int] | int = (2, 1, 1, 1),
    batch_size: int = 64,
    lr: float = 0.05,
    shrink_lr: float | None = None,
    subnets_per_step: int = 1,
    kd_ratio: float = 0.0,
    kernel_transform: bool = True,
    data_fraction: float = 1.0,
    strategy: str = "evolution",
    candidates: int = 50,
    population_size: int = 16,
    calib_batches: int = 8,
    max_val: int | None = 2000,
    latency_threads: int | None = 1,
    latency_repeats: int = 20,
    finetune_epochs: int = 0,
    finetune_lr: float = 0.01,
    onnx: bool = True,
    device: str = "cpu",
    log: Callable[[str], Any] | None = None,
) -> OFAResult:
    """Train an OFA supernet (or load one), specialize it for a budget, export the winner.

    The constraint is ``max_latency_ms`` (measured CPU latency, batch 1, median, with
    ``latency_threads`` threads) and/or ``max_params``. ``supernet`` reuses a trained one
    (an :class:`OFASupernet` or the ``RUN_DIR/supernet`` folder of an earlier run) instead
    of training with :func:`train_progressive`; a newly trained one is saved to
    ``out/supernet``. Every sub-network evaluated by :func:`specialize` is a trial in
    ``out/nasforge.db``; the best is extracted (BN recalibrated), tested once on the test
    split, optionally fine-tuned for ``finetune_epochs`` at ``finetune_lr`` (and tested
    again), and exported to ``out/best``.
    """
    from nasforge import metrics as M
    from nasforge.estimators.training import evaluate_model, train_model
    from nasforge.experiment import default_run_dir
    from nasforge.export import save_best
    from nasforge.oneshot import _load_data, _run_store

    say = log or (lambda _msg: None)
    constraint = Constraint(max_params=max_params, max_latency_ms=max_latency_ms)
    for name, v, lo in (("candidates", candidates, 1), ("finetune_epochs", finetune_epochs, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise NasforgeError(f"{name} must be an integer >= {lo}, got {v!r}")
    if strategy not in ("evolution", "random"):
        raise NasforgeError(f"strategy must be 'evolution' or 'random', not {strategy!r}")
    pe = _phase_epochs(phase_epochs)
    t_start = time.perf_counter()
    data, ds_cfg = _load_data(dataset, data_dir=data_dir, image_size=image_size,
                              max_train=max_train, val_fraction=val_fraction,
                              seed=seed)  # fmt: skip
    sn: OFASupernet | None = None
    if supernet is not None:
        sn = supernet if isinstance(supernet, OFASupernet) else load_supernet(supernet)
        if sn.input_shape != data.input_shape or sn.num_classes != data.num_classes:
            raise NasforgeError(
                f"the supernet takes {sn.input_shape} inputs and {sn.num_classes} classes, "
                f"the data set has {data.input_shape} and {data.num_classes}"
            )
        space = sn.space
    elif space is None:
        space = MobileSpace(width_mult=width_mult)
    elif not isinstance(space, MobileSpace):
        raise NasforgeError("Once-for-All searches the mobile space; pass a MobileSpace")
    settings: dict[str, Any] = {
        "method": "ofa", "phase_epochs": pe, "batch_size": batch_size, "lr": lr,
        "shrink_lr": lr / 2 if shrink_lr is None else shrink_lr,
        "subnets_per_step": subnets_per_step, "kd_ratio": kd_ratio,
        "kernel_transform": kernel_transform if sn is None else sn.kernel_transform,
        "data_fraction": data_fraction, "pretrained_supernet": sn is not None,
        "strategy": strategy, "candidates": candidates, "population_size": population_size,
        "calib_batches": calib_batches, "max_val": max_val, "latency_threads": latency_threads,
        "latency_repeats": latency_repeats, "finetune_epochs": finetune_epochs,
        "finetune_lr": finetune_lr, "onnx": onnx, "device": device,
        "constraint": constraint.to_json(),
    }  # fmt: skip
    run_dir = Path(out) if out is not None else default_run_dir("mobile-ofa")
    with _run_store(run_dir, dataset=ds_cfg, space=space, strategy=f"ofa-{strategy}",
                    estimator=SubnetEvaluator.name, seed=seed,
                    settings=settings) as store:  # fmt: skip
        res = OFAResult("", run_dir, None, constraint)
        if sn is None:
            torch.manual_seed(seed)
            sn = OFASupernet(space, data.input_shape, data.num_classes, kernel_transform)
            say(f"OFA: progressive shrinking {pe} epochs on {len(data.y_train)} examples")
            hist = train_progressive(
                sn, data, pe, batch_size=batch_size, lr=lr, shrink_lr=shrink_lr,
                subnets_per_step=subnets_per_step, kd_ratio=kd_ratio,
                data_fraction=data_fraction, seed=seed, device=device,
                on_epoch=lambda p, e, r: say(f"  {p} epoch {e}: train loss {r['train_loss']:.3f}"),
            )  # fmt: skip
            res.supernet_history = hist
            res.supernet_dir = save_supernet(sn, run_dir / "supernet")
            store.set_meta(supernet=hist)
        evaluator = SubnetEvaluator(sn, data, calib_batches=calib_batches, batch_size=batch_size,
                                    max_val=max_val, seed=seed, device=device)  # fmt: skip
        costs = CostModel(space, data.input_shape, data.num_classes, latency=True,
                          threads=latency_threads, repeats=latency_repeats)  # fmt: skip
        say(f"OFA: specializing for {constraint.describe()} ({strategy}, {candidates} candidates)")

        told = [0]

        def on_start(arch: Arch, st: dict[str, Any]) -> int:
            return store.start_trial(arch.text, arch.to_json(), None, st, told[0])

        def on_finish(tid: int, arch: Arch, result: Result, st: dict[str, Any]) -> None:
            told[0] += 1
            store.finish_trial(tid, result, st, told[0])
            m = result.metrics
            say(f"  trial {tid}: inherited val acc {m.get('val_accuracy', float('nan')):.3f}  "
                f"{m.get('latency_ms', float('nan')):.2f} ms  {int(m.get('params', 0)):,} params"
                f"  {arch.text}")  # fmt: skip

        search = specialize(evaluator, costs, constraint, strategy=strategy,
                            num_candidates=candidates, population_size=population_size,
                            seed=seed, on_start=on_start, on_finish=on_finish)  # fmt: skip
        res.search = search
        res.arch = search.best.text
        res.search_time_s = time.perf_counter() - t_start
        store.set_meta(status="searched", elapsed_s=res.search_time_s,
                       latency_table=costs.to_json(), rejected=search.rejected)  # fmt: skip
        say(f"OFA: chose {search.best.text} (inherited val acc "
            f"{search.best_metrics['val_accuracy']:.3f})")  # fmt: skip

        # the chosen sub-network: inherited weights, tested once; optionally fine-tuned
        store.set_meta(status="final_training")
        model = evaluator.extract(search.best).to("cpu")
        test_inh, _ = evaluate_model(model, data.x_test, data.y_test)
        final: dict[str, Any] = {
            "val_accuracy": search.best_metrics["val_accuracy"],
            "inherited_val_accuracy": search.best_metrics["val_accuracy"],
            "inherited_test_accuracy": test_inh,
            "test_accuracy": test_inh,
            "params": M.count_params(model),
            "flops": M.count_flops(model, data.input_shape),
            "latency_ms": search.best_metrics.get("latency_ms"),
            "finetune_epochs": 0,
        }
        if finetune_epochs > 0:
            say(f"fine-tuning {search.best.text} for {finetune_epochs} epoch(s)")
            t0 = time.perf_counter()
            hist_ft = train_model(model, data, epochs=finetune_epochs, batch_size=batch_size,
                                  lr=finetune_lr, seed=seed, device=device)  # fmt: skip
            model.to("cpu").eval()
            test_ft, test_loss = evaluate_model(model, data.x_test, data.y_test)
            final.update(val_accuracy=hist_ft["val_accuracy"], test_accuracy=test_ft,
                         test_loss=test_loss, finetune_epochs=finetune_epochs,
                         finetune_time_s=time.perf_counter() - t0)  # fmt: skip
        extra = {"method": "ofa", "constraint": constraint.to_json(),
                 "search_time_s": res.search_time_s, "run_dir": str(store.run_dir),
                 "supernet": str(res.supernet_dir) if res.supernet_dir else None}  # fmt: skip
        model_dir = Path(save_best(store.run_dir / "best", model.eval(), search.best, space, data,
                                   final, extra, onnx=onnx))  # fmt: skip
        res.final, res.model_dir = final, model_dir
        best_tid = next((t.id for t in store.trials() if t.arch == search.best.text), None)
        store.set_meta(final={"arch": search.best.text, "trial_id": best_tid, "metrics": final,
                              "model_dir": str(model_dir)})  # fmt: skip
        say(f"final: test accuracy {final['test_accuracy']:.4f}; model in {model_dir}")
        res.total_time_s = time.perf_counter() - t_start
        store.set_meta(status="finished", elapsed_s=res.total_time_s)
        return res


# ---------------------------------------------------------------------------------- CLI
def _parse_phase_epochs(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        vals = []
    if len(vals) not in (1, len(PHASES)):
        raise NasforgeError(
            f"--phase-epochs must be one number or {len(PHASES)} comma-separated numbers "
            f"({','.join(PHASES)}), e.g. 2,1,1,1; got {text!r}"
        )
    return vals * len(PHASES) if len(vals) == 1 else vals


def register_cli(app: typer.Typer) -> None:
    """Add ``nasforge ofa`` to ``app``."""

    @app.command("ofa")
    def ofa_cmd(
        dataset: Annotated[
            str, typer.Option(help="fashion-mnist, digits, auto or a folder.")
        ] = "auto",
        max_latency_ms: Annotated[
            float | None,
            typer.Option(help="Latency budget: CPU, batch 1, median ms (measured here)."),
        ] = None,
        max_params: Annotated[int | None, typer.Option(help="Parameter budget.")] = None,
        out: Annotated[Path | None, typer.Option(help="Run directory (default runs/...).")] = None,
        supernet: Annotated[
            Path | None,
            typer.Option(help="Reuse the trained supernet of an earlier run (RUN_DIR/supernet)."),
        ] = None,
        width_mult: Annotated[float, typer.Option(help="Width multiplier of the space.")] = 0.5,
        phase_epochs: Annotated[
            str, typer.Option(help="Epochs per phase: largest,kernel,depth,expand.")
        ] = "2,1,1,1",
        kd_ratio: Annotated[float, typer.Option(help="Distillation from the largest net.")] = 0.0,
        candidates: Annotated[int, typer.Option(help="Sub-networks to evaluate.")] = 50,
        strategy: Annotated[str, typer.Option(help="evolution or random.")] = "evolution",
        finetune_epochs: Annotated[int, typer.Option(help="Fine-tune the winner (0: no).")] = 0,
        max_val: Annotated[int, typer.Option(help="Validation examples per score.")] = 2000,
        latency_threads: Annotated[int, typer.Option(help="Threads for latency.")] = 1,
        image_size: Annotated[int | None, typer.Option(help="Resize images to this side.")] = None,
        max_train: Annotated[int | None, typer.Option(help="Cap the training pool.")] = None,
        batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
        data_dir: Annotated[str | None, typer.Option(help="Where the data set lives.")] = None,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        onnx: Annotated[bool, typer.Option(help="Also export model.onnx.")] = True,
        device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
    ) -> None:
        """Once-for-All on the mobile space: train once, specialize for a budget, export."""
        import sys

        res = run_ofa(
            dataset, max_latency_ms=max_latency_ms, max_params=max_params, out=out,
            supernet=supernet, width_mult=width_mult,
            phase_epochs=_parse_phase_epochs(phase_epochs), kd_ratio=kd_ratio,
            candidates=candidates, strategy=strategy, finetune_epochs=finetune_epochs,
            max_val=max_val, latency_threads=latency_threads, image_size=image_size,
            max_train=max_train, batch_size=batch_size, data_dir=data_dir, seed=seed,
            onnx=onnx, device=device, log=lambda m: print(m, file=sys.stderr, flush=True),
        )  # fmt: skip
        f = res.final
        print(f"best architecture: {res.arch}")
        lat = f.get("latency_ms")
        print(f"params: {int(f['params']):,}" + (f"  latency: {lat:.2f} ms" if lat else ""))
        print(f"test accuracy: {f['test_accuracy']:.4f} (inherited weights: "
              f"{f['inherited_test_accuracy']:.4f})")  # fmt: skip
        if res.model_dir is not None:
            print(f"model: {res.model_dir}  (nasforge predict {res.model_dir} IMAGE.png)")
        if res.supernet_dir is not None:
            print(f"supernet: {res.supernet_dir}  (reuse with --supernet)")


__all__ = [
    "PHASES",
    "Constraint",
    "CostModel",
    "DynamicBN",
    "ElasticBlock",
    "OFAResult",
    "OFASupernet",
    "Specialization",
    "SubnetEvaluator",
    "load_supernet",
    "register_cli",
    "run_ofa",
    "save_supernet",
    "specialize",
    "train_progressive",
]
