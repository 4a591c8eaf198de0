"""The ``mobile`` space: MobileNetV2/V3-style inverted-residual networks for edge devices.

An architecture is ``stem conv 3x3 -> S stages -> head (1x1 conv, global pool, linear)``.
Stage ``s`` has a fixed output width and stride (space options) and an elastic *depth*
(``s{s}_depth``); each of its blocks is an inverted residual (MBConv: 1x1 expansion,
depthwise kxk, linear 1x1 projection) with its own *kernel size* (``s{s}_b{i}_kernel``)
and *expansion ratio* (``s{s}_b{i}_expand``). The first block of a stage changes width
and applies the stride; the others keep the shape and add a residual connection, so
dropping a stage's last blocks (elastic depth) leaves a valid network. This is the
space Once-for-All trains one supernet for (:mod:`nasforge.oneshot.ofa`).

Blocks past a stage's depth are inactive and canonicalized to the first options. The
string form lists each stage's blocks, stages separated by ``|``:
``k3e4-k5e6|k3e3-k3e3-k7e6|k5e6-k5e6|k3e3-k3e3-k3e3-k3e3`` (the number of blocks is
the depth). ``width_mult`` scales every width (rounded to a multiple of 4), so small
versions train on a CPU; ``stem_stride=2`` (default) halves 28x28 inputs right away.
Any input with >= 1 channel and at least 8x8 pixels works (a stride-2 conv on a 1x1 map
stays 1x1).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from nasforge.errors import ArchParseError, NasforgeError
from nasforge.spaces import register
from nasforge.spaces.base import (
    Arch,
    Backbone,
    Choice,
    Level,
    SearchSpace,
    Value,
    _check_multipliers,
    last_level,
    no_head,
    scale_channels,
    scale_repeats,
)
from nasforge.spaces.cnn import ACTIVATIONS

#: smallest input side accepted by :meth:`MobileSpace.build`
MIN_SIDE = 8
#: widths are rounded to multiples of this (hardware-friendly and keeps slicing simple)
DIVISOR = 4
_BLOCK = re.compile(r"^k([0-9]{1,9})e([0-9]{1,9})$")  # ASCII, short: int() cannot fail


@dataclass(frozen=True)
class MBBlock:
    """One active inverted-residual block as the builder sees it."""

    stage: int
    index: int
    in_channels: int
    out_channels: int
    kernel: int
    expand: int
    stride: int

    @property
    def hidden(self) -> int:
        """Channels after the 1x1 expansion (what the depthwise conv works on)."""
        return self.in_channels * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels


def scale_width(width: int, mult: float, divisor: int = DIVISOR) -> int:
    """``width * mult`` rounded to the nearest multiple of ``divisor`` (never below it)."""
    return max(divisor, int(round(width * mult / divisor)) * divisor)


# -- option checks ---------------------------------------------------------------------------
#: bounds on every integer option (a hostile ``expansions=[1000000]`` is refused here;
#: what a network built from valid options costs is checked by ``SearchSpace`` itself)
MAX_INT_OPTION = 16384
MAX_OPTIONS = 256


def _ints(name: str, value: Any, *, odd: bool = False, lo: int = 1,
          hi: int = MAX_INT_OPTION) -> tuple[int, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise NasforgeError(f"mobile: {name} must be a list of integers, got {value!r}")
    if len(value) > MAX_OPTIONS:
        raise NasforgeError(f"mobile: {name} has more than {MAX_OPTIONS} values")
    opts = tuple(value)
    if not opts:
        raise NasforgeError(f"mobile: {name} needs at least one value")
    for o in opts:
        if isinstance(o, bool) or not isinstance(o, int) or not lo <= o <= hi:
            raise NasforgeError(f"mobile: {name} must be integers from {lo} to {hi}, got {o!r}")
        if odd and o % 2 == 0:
            raise NasforgeError(f"mobile: {name} must be odd (same padding), got {o}")
    return opts


def _unique_sorted(name: str, opts: tuple[int, ...]) -> tuple[int, ...]:
    if len(set(opts)) != len(opts):
        raise NasforgeError(f"mobile: {name} has duplicate options: {list(opts)}")
    return tuple(sorted(opts))


# -- network ---------------------------------------------------------------------------------
def conv_bn_act(
    cin: int, cout: int, k: int, stride: int, groups: int, act: str | None
) -> nn.Sequential:
    """conv (no bias) -> BN [-> activation]; the unit every layer of the space is made of."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(ACTIVATIONS[act]())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MBConv: 1x1 expand -> depthwise kxk (stride) -> linear 1x1 project [+ input]."""

    def __init__(self, b: MBBlock, act: str) -> None:
        super().__init__()
        self.residual = b.residual
        self.expand = conv_bn_act(b.in_channels, b.hidden, 1, 1, 1, act)
        self.dw = conv_bn_act(b.hidden, b.hidden, b.kernel, b.stride, b.hidden, act)
        self.project = conv_bn_act(b.hidden, b.out_channels, 1, 1, 1, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.dw(self.expand(x)))
        return x + y if self.residual else y


