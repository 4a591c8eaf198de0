"""The elastic OFA supernet of a ``mobile`` space: elastic layers, sampling, save and load."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nasforge.errors import NasforgeError
from nasforge.spaces.base import Arch
from nasforge.spaces.cnn import ACTIVATIONS
from nasforge.spaces.mobile import MobileNet, MobileSpace, conv_bn_act

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

