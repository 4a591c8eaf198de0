"""The network a ``cnn`` architecture builds: its blocks, the residual wrapper and
:class:`CNNNet` (a :class:`~nasforge.spaces.base.Backbone` with an optional head). Kept apart
from :mod:`nasforge.spaces.cnn` (the space: choices, parsing, sampling, tracing)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from nasforge.spaces.base import Backbone, Level, last_level, no_head

#: blocks without weights: they keep their input channels
POOL_TYPES = frozenset({"pool", "maxpool", "avgpool"})
#: 2x2 pools with stride 2: the downsample flag does not apply to them
HALVING_POOLS = frozenset({"maxpool", "avgpool"})
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


@dataclass(frozen=True)
class Block:
    """One active block of an architecture, as the builder sees it."""

    type: str
    kernel: int
    width: int
    act: str
    skip: bool
    down: bool
    drop: float = 0.0


@dataclass(frozen=True)
class Stage:
    """What :meth:`CNNSpace.trace` reports per block: the block and its output shape."""

    block: Block
    in_channels: int
    out_channels: int
    stride: int
    height: int
    width: int


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


class CNNNet(Backbone):
    """Stem -> blocks -> head: GAP -> dropout -> linear, or flatten -> FC-ReLU -> dropout ->
    linear (``hidden`` > 0). ``forward_features``/``forward_head`` split it as timm does.

    ``taps`` are the levels with the number of blocks applied before each is read (0: the
    stem's output); ``num_classes=None`` builds the backbone alone, with no head modules,
    so the two share every parameter name.
    """

    def __init__(self, stem: nn.Module, blocks: nn.Sequential, dropout: float, channels: int,
                 num_classes: int | None, hidden: int = 0, flat: int = 0, *,
                 taps: Sequence[tuple[int, Level]] = ()) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = blocks
        taps = list(taps) or [(len(blocks), Level(channels, 1))]
        self._tap_at = {n for n, _ in taps}
        self.levels = [lv for _, lv in taps]
        self.has_head = num_classes is not None
        if num_classes is None:
            return
        self.pool: nn.Module = nn.AdaptiveAvgPool2d(1) if hidden == 0 else nn.Identity()
        self.fc: nn.Module = (nn.Sequential(nn.Linear(flat, hidden), nn.ReLU()) if hidden
                              else nn.Identity())
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(hidden or channels, num_classes)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        out = [x] if 0 in self._tap_at else []
        for n, block in enumerate(self.blocks, start=1):
            x = block(x)
            if n in self._tap_at:
                out.append(x)
        return out

    def forward_head(self, features: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits from the coarsest level (the list of :meth:`forward_features` or its last)."""
        if not self.has_head:
            raise no_head(self)
        x = self.fc(torch.flatten(self.pool(last_level(features)), 1))
        return self.classifier(self.dropout(x))

    def forward(self, x: torch.Tensor) -> Any:
        feats = self.forward_features(x)
        return self.forward_head(feats) if self.has_head else feats


def _block_module(b: Block, cin: int, stride: int, expansion: int) -> tuple[nn.Module, int]:
    """The module of one block and its output channel count."""
    if b.type in POOL_TYPES:
        pool: nn.Module
        if b.type == "pool":
            pool = nn.MaxPool2d(3, stride=stride, padding=1)
        elif stride == 1:  # a map under 2 pixels: nothing left to halve
            pool = nn.Identity()
        else:
            pool = (nn.MaxPool2d if b.type == "maxpool" else nn.AvgPool2d)(2, stride=2,
                                                                         ceil_mode=True)
        return (nn.Sequential(pool, nn.Dropout(b.drop)) if b.drop > 0 else pool), cin
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
    if b.drop > 0:
        body = nn.Sequential(body, nn.Dropout(b.drop))
    return body, b.width
