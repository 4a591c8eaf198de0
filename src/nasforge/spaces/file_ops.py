"""The ops a search-space file builds its network from (``{op: conv, out: width, ...}``).

One :class:`Op` per entry of :data:`OPS`: its arguments (type, range, default), the input
kinds it takes, and how it builds a module for a given input :class:`Shape`. A new op
(e.g. a sequence op) is one :func:`register_op` call; the file space, its validation and
the README's table read everything from here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from nasforge.spaces.cnn_net import ACTIVATIONS

#: activation names an ``act`` argument takes ("none": no activation)
ACT_NAMES: tuple[str, ...] = ("none", *ACTIVATIONS)
MAX_WIDTH = 16384
MAX_KERNEL = 31


@dataclass(frozen=True)
class Shape:
    """What flows between layers: an image map ``(c, h, w)`` or a vector ``(c,)``."""

    kind: str  # "image" or "vector"
    c: int
    h: int = 1
    w: int = 1

    def text(self) -> str:
        return f"{self.c}x{self.h}x{self.w}" if self.kind == "image" else f"({self.c},)"


@dataclass(frozen=True)
class Arg:
    """One argument of an op: its type and bounds; :meth:`problem` says what is wrong."""

    type: str  # "int", "float", "enum", "bool"
    required: bool = False
    default: Any = None
    lo: float = 0
    hi: float = 0
    odd: bool = False
    options: tuple[str, ...] = ()

    def allowed(self) -> str:
        if self.type == "int":
            return f"an integer from {int(self.lo)} to {int(self.hi)}" + (
                " (odd)" if self.odd else "")
        if self.type == "float":
            return f"a number in [{self.lo:g}, {self.hi:g})"
        if self.type == "bool":
            return "true or false"
        return "one of " + ", ".join(self.options)

    def problem(self, value: Any) -> str | None:
        """None if ``value`` is valid, else what is allowed."""
        ok = True
        if self.type == "int":
            ok = (isinstance(value, int) and not isinstance(value, bool)
                  and self.lo <= value <= self.hi and (not self.odd or value % 2 == 1))
        elif self.type == "float":
            ok = (isinstance(value, int | float) and not isinstance(value, bool)
                  and self.lo <= value < self.hi)
        elif self.type == "bool":
            ok = isinstance(value, bool)
        else:
            ok = isinstance(value, str) and value in self.options
        return None if ok else f"got {value!r}; allowed: {self.allowed()}"

    def describe(self) -> str:
        d = "required" if self.required else f"default {self.default}"
        return f"{self.allowed()}, {d}"


Builder = Callable[[Mapping[str, Any], Shape, Any], tuple[nn.Module, Shape]]


@dataclass(frozen=True)
class Op:
    """One entry of the ops registry."""

    name: str
    help: str
    args: Mapping[str, Arg]
    takes: frozenset[str]  # input kinds: "image", "vector"
    build: Builder
    #: whether it wraps a nested ``block`` of layers (``residual``)
    nested: bool = False
    #: the kind it outputs given its input kind (``linear`` turns an image into a vector)
    out_kind: Callable[[str], str] = field(default=lambda k: k)


OPS: dict[str, Op] = {}


def register_op(op: Op) -> Op:
    """Add ``op`` to the registry (names are unique)."""
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} is registered twice")
    OPS[op.name] = op
    return op


# ----------------------------------------------------------------------------- modules
def _act(name: str) -> list[nn.Module]:
    return [] if name == "none" else [ACTIVATIONS[name]()]


def _norm(kind: str, s: Shape) -> list[nn.Module]:
    if kind == "none":
        return []
    if s.kind == "image":
        return [nn.BatchNorm2d(s.c) if kind == "batch" else nn.GroupNorm(1, s.c)]
    return [nn.BatchNorm1d(s.c) if kind == "batch" else nn.LayerNorm(s.c)]


def _strided(s: Shape, c: int, stride: int) -> Shape:
    return Shape("image", c, -(-s.h // stride), -(-s.w // stride))


def _conv(a: Mapping[str, Any], s: Shape, _inner: Any) -> tuple[nn.Module, Shape]:
    k, st, out = int(a["kernel"]), int(a["stride"]), int(a["out"])
    o = _strided(s, out, st)
    layers = [nn.Conv2d(s.c, out, k, stride=st, padding=k // 2, bias=a["norm"] == "none"),
              *_norm(a["norm"], o), *_act(a["act"])]
    return nn.Sequential(*layers), o


def _sepconv(a: Mapping[str, Any], s: Shape, _inner: Any) -> tuple[nn.Module, Shape]:
    k, st, out = int(a["kernel"]), int(a["stride"]), int(a["out"])
    o = _strided(s, out, st)
    layers = [nn.Conv2d(s.c, s.c, k, stride=st, padding=k // 2, groups=s.c, bias=False),
              nn.BatchNorm2d(s.c), *_act(a["act"]),
              nn.Conv2d(s.c, out, 1, bias=a["norm"] == "none"), *_norm(a["norm"], o),
              *_act(a["act"])]
    return nn.Sequential(*layers), o


class _Residual(nn.Module):
    """``body(x) + proj(x)``; ``proj`` resizes (adaptive average pool) and projects
    (1x1 conv or linear) only where the shapes differ."""

    def __init__(self, body: nn.Module, proj: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.proj = proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.proj(x)


def _projection(s: Shape, o: Shape) -> nn.Module:
    if s == o:
        return nn.Identity()
    if s.kind == "vector":
        return nn.Linear(s.c, o.c, bias=False)
    mods: list[nn.Module] = []
    if (s.h, s.w) != (o.h, o.w):
        mods.append(nn.AdaptiveAvgPool2d((o.h, o.w)))
    if s.c != o.c:
        mods += [nn.Conv2d(s.c, o.c, 1, bias=False), nn.BatchNorm2d(o.c)]
    return nn.Sequential(*mods)


def _mbconv(a: Mapping[str, Any], s: Shape, _inner: Any) -> tuple[nn.Module, Shape]:
    k, st, out, e = int(a["kernel"]), int(a["stride"]), int(a["out"]), int(a["expand"])
    hid = s.c * e
    o = _strided(s, out, st)
    layers: list[nn.Module] = []
    if e > 1:
        layers += [nn.Conv2d(s.c, hid, 1, bias=False), nn.BatchNorm2d(hid), *_act(a["act"])]
    layers += [nn.Conv2d(hid, hid, k, stride=st, padding=k // 2, groups=hid, bias=False),
               nn.BatchNorm2d(hid), *_act(a["act"]),
               nn.Conv2d(hid, out, 1, bias=False), nn.BatchNorm2d(out)]
    body = nn.Sequential(*layers)
    # the inverted residual of MobileNetV2: a skip where the shape is kept
    return (_Residual(body, nn.Identity()) if s == o else body), o


def _pool(a: Mapping[str, Any], s: Shape, _inner: Any) -> tuple[nn.Module, Shape]:
    size = int(a["size"])
    if min(s.h, s.w) < size:  # the window no longer fits: skipped, the map never vanishes
        return nn.Identity(), s
    cls = nn.MaxPool2d if a["kind"] == "max" else nn.AvgPool2d
    return cls(size, stride=size, ceil_mode=True), _strided(s, s.c, size)


def _linear(a: Mapping[str, Any], s: Shape, _inner: Any) -> tuple[nn.Module, Shape]:
    out = int(a["out"])
    o = Shape("vector", out)
    flat = [nn.Flatten()] if s.kind == "image" else []
    layers = [*flat, nn.Linear(s.c * s.h * s.w, out), *_norm(a["norm"], o), *_act(a["act"])]
    return nn.Sequential(*layers), o


def _dropout(a: Mapping[str, Any], s: Shape, _inner: Any) -> tuple[nn.Module, Shape]:
    p = float(a["p"])
    return (nn.Dropout(p) if p > 0 else nn.Identity()), s


def _normop(a: Mapping[str, Any], s: Shape, _inner: Any) -> tuple[nn.Module, Shape]:
    mods = _norm(a["kind"], s)
    return (mods[0] if mods else nn.Identity()), s


def _actop(a: Mapping[str, Any], s: Shape, _inner: Any) -> tuple[nn.Module, Shape]:
    mods = _act(a["kind"])
    return (mods[0] if mods else nn.Identity()), s


def _residual(a: Mapping[str, Any], s: Shape, inner: Any) -> tuple[nn.Module, Shape]:
    body, o = inner(s)
    return _Residual(body, _projection(s, o)), o


_OUT = Arg("int", required=True, lo=1, hi=MAX_WIDTH)
_KERNEL = Arg("int", default=3, lo=1, hi=MAX_KERNEL, odd=True)
_STRIDE = Arg("int", default=1, lo=1, hi=4)
_IMG = frozenset({"image"})
_ANY = frozenset({"image", "vector"})


def _act_arg(default: str) -> Arg:
    return Arg("enum", default=default, options=ACT_NAMES)


for _op in (
    Op("conv", "convolution (same padding), norm, activation", {
        "out": _OUT, "kernel": _KERNEL, "stride": _STRIDE, "act": _act_arg("relu"),
        "norm": Arg("enum", default="batch", options=("batch", "layer", "none"))},
       _IMG, _conv),
    Op("sepconv", "depthwise-separable convolution: depthwise kxk, pointwise 1x1", {
        "out": _OUT, "kernel": _KERNEL, "stride": _STRIDE, "act": _act_arg("relu"),
        "norm": Arg("enum", default="batch", options=("batch", "layer", "none"))},
       _IMG, _sepconv),
    Op("mbconv", "inverted residual (MobileNetV2): expand 1x1, depthwise kxk, project 1x1; "
       "a skip when the shape is kept", {
        "out": _OUT, "kernel": _KERNEL, "stride": _STRIDE,
        "expand": Arg("int", default=4, lo=1, hi=16), "act": _act_arg("relu")},
       _IMG, _mbconv),
    Op("pool", "max or average pool, window = stride = size; skipped once the map is "
       "smaller than the window", {
        "kind": Arg("enum", default="max", options=("max", "avg")),
        "size": Arg("int", default=2, lo=2, hi=8)}, _IMG, _pool),
    Op("linear", "fully connected layer (an image map is flattened first), norm, activation", {
        "out": _OUT, "act": _act_arg("none"),
        "norm": Arg("enum", default="none", options=("none", "batch", "layer"))},
       _ANY, _linear, out_kind=lambda _k: "vector"),
    Op("dropout", "dropout with probability p", {"p": Arg("float", required=True, lo=0, hi=1)},
       _ANY, _dropout),
    Op("norm", "normalization: batch, layer (GroupNorm(1, C) on images) or none", {
        "kind": Arg("enum", default="batch", options=("batch", "layer", "none"))},
       _ANY, _normop),
    Op("act", "activation", {"kind": Arg("enum", required=True, options=ACT_NAMES)},
       _ANY, _actop),
    Op("residual", "x + block(x); a projection (pool, 1x1 conv or linear) where shapes "
       "differ", {}, _ANY, _residual, nested=True),
):
    register_op(_op)


def build_sequence(steps: Sequence[Any], shape: Shape) -> tuple[list[nn.Module], list[Shape]]:
    """Modules for ``steps`` (``(op, args, inner_steps)``) and the shape after each."""
    mods: list[nn.Module] = []
    shapes: list[Shape] = []
    for op, args, inner in steps:
        def sub(s: Shape, inner: Any = inner) -> tuple[nn.Module, Shape]:
            ms, ss = build_sequence(inner, s)
            return nn.Sequential(*ms), (ss[-1] if ss else s)

        m, shape = op.build(args, shape, sub)
        mods.append(m)
        shapes.append(shape)
    return mods, shapes
