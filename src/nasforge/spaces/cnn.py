"""The ``cnn`` space: a chain-structured macro space over what practitioners tune by hand.

An architecture is ``stem conv 3x3 -> n_blocks blocks -> global avg pool -> dropout -> linear``.
Each block picks a type (plain conv-BN-act, depthwise-separable conv, MBConv inverted
residual, or max pool), a kernel size, an output width, an activation, an optional residual
connection (with a 1x1 projection when shapes differ) and an optional stride-2 downsample.

Conditional choices are canonicalized so that equal networks are equal :class:`Arch` values:
blocks at positions ``i >= n_blocks`` are inactive, and a pool block ignores kernel, width,
activation and skip (it is a 3x3 max pool that keeps its input channels). Inactive choices
are reset to their first option.

The string form reads like the network, e.g.
``stem16|mbconv-k5-w32-silu-skip-down|conv-k3-w64-relu|pool-down|drop0.25``.

Downsampling is input dependent at build time: a block's downsample flag is *ignored* once
the feature map is smaller than 2 pixels on a side, so no input of at least 8x8 is ever
shrunk below 1x1 (see :meth:`CNNSpace.trace`). Inputs smaller than 8x8 are rejected.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from nasforge.errors import ArchParseError, NasforgeError
from nasforge.spaces import register
from nasforge.spaces.base import Arch, Choice, SearchSpace, Value

BLOCK_TYPES: tuple[str, ...] = ("conv", "sepconv", "mbconv", "pool")

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
    "elu": nn.ELU,
    "leakyrelu": lambda: nn.LeakyReLU(0.1),
    "mish": nn.Mish,
    "tanh": nn.Tanh,
}

#: per-block fields, in choice order; all but ``type`` and ``down`` are inactive for pool
FIELDS: tuple[str, ...] = ("type", "kernel", "width", "act", "skip", "down")
_POOL_INACTIVE = frozenset({"kernel", "width", "act", "skip"})
_BLOCK_NAME = re.compile(r"^b(\d+)_(\w+)$")

#: smallest input side accepted by :meth:`CNNSpace.build`
MIN_SIDE = 8


@dataclass(frozen=True)
class Block:
    """One active block of an architecture, as the builder sees it."""

    type: str
    kernel: int
    width: int
    act: str
    skip: bool
    down: bool


@dataclass(frozen=True)
class Stage:
    """What :meth:`CNNSpace.trace` reports per block: the block and its output shape."""

    block: Block
    in_channels: int
    out_channels: int
    stride: int
    height: int
    width: int


# -- option validation -----------------------------------------------------------------------


def _int_options(name: str, value: Any, *, odd: bool = False) -> tuple[int, ...]:
    opts = _options(name, value)
    for o in opts:
        if isinstance(o, bool) or not isinstance(o, int) or o < 1:
            raise NasforgeError(f"cnn: {name} must be positive integers, got {o!r} in {list(opts)}")
        if odd and o % 2 == 0:
            raise NasforgeError(
                f"cnn: {name} must be odd (so 'same' padding keeps the shape), "
                f"got {o} in {list(opts)}"
            )
    return opts


def _name_options(name: str, value: Any, valid: Iterable[str]) -> tuple[str, ...]:
    opts = _options(name, value)
    valid = list(valid)
    for o in opts:
        if o not in valid:
            raise NasforgeError(f"cnn: unknown {name[:-1]} {o!r} in {name}; choose from {valid}")
    return opts


def _options(name: str, value: Any) -> tuple[Any, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise NasforgeError(f"cnn: {name} must be a list of options, got {value!r}")
    opts = tuple(value)
    if not opts:
        raise NasforgeError(f"cnn: {name} needs at least one option")
    if len(set(opts)) != len(opts):
        raise NasforgeError(f"cnn: {name} has duplicate options: {list(opts)}")
    return opts


def _count(name: str, value: Any, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise NasforgeError(f"cnn: {name} must be an integer >= {lo}, got {value!r}")
    return value


# -- network pieces --------------------------------------------------------------------------


def _conv_bn(cin: int, cout: int, k: int, stride: int, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class Residual(nn.Module):
    """``body(x) + proj(x)``; ``proj`` is identity or a strided 1x1 conv-BN when shapes differ."""

    def __init__(self, body: nn.Module, proj: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.proj = proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.proj(x)


class CNNNet(nn.Module):
    """Stem -> blocks -> global average pool -> dropout -> linear classifier."""

    def __init__(self, stem: nn.Module, blocks: nn.Module, dropout: float, channels: int,
                 num_classes: int) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = blocks
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(self.dropout(x))


def _block_module(b: Block, cin: int, stride: int, expansion: int) -> tuple[nn.Module, int]:
    """The module of one block and its output channel count."""
    if b.type == "pool":
        return nn.MaxPool2d(3, stride=stride, padding=1), cin
    act = ACTIVATIONS[b.act]
    layers: list[nn.Module]
    if b.type == "conv":
        layers = [*_conv_bn(cin, b.width, b.kernel, stride), act()]
    elif b.type == "sepconv":
        layers = [
            *_conv_bn(cin, cin, b.kernel, stride, groups=cin), act(),
            *_conv_bn(cin, b.width, 1, 1), act(),
        ]
    else:  # mbconv: expand 1x1 -> depthwise kxk -> linear 1x1 projection
        hidden = cin * expansion
        layers = [*_conv_bn(cin, hidden, 1, 1), act()] if expansion > 1 else []
        layers += [*_conv_bn(hidden, hidden, b.kernel, stride, groups=hidden), act()]
        layers += _conv_bn(hidden, b.width, 1, 1)
    body: nn.Module = nn.Sequential(*layers)
    if b.skip:
        proj: nn.Module = (
            nn.Identity() if cin == b.width and stride == 1
            else nn.Sequential(*_conv_bn(cin, b.width, 1, stride))
        )
        body = Residual(body, proj)
    return body, b.width


# -- the space -------------------------------------------------------------------------------


@register("cnn")
class CNNSpace(SearchSpace):
    """Chain-structured CNN macro space: per-block type, kernel, width, activation, skip, stride."""

    name = "cnn"

    def __init__(
        self,
        max_blocks: int = 6,
        min_blocks: int = 1,
        widths: Sequence[int] = (16, 32, 48, 64),
        kernels: Sequence[int] = (3, 5, 7),
        block_types: Sequence[str] = BLOCK_TYPES,
        activations: Sequence[str] = ("relu", "gelu", "silu", "hardswish"),
        dropouts: Sequence[float] = (0.0, 0.1, 0.25, 0.5),
        stem_widths: Sequence[int] = (8, 16, 24),
        expansion: int = 4,
    ) -> None:
        self.min_blocks = _count("min_blocks", min_blocks, 0)
        self.max_blocks = _count("max_blocks", max_blocks, 1)
        if self.min_blocks > self.max_blocks:
            raise NasforgeError(
                f"cnn: min_blocks ({min_blocks}) must not exceed max_blocks ({max_blocks})"
            )
        self.widths = _int_options("widths", widths)
        self.kernels = _int_options("kernels", kernels, odd=True)
        self.block_types = _name_options("block_types", block_types, BLOCK_TYPES)
        self.activations = _name_options("activations", activations, ACTIVATIONS)
        drops = _options("dropouts", dropouts)
        for p in drops:
            if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p < 1.0:
                raise NasforgeError(f"cnn: dropouts must be numbers in [0, 1), got {p!r}")
        self.dropouts = tuple(float(p) for p in drops)
        if len(set(self.dropouts)) != len(self.dropouts):
            raise NasforgeError(f"cnn: dropouts has duplicate options: {list(drops)}")
        self.stem_widths = _int_options("stem_widths", stem_widths)
        self.expansion = _count("expansion", expansion, 1)

        field_opts: dict[str, tuple[Value, ...]] = {
            "type": self.block_types, "kernel": self.kernels, "width": self.widths,
            "act": self.activations, "skip": (False, True), "down": (False, True),
        }
        cs = [
            Choice("n_blocks", tuple(range(self.min_blocks, self.max_blocks + 1))),
            Choice("stem_width", self.stem_widths),
        ]
        self._block_of: dict[str, tuple[int, str]] = {}
        for i in range(self.max_blocks):
            for f in FIELDS:
                cs.append(Choice(f"b{i}_{f}", field_opts[f]))
                self._block_of[f"b{i}_{f}"] = (i, f)
        cs.append(Choice("dropout", self.dropouts))
        self._choices = tuple(cs)
        self._first = {c.name: c.options[0] for c in cs}

    def config(self) -> dict[str, Any]:
        return {
            "max_blocks": self.max_blocks,
            "min_blocks": self.min_blocks,
            "widths": list(self.widths),
            "kernels": list(self.kernels),
            "block_types": list(self.block_types),
            "activations": list(self.activations),
            "dropouts": list(self.dropouts),
            "stem_widths": list(self.stem_widths),
            "expansion": self.expansion,
        }

    def choices(self) -> tuple[Choice, ...]:
        return self._choices

    # -- conditionality -----------------------------------------------------------------------
    def is_active(self, name: str, values: Mapping[str, Value]) -> bool:
        """Blocks past ``n_blocks`` are off; a pool block only uses its type and down flag."""
        pos = self._block_of.get(name)
        if pos is None:
            return True
        i, f = pos
        if i >= int(values["n_blocks"]):
            return False
        return not (f in _POOL_INACTIVE and values[f"b{i}_type"] == "pool")

    def canonicalize(self, values: dict[str, Value]) -> dict[str, Value]:
        """Reset every inactive choice to its first option (same rule as :meth:`is_active`)."""
        return {k: (v if self.is_active(k, values) else self._first[k]) for k, v in values.items()}

    def blocks(self, arch: Arch) -> list[Block]:
        """The active blocks of ``arch``, in order."""
        d = arch.as_dict()
        return [
            Block(
                type=str(d[f"b{i}_type"]), kernel=int(d[f"b{i}_kernel"]),
                width=int(d[f"b{i}_width"]), act=str(d[f"b{i}_act"]),
                skip=bool(d[f"b{i}_skip"]), down=bool(d[f"b{i}_down"]),
            )
            for i in range(int(d["n_blocks"]))
        ]

    # -- counting and enumeration -------------------------------------------------------------
    def _block_variants(self) -> list[dict[str, Value]]:
        """Canonical field values of one active block (pool variants collapse)."""
        out: list[dict[str, Value]] = []
        for t in self.block_types:
            if t == "pool":
                out += [
                    {"type": t, "kernel": self.kernels[0], "width": self.widths[0],
                     "act": self.activations[0], "skip": False, "down": dn}
                    for dn in (False, True)
                ]
                continue
            for k, w, a, s, dn in itertools.product(
                self.kernels, self.widths, self.activations, (False, True), (False, True)
            ):
                out.append({"type": t, "kernel": k, "width": w, "act": a, "skip": s, "down": dn})
        return out

    @property
    def size(self) -> int:
        """Distinct canonical archs: ``stems * dropouts * sum_n B**n``, B = variants per block."""
        n_conv = sum(1 for t in self.block_types if t != "pool")
        per_block = n_conv * len(self.kernels) * len(self.widths) * len(self.activations) * 4
        per_block += 2 if "pool" in self.block_types else 0
        chains = sum(per_block**n for n in range(self.min_blocks, self.max_blocks + 1))
        return len(self.stem_widths) * len(self.dropouts) * chains

    def enumerate(self) -> Iterator[Arch]:
        """Every canonical arch exactly once, generated directly (lazy, no 'seen' set)."""
        variants = self._block_variants()
        for n in range(self.min_blocks, self.max_blocks + 1):
            for stem, drop in itertools.product(self.stem_widths, self.dropouts):
                for chain in itertools.product(variants, repeat=n):
                    vals = dict(self._first)
                    vals.update(n_blocks=n, stem_width=stem, dropout=drop)
                    for i, bv in enumerate(chain):
                        vals.update({f"b{i}_{f}": v for f, v in bv.items()})
                    yield self.make(vals)

    # -- string form --------------------------------------------------------------------------
    def format(self, arch: Arch) -> str:
        """``stem16|<block>|...|drop0.25``; a block is ``type-kK-wW-act[-skip][-down]``
        or ``pool[-down]``, so the string reads like the network and omits inactive choices."""
        d = arch.as_dict()
        parts = [f"stem{d['stem_width']}"]
        for b in self.blocks(arch):
            tok = b.type if b.type == "pool" else f"{b.type}-k{b.kernel}-w{b.width}-{b.act}"
            if b.type != "pool" and b.skip:
                tok += "-skip"
            if b.down:
                tok += "-down"
            parts.append(tok)
        parts.append(f"drop{d['dropout']}")
        return "|".join(parts)

    def parse(self, text: str) -> Arch:
        """Inverse of :meth:`format`; raises :class:`ArchParseError` naming the bad token."""
        if not isinstance(text, str):
            raise ArchParseError(f"cnn: architecture must be a string, got {type(text).__name__}")
        toks = [t.strip() for t in text.strip().split("|")]
        if len(toks) < 2:
            raise ArchParseError(
                f"cnn: bad architecture {text!r}: expected 'stemW|block|...|dropP', "
                "e.g. 'stem16|conv-k3-w32-relu-down|pool|drop0.1'"
            )
        vals: dict[str, Value] = dict(self._first)
        vals["stem_width"] = self._num_token(toks[0], "stem", "stem_width", text)
        vals["dropout"] = self._num_token(toks[-1], "drop", "dropout", text)
        body = toks[1:-1]
        if not self.min_blocks <= len(body) <= self.max_blocks:
            raise ArchParseError(
                f"cnn: bad architecture {text!r}: {len(body)} blocks, this space allows "
                f"{self.min_blocks} to {self.max_blocks}"
            )
        vals["n_blocks"] = len(body)
        for i, tok in enumerate(body):
            vals.update({f"b{i}_{f}": v for f, v in self._parse_block(tok, text).items()})
        return self.make(vals)

    def _num_token(self, tok: str, prefix: str, choice: str, text: str) -> Value:
        opts = self._choice_map()[choice].options
        raw = tok[len(prefix):] if tok.startswith(prefix) else None
        if raw is None:
            raise ArchParseError(
                f"cnn: bad token {tok!r} in {text!r}: expected '{prefix}<value>' with value in "
                f"{list(opts)}"
            )
        try:
            num = float(raw)
        except ValueError:
            num = math.nan
        for o in opts:
            if o == num:
                return o
        raise ArchParseError(
            f"cnn: bad token {tok!r} in {text!r}: {choice} must be one of {list(opts)}"
        )

    def _parse_block(self, tok: str, text: str) -> dict[str, Value]:
        def bad(why: str) -> ArchParseError:
            return ArchParseError(f"cnn: bad token {tok!r} in {text!r}: {why}")

        parts = tok.split("-")
        btype = parts[0]
        if btype not in self.block_types:
            raise bad(f"block type {btype!r} is not one of {list(self.block_types)}")
        out: dict[str, Value] = {"type": btype, "skip": False, "down": False}
        for p in parts[1:]:
            if p in ("skip", "down"):
                key, val = p, True
            elif p in self.activations:
                key, val = "act", p
            elif m := re.fullmatch(r"([kw])([0-9]{1,9})", p):  # ASCII, short: int() cannot fail
                key = "kernel" if m[1] == "k" else "width"
                val = int(m[2])
                opts = self.kernels if key == "kernel" else self.widths
                if val not in opts:
                    raise bad(f"{key} {val} is not one of {list(opts)}")
            else:
                raise bad(
                    f"unknown part {p!r}; expected kK, wW, an activation in "
                    f"{list(self.activations)}, 'skip' or 'down'"
                )
            if key in out and (key not in ("skip", "down") or out[key]):
                raise bad(f"{key} given twice")
            if btype == "pool" and key != "down":
                raise bad(f"a pool block only takes '-down', not {p!r}")
            out[key] = val
        if btype != "pool":
            missing = [f for f in ("kernel", "width", "act") if f not in out]
            if missing:
                raise bad(f"missing {', '.join(missing)} (e.g. '{btype}-k3-w32-relu')")
        return out

    # -- building -----------------------------------------------------------------------------
    def _check(self, arch: Arch) -> Arch:
        if not isinstance(arch, Arch) or arch.space != self.name:
            raise NasforgeError(f"cnn: not an architecture of the cnn space: {arch!r}")
        return self.make(arch.as_dict())

    def _check_input(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        shape = tuple(input_shape)
        if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) for s in shape):
            raise NasforgeError(f"cnn: input_shape must be (channels, height, width), got {shape}")
        c, h, w = shape
        if c < 1 or h < MIN_SIDE or w < MIN_SIDE:
            raise NasforgeError(
                f"cnn: input {c}x{h}x{w} is too small: needs >= 1 channel and at least "
                f"{MIN_SIDE}x{MIN_SIDE} pixels (resize or pad the images)"
            )
        return c, h, w

    def trace(self, arch: Arch, input_shape: Sequence[int]) -> list[Stage]:
        """Per-block channels, stride and output size; downsampling stops below 2 pixels."""
        arch = self._check(arch)
        _, h, w = self._check_input(input_shape)
        ch = int(arch["stem_width"])
        out = []
        for b in self.blocks(arch):
            stride = 2 if b.down and min(h, w) >= 2 else 1
            h, w = -(-h // stride), -(-w // stride)
            cout = ch if b.type == "pool" else b.width
            out.append(Stage(b, ch, cout, stride, h, w))
            ch = cout
        return out

    def build(self, arch: Arch, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        arch = self._check(arch)
        c, _, _ = self._check_input(input_shape)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise NasforgeError(f"cnn: num_classes must be a positive integer, got {num_classes!r}")
        stem_w = int(arch["stem_width"])
        stem = nn.Sequential(*_conv_bn(c, stem_w, 3, 1), nn.ReLU())
        mods = []
        ch = stem_w
        for st in self.trace(arch, input_shape):
            m, ch = _block_module(st.block, st.in_channels, st.stride, self.expansion)
            mods.append(m)
        return CNNNet(stem, nn.Sequential(*mods), float(arch["dropout"]), ch, num_classes)
