"""The network a ``seq`` architecture builds: temporal (separable, dilated) convolutions,
LSTM / GRU, transformer encoder layers and pools over (N, channels, length) features, each
carrying the padding mask (see :mod:`nasforge.data.sequences`: input channel 0 is the
mask), and the readouts. Written with plain ops (no ``nn.TransformerEncoderLayer`` fast
path, no packed sequences) so that the ONNX export is the same function as torch's."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from nasforge.spaces.base import Backbone, Level, no_head

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh,
}
CONV_TYPES = frozenset({"conv", "sepconv"})
RNN_TYPES = frozenset({"lstm", "gru"})
POOL_TYPES = frozenset({"maxpool", "avgpool"})
BLOCK_TYPES: tuple[str, ...] = ("conv", "sepconv", "lstm", "gru", "transformer", "maxpool",
                                "avgpool")
READOUTS: tuple[str, ...] = ("mean", "max", "attention", "last")
NORMS: tuple[str, ...] = ("batch", "layer", "none")
_NEG = -1e4  # added to padded steps before a max or a softmax (finite: ONNX-safe)


@dataclass(frozen=True)
class SeqBlock:
    """One active block as the builder sees it (inactive fields at their first option)."""

    type: str
    kernel: int = 3
    dilation: int = 1
    width: int = 64
    bidir: bool = False
    heads: int = 2
    ffn: int = 2
    prenorm: bool = True
    norm: str = "batch"
    act: str = "relu"
    skip: bool = False
    drop: float = 0.0


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of every step of (N, C, L)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x.transpose(1, 2)).transpose(1, 2)


def _norm(kind: str, c: int) -> nn.Module:
    return nn.BatchNorm1d(c) if kind == "batch" else ChannelNorm(c) if kind == "layer" \
        else nn.Identity()


class ConvBlock(nn.Module):
    """(separable) dilated 'same' convolution -> norm -> activation, optional residual."""

    def __init__(self, b: SeqBlock, cin: int) -> None:
        super().__init__()
        total = b.dilation * (b.kernel - 1)  # 'same' length, explicit (even kernels too)
        pad = nn.ConstantPad1d((total // 2, total - total // 2), 0.0)
        if b.type == "conv":
            self.conv: nn.Module = nn.Sequential(pad, nn.Conv1d(
                cin, b.width, b.kernel, dilation=b.dilation, bias=b.norm == "none"))
        else:
            self.conv = nn.Sequential(
                pad, nn.Conv1d(cin, cin, b.kernel, dilation=b.dilation, groups=cin,
                               bias=False),
                nn.Conv1d(cin, b.width, 1, bias=b.norm == "none"))
        self.norm = _norm(b.norm, b.width)
        self.act = ACTIVATIONS[b.act]()
        self.drop = nn.Dropout(b.drop) if b.drop > 0 else nn.Identity()
        self.proj: nn.Module | None = None
        if b.skip:
            self.proj = nn.Identity() if cin == b.width else nn.Conv1d(cin, b.width, 1)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.act(self.norm(self.conv(x)))
        if self.proj is not None:
            h = h + self.proj(x)
        return self.drop(h) * m, m


class RNNBlock(nn.Module):
    """LSTM or GRU over the steps (bidirectional: half the width each way). Padding is at
    the end, so a forward direction's real steps never see it; the backward direction
    starts on zeros (packed sequences would avoid that but do not export to ONNX)."""

    def __init__(self, b: SeqBlock, cin: int) -> None:
        super().__init__()
        hidden = b.width // 2 if b.bidir else b.width
        cls = nn.LSTM if b.type == "lstm" else nn.GRU
        self.rnn = cls(cin, hidden, batch_first=True, bidirectional=b.bidir)
        self.drop = nn.Dropout(b.drop) if b.drop > 0 else nn.Identity()
        self.proj: nn.Module | None = None
        if b.skip:
            self.proj = nn.Identity() if cin == b.width else nn.Conv1d(cin, b.width, 1)

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, _ = self.rnn(x.transpose(1, 2))
        h = h.transpose(1, 2)
        if self.proj is not None:
            h = h + self.proj(x)
        return self.drop(h) * m, m


class TransformerBlock(nn.Module):
    """A transformer encoder layer (multi-head self-attention with the padding as a key
    mask, then a feed-forward of ``ffn`` x width), pre- or post-norm; a 1x1 projection
    first when the input width differs."""

    def __init__(self, b: SeqBlock, cin: int) -> None:
        super().__init__()
        w = b.width
        self.inp = nn.Identity() if cin == w else nn.Conv1d(cin, w, 1)
        self.heads, self.prenorm = b.heads, b.prenorm
        self.qkv = nn.Linear(w, 3 * w)
        self.out = nn.Linear(w, w)
        self.ff = nn.Sequential(nn.Linear(w, b.ffn * w), ACTIVATIONS[b.act](),
                                nn.Dropout(b.drop), nn.Linear(b.ffn * w, w))
        self.n1, self.n2 = nn.LayerNorm(w), nn.LayerNorm(w)
        self.drop = nn.Dropout(b.drop) if b.drop > 0 else nn.Identity()

    def _attn(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        n, length, w = x.shape
        d = w // self.heads
        q, k, v = self.qkv(x).reshape(n, length, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        s = q @ k.transpose(-1, -2) / math.sqrt(d) + (1.0 - m)[:, :, None, :] * _NEG
        a = torch.softmax(s, dim=-1)
        return self.out((a @ v).transpose(1, 2).reshape(n, length, w))

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.inp(x).transpose(1, 2)  # (N, L, W)
        if self.prenorm:
            h = h + self.drop(self._attn(self.n1(h), m))
            h = h + self.drop(self.ff(self.n2(h)))
        else:
            h = self.n1(h + self.drop(self._attn(h, m)))
            h = self.n2(h + self.drop(self.ff(h)))
        return h.transpose(1, 2) * m, m


class PoolBlock(nn.Module):
    """Halve the length (max or average over pairs of steps); a step of the pooled mask is
    real when either of its two steps was. Below 2 steps nothing is left to halve."""

    def __init__(self, b: SeqBlock, halve: bool) -> None:
        super().__init__()
        self.kind, self.halve = b.type, halve
        self.drop = nn.Dropout(b.drop) if b.drop > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.halve:
            return self.drop(x), m
        if self.kind == "maxpool":
            h = F.max_pool1d(x + (m - 1.0) * -_NEG, 2, 2, ceil_mode=True)
        else:  # the mean of the real steps of each pair
            h = F.avg_pool1d(x * m, 2, 2, ceil_mode=True) / F.avg_pool1d(
                m, 2, 2, ceil_mode=True).clamp(min=0.5)
        m2 = F.max_pool1d(m, 2, 2, ceil_mode=True)
        return self.drop(h) * m2, m2


def block_module(b: SeqBlock, cin: int, halve: bool) -> tuple[nn.Module, int]:
    if b.type in CONV_TYPES:
        return ConvBlock(b, cin), b.width
    if b.type in RNN_TYPES:
        return RNNBlock(b, cin), b.width
    if b.type == "transformer":
        return TransformerBlock(b, cin), b.width
    return PoolBlock(b, halve), cin


class Readout(nn.Module):
    """(N, W, L) features and their mask -> (N, W): mean or max over the real steps,
    attention pooling (a learned score per step, softmax over the real ones) or the
    features of the last real step."""

    def __init__(self, kind: str, w: int) -> None:
        super().__init__()
        self.kind = kind
        self.score = nn.Conv1d(w, 1, 1) if kind == "attention" else None

    def forward(self, h: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        if self.kind == "mean":
            return (h * m).sum(-1) / m.sum(-1).clamp(min=1.0)
        if self.kind == "max":
            return (h + (1.0 - m) * _NEG).amax(-1)
        if self.kind == "attention":
            assert self.score is not None
            a = torch.softmax(self.score(h) + (1.0 - m) * _NEG, dim=-1)
            return (h * a).sum(-1)
        last = (m.sum(-1) - 1.0).clamp(min=0.0).long()  # (N, 1): padding is at the end
        return h.gather(2, last[:, :, None].expand(-1, h.shape[1], 1)).squeeze(-1)


class SeqNet(Backbone):
    """Mask split off the input -> blocks -> readout -> dropout -> linear. As a backbone
    (``num_classes=None``) it returns one level: the last block's features, padded steps
    zero."""

    def __init__(self, blocks: list[nn.Module], channels: int, stride: int, readout: str,
                 dropout: float, num_classes: int | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.levels = [Level(channels, stride)]
        self.has_head = num_classes is not None
        if num_classes is None:
            return
        self.readout = Readout(readout, channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(channels, num_classes)

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = (x[:, :1] > 0.5).to(x.dtype)
        h = x[:, 1:] * m
        for b in self.blocks:
            h, m = b(h, m)
        return h, m

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self._run(x)[0]]

    def forward_head(self, features: Any) -> torch.Tensor:
        raise no_head(self) if not self.has_head else NotImplementedError(
            "a seq network's head needs the mask: call the network itself")

    def forward(self, x: torch.Tensor) -> Any:
        h, m = self._run(x)
        if not self.has_head:
            return [h]
        return self.classifier(self.dropout(self.readout(h, m)))