class MobileNet(Backbone):
    """Stem -> stages of inverted residuals -> 1x1 head conv -> global pool -> linear.

    Each stage's output is a level (``levels``); ``forward_head`` is the 1x1 head conv, the
    pool and the classifier on the last one. ``num_classes=None`` builds the backbone alone
    (stem and stages, the same parameter names, no head modules).
    """

    def __init__(self, stem: nn.Module, stages: nn.Sequential, head: nn.Module | None,
                 head_width: int, num_classes: int | None, *,
                 levels: Sequence[Level] = ()) -> None:
        super().__init__()
        self.stem = stem
        self.stages = stages
        self.levels = list(levels)
        self.has_head = num_classes is not None and head is not None
        if not self.has_head:
            return
        self.head = head
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(head_width, num_classes)  # type: ignore[arg-type]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out

    def forward_head(self, features: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits from the last stage's output (the feature list or that one tensor)."""
        if not self.has_head:
            raise no_head(self)
        x = self.head(last_level(features))
        return self.classifier(torch.flatten(self.pool(x), 1))

    def forward(self, x: torch.Tensor) -> Any:
        feats = self.forward_features(x)
        return self.forward_head(feats) if self.has_head else feats


# -- the space -------------------------------------------------------------------------------
@register("mobile")
class MobileSpace(SearchSpace):
    """Inverted-residual space: per-stage elastic depth, per-block kernel and expansion."""

    name = "mobile"

    def __init__(
        self,
        widths: Sequence[int] = (16, 24, 40, 64),
        strides: Sequence[int] = (1, 2, 2, 1),
        depths: Sequence[int] = (2, 3, 4),
        kernels: Sequence[int] = (3, 5, 7),
        expansions: Sequence[int] = (3, 4, 6),
        stem_width: int = 16,
        stem_stride: int = 2,
        head_width: int = 128,
        width_mult: float = 1.0,
        act: str = "relu6",
    ) -> None:
        self.widths = _ints("widths", widths)
        self.strides = _ints("strides", strides)
        if len(self.strides) != len(self.widths):
            raise NasforgeError(
                f"mobile: strides ({len(self.strides)}) must give one stride per stage "
                f"(widths has {len(self.widths)})"
            )
        if any(s not in (1, 2) for s in self.strides):
            raise NasforgeError(f"mobile: strides must be 1 or 2, got {list(self.strides)}")
        self.depths = _unique_sorted("depths", _ints("depths", depths, hi=64))
        self.kernels = _unique_sorted("kernels", _ints("kernels", kernels, odd=True))
        self.expansions = _unique_sorted("expansions", _ints("expansions", expansions, hi=64))
        (self.stem_width,) = _ints("stem_width", [stem_width])
        (self.stem_stride,) = _ints("stem_stride", [stem_stride])
        if self.stem_stride not in (1, 2):
            raise NasforgeError(f"mobile: stem_stride must be 1 or 2, got {stem_stride}")
        (self.head_width,) = _ints("head_width", [head_width])
        if isinstance(width_mult, bool) or not isinstance(width_mult, int | float) or not (
            0 < width_mult <= 16 and math.isfinite(width_mult)
        ):
            raise NasforgeError(
                f"mobile: width_mult must be a number in (0, 16], got {width_mult!r}"
            )
        self.width_mult = float(width_mult)
        if act not in ACTIVATIONS:
            raise NasforgeError(f"mobile: unknown act {act!r}; choose from {list(ACTIVATIONS)}")
        self.act = act

        cs: list[Choice] = []
        self._pos: dict[str, tuple[int, int | None]] = {}
        for s in range(self.num_stages):
            cs.append(Choice(f"s{s}_depth", self.depths))
            self._pos[f"s{s}_depth"] = (s, None)
            for i in range(self.max_depth):
                for f, opts in (("kernel", self.kernels), ("expand", self.expansions)):
                    cs.append(Choice(f"s{s}_b{i}_{f}", opts))
                    self._pos[f"s{s}_b{i}_{f}"] = (s, i)
        self._choices = tuple(cs)
        self._first = {c.name: c.options[0] for c in cs}

    # -- shape of the space --------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.widths)

    @property
    def max_depth(self) -> int:
        return self.depths[-1]

    @property
    def stage_widths(self) -> tuple[int, ...]:
        """Per-stage output channels after ``width_mult``."""
        return tuple(scale_width(w, self.width_mult) for w in self.widths)

    @property
    def stem_channels(self) -> int:
        return scale_width(self.stem_width, self.width_mult)

    @property
    def head_channels(self) -> int:
        return scale_width(self.head_width, self.width_mult)

    def config(self) -> dict[str, Any]:
        return {
            "widths": list(self.widths),
            "strides": list(self.strides),
            "depths": list(self.depths),
            "kernels": list(self.kernels),
            "expansions": list(self.expansions),
            "stem_width": self.stem_width,
            "stem_stride": self.stem_stride,
            "head_width": self.head_width,
            "width_mult": self.width_mult,
            "act": self.act,
        }

    def choices(self) -> tuple[Choice, ...]:
        return self._choices

    # -- conditionality ------------------------------------------------------------------------
    def is_active(self, name: str, values: Mapping[str, Value]) -> bool:
        """A block's kernel/expansion only matter for blocks within its stage's depth."""
        s, i = self._pos[name]
        return i is None or i < int(values[f"s{s}_depth"])

    def canonicalize(self, values: dict[str, Value]) -> dict[str, Value]:
        return {k: (v if self.is_active(k, values) else self._first[k]) for k, v in values.items()}

    @property
    def size(self) -> int:
        """Distinct canonical archs: ``(sum_d (K*E)**d) ** S``."""
        per_block = len(self.kernels) * len(self.expansions)
        return sum(per_block**d for d in self.depths) ** self.num_stages

    def enumerate(self) -> Iterator[Arch]:
        """Every canonical arch once, generated directly (lazily)."""
        blocks = list(itertools.product(self.kernels, self.expansions))
        per_stage = [chain for d in self.depths for chain in itertools.product(blocks, repeat=d)]
        for stages in itertools.product(per_stage, repeat=self.num_stages):
            yield self.from_stages(stages)

    # -- structure -----------------------------------------------------------------------------
    def stage_config(self, arch: Arch) -> list[list[tuple[int, int]]]:
        """``[[(kernel, expand) per active block] per stage]``: what a supernet needs."""
        d = arch.as_dict()
        return [
            [(int(d[f"s{s}_b{i}_kernel"]), int(d[f"s{s}_b{i}_expand"]))
             for i in range(int(d[f"s{s}_depth"]))]
            for s in range(self.num_stages)
        ]  # fmt: skip

    def from_stages(self, stages: Sequence[Sequence[tuple[int, int]]]) -> Arch:
        """The arch with ``[(kernel, expand), ...]`` per stage (inverse of stage_config)."""
        if len(stages) != self.num_stages:
            raise ArchParseError(f"mobile: expected {self.num_stages} stages, got {len(stages)}")
        vals: dict[str, Value] = dict(self._first)
        for s, blocks in enumerate(stages):
            vals[f"s{s}_depth"] = len(blocks)
            for i, (k, e) in enumerate(blocks):
                if i >= self.max_depth:
                    break  # make() reports the bad depth
                vals[f"s{s}_b{i}_kernel"] = k
                vals[f"s{s}_b{i}_expand"] = e
        return self.make(vals)

    def blocks(self, arch: Arch) -> list[MBBlock]:
        """Every active block of ``arch`` in order, with its channels and stride."""
        out: list[MBBlock] = []
        cin = self.stem_channels
        cfgs = zip(self.stage_config(arch), self.stage_widths, strict=True)
        for s, (cfg, cout) in enumerate(cfgs):
            for i, (k, e) in enumerate(cfg):
                stride = self.strides[s] if i == 0 else 1
                c_in = cin if i == 0 else cout
                out.append(MBBlock(s, i, c_in, cout, k, e, stride))
            cin = cout
        return out

    def largest(self) -> Arch:
        """Max depth, kernel and expansion everywhere (the OFA teacher)."""
        blk = (self.kernels[-1], self.expansions[-1])
        return self.from_stages([[blk] * self.max_depth for _ in range(self.num_stages)])

    def smallest(self) -> Arch:
        """Min depth, kernel and expansion everywhere (the cheapest network)."""
        blk = (self.kernels[0], self.expansions[0])
        return self.from_stages([[blk] * self.depths[0] for _ in range(self.num_stages)])

    # -- compound scaling ----------------------------------------------------------------------
    can_scale = True

    def scale(self, arch: Arch, depth: float, width: float) -> tuple[SearchSpace, Arch]:
        """EfficientNet's depth and width scaling (the space it was written for).

        Depth: each stage's ``d`` blocks become ``round(d * depth)``; the new ones repeat
        the stage's last block (kernel and expansion), stride 1 with the residual, as
        EfficientNet repeats its stages' blocks. Width: every stage's width, the stem's
        and the head conv's are multiplied and rounded to a multiple of 8
        (:func:`scale_channels`, from the widths after ``width_mult``). The returned space
        holds them as its ``widths``/``stem_width``/``head_width`` with ``width_mult`` 1 and
        its ``depths`` widened to the new stage depths."""
        depth, width = _check_multipliers(self.name, depth, width)
        arch = self._check(arch)
        if depth == 1 and width == 1:
            return self, arch
        stages = [cfg + [cfg[-1]] * (scale_repeats(len(cfg), depth) - len(cfg))
                  for cfg in self.stage_config(arch)]
        cfg = self.config()
        cfg.update(
            widths=[scale_channels(w, width) for w in self.stage_widths],
            stem_width=scale_channels(self.stem_channels, width),
            head_width=scale_channels(self.head_channels, width),
            width_mult=1.0,
            depths=sorted({*self.depths, *(len(st) for st in stages)}),
        )
        space = type(self)(**cfg)
        return space, space.from_stages(stages)

    # -- string form ---------------------------------------------------------------------------
    def format(self, arch: Arch) -> str:
        """``k3e4-k5e6|k3e3-k3e3-k7e6|...``: blocks of each stage, stages split by ``|``."""
        return "|".join(
            "-".join(f"k{k}e{e}" for k, e in stage) for stage in self.stage_config(arch)
        )

    def parse(self, text: str) -> Arch:
        """Inverse of :meth:`format`; raises :class:`ArchParseError` naming the bad token."""
        if not isinstance(text, str):
            raise ArchParseError(
                f"mobile: architecture must be a string, got {type(text).__name__}"
            )
        example = self.format(self.smallest())
        toks = [t.strip() for t in text.strip().split("|")]
        if len(toks) != self.num_stages:
            raise ArchParseError(
                f"mobile: bad architecture {text!r}: {len(toks)} stage(s), this space has "
                f"{self.num_stages} (stages split by '|', e.g. {example!r})"
            )
        stages: list[list[tuple[int, int]]] = []
        for s, tok in enumerate(toks):
            parts = [p.strip() for p in tok.split("-")] if tok else []
            if len(parts) not in self.depths:
                raise ArchParseError(
                    f"mobile: bad token {tok!r} in {text!r}: stage {s} has {len(parts)} block(s); "
                    f"depth must be one of {list(self.depths)}"
                )
            blocks = []
            for p in parts:
                m = _BLOCK.match(p)
                if m is None:
                    raise ArchParseError(
                        f"mobile: bad token {p!r} in {text!r}: a block is 'k<kernel>e<expand>', "
                        "e.g. 'k5e6'"
                    )
                k, e = int(m[1]), int(m[2])
                if k not in self.kernels:
                    raise ArchParseError(
                        f"mobile: bad token {p!r} in {text!r}: kernel {k} is not one of "
                        f"{list(self.kernels)}"
                    )
                if e not in self.expansions:
                    raise ArchParseError(
                        f"mobile: bad token {p!r} in {text!r}: expansion {e} is not one of "
                        f"{list(self.expansions)}"
                    )
                blocks.append((k, e))
            stages.append(blocks)
        return self.from_stages(stages)

    # -- building ------------------------------------------------------------------------------
    def _check(self, arch: Arch) -> Arch:
        if not isinstance(arch, Arch) or arch.space != self.name:
            raise NasforgeError(f"mobile: not an architecture of the mobile space: {arch!r}")
        return self.make(arch.as_dict())

    def check_input(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """``(C, H, W)`` validated: >= 1 channel, at least 8x8 pixels."""
        shape = tuple(input_shape)
        if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) for s in shape):
            raise NasforgeError(
                f"mobile: input_shape must be (channels, height, width), got {shape}"
            )
        c, h, w = shape
        if c < 1 or h < MIN_SIDE or w < MIN_SIDE:
            raise NasforgeError(
                f"mobile: input {c}x{h}x{w} is too small: needs >= 1 channel and at least "
                f"{MIN_SIDE}x{MIN_SIDE} pixels (resize or pad the images)"
            )
        return c, h, w

    def stage_levels(self) -> list[Level]:
        """One level per stage: its width and the product of the stem's and the stages'
        strides so far (the same for every arch: depth, kernels and expansions keep it)."""
        out, stride = [], self.stem_stride
        for width, s in zip(self.stage_widths, self.strides, strict=True):
            stride *= s
            out.append(Level(width, stride))
        return out

    def _build(self, arch: Arch, input_shape: Sequence[int], num_classes: int | None,
               head: bool = True) -> MobileNet:
        """The network of ``arch``; without its head (``num_classes`` unused) for a backbone."""
        arch = self._check(arch)
        c, _, _ = self.check_input(input_shape)
        if head and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                     or num_classes < 1):
            raise NasforgeError(
                f"mobile: num_classes must be a positive integer, got {num_classes!r}"
            )
        stem = conv_bn_act(c, self.stem_channels, 3, self.stem_stride, 1, self.act)
        per_stage: list[list[nn.Module]] = [[] for _ in range(self.num_stages)]
        for b in self.blocks(arch):
            per_stage[b.stage].append(InvertedResidual(b, self.act))
        stages = nn.Sequential(*(nn.Sequential(*mods) for mods in per_stage))
        head_conv = (conv_bn_act(self.stage_widths[-1], self.head_channels, 1, 1, 1, self.act)
                     if head else None)
        return MobileNet(stem, stages, head_conv, self.head_channels,
                         num_classes if head else None, levels=self.stage_levels())

    def build(self, arch: Arch, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        return self._build(arch, input_shape, num_classes)

    def build_backbone(self, arch: Arch, input_shape: Sequence[int]) -> Backbone:
        """Stem and the inverted-residual stages without the head: one level per stage."""
        return self._build(arch, input_shape, None, head=False)
