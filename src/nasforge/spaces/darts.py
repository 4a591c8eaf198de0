"""The DARTS / NASNet cell space and the published cells (Zoph et al. 2018, Liu et al. 2019).

An architecture is two cells, a *normal* one (keeps the resolution) and a *reduction* one
(halves it, doubles the channels). Each cell has two inputs (the outputs of the two
previous cells, indices 0 and 1) and ``nodes`` intermediate nodes (4 in DARTS, 5 in
NASNet/AmoebaNet/ENAS); node ``k`` (index ``k + 2``) sums two ops, each applied to one
of the cell inputs or an earlier node (the same one twice is allowed: NASNet-A averages
input 0 twice), so node inputs can only come from earlier nodes by construction. The
cell output concatenates the intermediate nodes: all of them (``concat="all"``, DARTS)
or only the ones no other node reads (``concat="loose"``, the "loose ends" of NASNet,
AmoebaNet and ENAS, which is what DARTS's copies of their ``*_concat`` lists are), or
explicit lists per cell (``concat={"normal": [0, 2, 3, 4, 5, 6], "reduce": [3, 4, 5, 6]}``:
TensorFlow's NASNet-A, which also concatenates the older cell input).

**How ``none`` is handled.** DARTS's 8 candidate ops include ``none`` (the zero op), but
only to let the continuous relaxation weigh "no edge"; a derived genotype keeps the two
strongest *non-zero* ops per node (Liu et al. 2019, s. 2.4), so no published cell
contains it. Here ``none`` is therefore not an option: every node has exactly two
non-zero inputs, the 7 ops of :data:`DARTS_OPS`. ``ops="nasnet"`` adds the two ops the
NASNet/AmoebaNet cells use beyond them (``sep_conv_7x7``, ``conv_7x1_1x7``).

The network is DARTS's ``NetworkCIFAR``: a 3x3 stem conv with ``3 * C`` channels and BN,
``layers`` cells with the reduction cells at ``layers // 3`` and ``2 * layers // 3``,
each cell preprocessing its inputs with ReLU-Conv1x1-BN (FactorizedReduce for the older
input when the previous cell reduced), global average pooling and a linear classifier.
The auxiliary head is off; drop-path (``drop_path``) is off by default and, when on,
drops every non-identity op's output per example as DARTS does (at a fixed rate: the
linear schedule over epochs is a training choice). The ops follow DARTS's
``operations.py`` (SepConv = ReLU-dw-pw-BN twice, DilConv = ReLU-dilated dw-pw-BN);
the one change is that FactorizedReduce pads its offset branch, which gives the same
result on even sides and also works on odd ones.

:data:`GENOTYPES` holds the published cells by name (see :func:`zoo`; ``nasforge zoo``
lists them with their parameter counts at the papers' CIFAR-10 settings). They are
this space's :meth:`DartsSpace.known_good` designs wherever the space's options fit
them, so a strategy's first population is the published cells.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    last_level,
    no_head,
)

#: the 7 non-zero DARTS ops, in the order of DARTS's ``PRIMITIVES`` (``none`` left out)
DARTS_OPS: tuple[str, ...] = (
    "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
    "dil_conv_3x3", "dil_conv_5x5",
)
#: the op sets a space can use (``ops=`` option)
OP_SETS: dict[str, tuple[str, ...]] = {
    "darts": DARTS_OPS,
    "nasnet": (*DARTS_OPS, "sep_conv_7x7", "conv_7x1_1x7"),
}
CELLS = ("normal", "reduce")
CONCATS = ("all", "loose")


# -- ops (DARTS's cnn/operations.py) ------------------------------------------------------
class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv (no bias) -> BN: DARTS's preprocessing and plain conv op."""

    def __init__(self, C_in: int, C_out: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(C_in, C_out, kernel, stride=stride, padding=padding,
                                   bias=False),
                         nn.BatchNorm2d(C_out))


class DilConv(nn.Sequential):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BN."""

    def __init__(self, C: int, kernel: int, stride: int, padding: int, dilation: int) -> None:
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(C, C, kernel, stride=stride, padding=padding,
                                   dilation=dilation, groups=C, bias=False),
                         nn.Conv2d(C, C, 1, bias=False),
                         nn.BatchNorm2d(C))


class SepConv(nn.Sequential):
    """Two stacked ReLU -> depthwise conv -> pointwise conv -> BN (the first strided)."""

    def __init__(self, C: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(C, C, kernel, stride=stride, padding=padding, groups=C,
                                   bias=False),
                         nn.Conv2d(C, C, 1, bias=False),
                         nn.BatchNorm2d(C),
                         nn.ReLU(inplace=False),
                         nn.Conv2d(C, C, kernel, stride=1, padding=padding, groups=C,
                                   bias=False),
                         nn.Conv2d(C, C, 1, bias=False),
                         nn.BatchNorm2d(C))


class FactorizedReduce(nn.Module):
    """Halve the resolution without losing half the pixels: two stride-2 1x1 convs, one
    offset by a pixel, concatenated, then BN (DARTS's skip_connect at stride 2)."""

    def __init__(self, C_in: int, C_out: int) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, stride=2, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out - C_out // 2, 1, stride=2, bias=False)
        self.pad = nn.ConstantPad2d((0, 1, 0, 1), 0.0)
        self.bn = nn.BatchNorm2d(C_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        # DARTS slices x[:, :, 1:, 1:]; padding first gives the same on even sides and
        # matching shapes on odd ones
        shifted = self.pad(x)[:, :, 1:, 1:]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


def make_op(name: str, C: int, stride: int) -> nn.Module:
    """The module of op ``name`` on ``C`` channels (DARTS's ``OPS[name](C, stride, True)``)."""
    if name == "max_pool_3x3":
        return nn.MaxPool2d(3, stride=stride, padding=1)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(C, C)
    if name.startswith("sep_conv_"):
        k = int(name[-1])
        return SepConv(C, k, stride, k // 2)
    if name.startswith("dil_conv_"):
        k = int(name[-1])
        return DilConv(C, k, stride, k - 1, 2)
    if name == "conv_7x1_1x7":
        return nn.Sequential(nn.ReLU(inplace=False),
                             nn.Conv2d(C, C, (1, 7), stride=(1, stride), padding=(0, 3),
                                       bias=False),
                             nn.Conv2d(C, C, (7, 1), stride=(stride, 1), padding=(3, 0),
                                       bias=False),
                             nn.BatchNorm2d(C))
    raise ValueError(f"unknown op {name!r}")


def drop_path(x: torch.Tensor, p: float) -> torch.Tensor:
    """Zero whole examples of ``x`` with probability ``p`` (rescaled), as DARTS does."""
    keep = 1.0 - p
    mask = torch.empty((x.shape[0], 1, 1, 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
    return x / keep * mask


# -- genotypes ----------------------------------------------------------------------------
Edge = tuple[str, int]  # (op, input index: 0/1 the cell inputs, k + 2 node k)


@dataclass(frozen=True)
class Genotype:
    """A cell pair in DARTS's form: per cell, two ``(op, input)`` edges per node."""

    normal: tuple[Edge, ...]
    reduce: tuple[Edge, ...]

    @property
    def nodes(self) -> int:
        return len(self.normal) // 2

    def cell(self, which: str) -> tuple[Edge, ...]:
        return self.normal if which == "normal" else self.reduce


def loose_ends(edges: Sequence[Edge]) -> list[int]:
    """The intermediate nodes (as input indices) that no other node of the cell reads."""
    used = {i for _, i in edges}
    return [k + 2 for k in range(len(edges) // 2) if k + 2 not in used]


Concat = str | dict[str, list[int]]


def concat_of(edges: Sequence[Edge], concat: Concat, cell: str = "normal") -> list[int]:
    """The states cell ``cell``'s output concatenates under the space's ``concat`` rule
    (``"all"``, ``"loose"`` or explicit lists per cell)."""
    if isinstance(concat, dict):
        return list(concat[cell])
    return list(range(2, len(edges) // 2 + 2)) if concat == "all" else loose_ends(edges)


def check_concat(concat: Any, nodes: int) -> Concat:
    """``concat`` as the space stores it, or a one-line error saying what it may be."""
    if isinstance(concat, str) and concat in CONCATS:
        return concat
    hint = ("darts: concat must be 'all' (DARTS: every node), 'loose' (NASNet: the nodes no "
            "other node reads) or lists of states per cell, e.g. {\"normal\": [2, 3, 4, 5], "
            f"\"reduce\": [2, 3, 4, 5]}} (0, 1 the cell inputs, 2-{nodes + 1} the nodes)")
    if not isinstance(concat, dict) or set(concat) != set(CELLS):
        raise NasforgeError(f"{hint}; got {concat!r:.100}")
    out = {}
    for cell in CELLS:
        v = concat[cell]
        if not isinstance(v, list | tuple) or not v or len(set(v)) != len(v) or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < nodes + 2
                for i in v):
            raise NasforgeError(f"{hint}; got {concat!r:.100}")
        out[cell] = sorted(v)
    return out


@dataclass(frozen=True)
class ZooEntry:
    """One published cell pair: where it is from and what the paper reports on CIFAR-10."""

    name: str
    genotype: Genotype
    #: the space options the cells need (besides C and layers)
    options: dict[str, Any]
    #: the published CIFAR-10 parameter count in millions (None: the paper gives none)
    paper_params_m: float | None
    source: str
    #: the initial channels of the published CIFAR-10 network (20 cells in every paper)
    paper_C: int = 36


def _g(normal: Sequence[Edge], reduce: Sequence[Edge]) -> Genotype:
    return Genotype(tuple(normal), tuple(reduce))


_NASNET = {"nodes": 5, "ops": "nasnet", "concat": "loose"}
_ENAS = {"nodes": 5, "ops": "darts", "concat": "loose"}
_NASNET_TF = {"nodes": 5, "ops": "nasnet",
              "concat": {"normal": [0, 2, 3, 4, 5, 6], "reduce": [3, 4, 5, 6]}}
_DARTS: dict[str, Any] = {}  # the defaults: 4 nodes, DARTS ops, concat all

#: the published cells, transcribed from DARTS's ``cnn/genotypes.py`` (NASNet-A,
#: AmoebaNet-A, DARTS V1/V2), PC-DARTS's ``genotypes.py``, GDAS's genotypes (as NSGA-Net
#: copies them) and ENAS in DARTS form (the copies in the NAT and NSGA-Net code differ in
#: one parameter-free edge, normal node 5's avg_pool input: 1 here, as in NAT and a
#: third copy; ENAS's own final-training script trains yet another cell); the concat
#: lists of those files are what ``concat`` computes (checked by the tests)
GENOTYPES: dict[str, ZooEntry] = {e.name: e for e in [
    ZooEntry("NASNet-A", _g(
        [("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 0), ("sep_conv_3x3", 0),
         ("avg_pool_3x3", 1), ("skip_connect", 0), ("avg_pool_3x3", 0), ("avg_pool_3x3", 0),
         ("sep_conv_3x3", 1), ("skip_connect", 1)],
        [("sep_conv_5x5", 1), ("sep_conv_7x7", 0), ("max_pool_3x3", 1), ("sep_conv_7x7", 0),
         ("avg_pool_3x3", 1), ("sep_conv_5x5", 0), ("skip_connect", 3), ("avg_pool_3x3", 2),
         ("sep_conv_3x3", 2), ("max_pool_3x3", 1)]),
        _NASNET, 3.3, "Zoph et al. 2018 (NASNet-A 6@768 + cutout); DARTS genotypes.py"),
    ZooEntry("NASNet-A-TF", _g(
        [("sep_conv_5x5", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 0), ("sep_conv_3x3", 0),
         ("avg_pool_3x3", 1), ("skip_connect", 0), ("avg_pool_3x3", 0), ("avg_pool_3x3", 0),
         ("sep_conv_3x3", 1), ("skip_connect", 1)],
        [("sep_conv_5x5", 1), ("sep_conv_7x7", 0), ("max_pool_3x3", 1), ("sep_conv_7x7", 0),
         ("avg_pool_3x3", 1), ("sep_conv_5x5", 0), ("skip_connect", 3), ("avg_pool_3x3", 2),
         ("sep_conv_3x3", 2), ("max_pool_3x3", 1)]),
        _NASNET_TF, 3.3, "Zoph et al. 2018 (NASNet-A 6@768 + cutout): TensorFlow's concat, "
        "F=32", paper_C=32),
    ZooEntry("AmoebaNet-A", _g(
        [("avg_pool_3x3", 0), ("max_pool_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 0), ("avg_pool_3x3", 3), ("sep_conv_3x3", 1), ("skip_connect", 1),
         ("skip_connect", 0), ("avg_pool_3x3", 1)],
        [("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("max_pool_3x3", 0), ("sep_conv_7x7", 2),
         ("sep_conv_7x7", 0), ("avg_pool_3x3", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 1),
         ("conv_7x1_1x7", 0), ("sep_conv_3x3", 5)]),
        _NASNET, 3.2, "Real et al. 2019 (AmoebaNet-A N=6 F=36 + cutout); DARTS genotypes.py"),
    ZooEntry("ENAS", _g(
        [("sep_conv_3x3", 1), ("skip_connect", 1), ("sep_conv_5x5", 1), ("skip_connect", 0),
         ("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("avg_pool_3x3", 1),
         ("sep_conv_5x5", 1), ("avg_pool_3x3", 0)],
        [("sep_conv_5x5", 0), ("avg_pool_3x3", 1), ("sep_conv_3x3", 1), ("avg_pool_3x3", 1),
         ("avg_pool_3x3", 1), ("sep_conv_3x3", 1), ("sep_conv_5x5", 4), ("avg_pool_3x3", 1),
         ("sep_conv_3x3", 5), ("sep_conv_5x5", 0)]),
        _ENAS, 4.6, "Pham et al. 2018 (micro search + cutout); DARTS form from NAT/NSGA-Net"),
    ZooEntry("DARTS-V1", _g(
        [("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 0), ("sep_conv_3x3", 1),
         ("skip_connect", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("skip_connect", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 0),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("avg_pool_3x3", 0)]),
        _DARTS, 3.3, "Liu et al. 2019 (first order + cutout); DARTS genotypes.py"),
    ZooEntry("DARTS-V2", _g(
        [("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
         ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
        [("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
         ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)]),
        _DARTS, 3.3, "Liu et al. 2019 (second order + cutout); DARTS genotypes.py"),
    ZooEntry("PC-DARTS", _g(
        [("sep_conv_3x3", 1), ("skip_connect", 0), ("sep_conv_3x3", 0), ("dil_conv_3x3", 1),
         ("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("avg_pool_3x3", 0), ("dil_conv_3x3", 1)],
        [("sep_conv_5x5", 1), ("max_pool_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 0), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("sep_conv_3x3", 2)]),
        _DARTS, 3.6, "Xu et al. 2020 (CIFAR-10 search); PC-DARTS genotypes.py"),
    ZooEntry("PC-DARTS-ImageNet", _g(
        [("skip_connect", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 0), ("skip_connect", 1),
         ("sep_conv_3x3", 1), ("sep_conv_3x3", 3), ("sep_conv_3x3", 1), ("dil_conv_5x5", 4)],
        [("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_5x5", 2), ("max_pool_3x3", 1),
         ("sep_conv_3x3", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_3x3", 3)]),
        _DARTS, None, "Xu et al. 2020 (searched on ImageNet); PC-DARTS genotypes.py"),
    ZooEntry("GDAS", _g(
        [("skip_connect", 0), ("skip_connect", 1), ("skip_connect", 0), ("sep_conv_5x5", 2),
         ("sep_conv_3x3", 3), ("skip_connect", 0), ("sep_conv_5x5", 4), ("sep_conv_3x3", 3)],
        [("sep_conv_5x5", 0), ("sep_conv_3x3", 1), ("sep_conv_5x5", 2), ("sep_conv_5x5", 1),
         ("dil_conv_5x5", 2), ("sep_conv_3x3", 1), ("sep_conv_5x5", 0), ("sep_conv_5x5", 2)]),
        _DARTS, 3.4, "Dong & Yang 2019 (GDAS V1, FRC off); GDAS genotypes.py"),
]}


# -- the network --------------------------------------------------------------------------
class DartsCell(nn.Module):
    """One fixed cell: preprocess both inputs to ``C`` channels, ``nodes`` nodes of two
    ops each, the concatenation of the ``concat`` states."""

    def __init__(self, edges: Sequence[Edge], concat: Sequence[int], C_pp: int, C_p: int,
                 C: int, reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        self.preprocess0 = FactorizedReduce(C_pp, C) if reduction_prev else \
            ReLUConvBN(C_pp, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0)
        self.indices = [i for _, i in edges]
        self.concat = list(concat)
        self.multiplier = len(self.concat)
        self._ops = nn.ModuleList(make_op(op, C, 2 if reduction and i < 2 else 1)
                                  for op, i in edges)
        self.drop_prob = 0.0

    def forward(self, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for k in range(len(self.indices) // 2):
            total = None
            for e in (2 * k, 2 * k + 1):
                op = self._ops[e]
                h = op(states[self.indices[e]])
                if self.training and self.drop_prob > 0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, self.drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class DartsNetwork(Backbone):
    """DARTS's ``NetworkCIFAR`` without the auxiliary head.

    ``levels``: the last feature map at each resolution (the stem's when the first cell
    already reduces), coarsest last. ``num_classes=None`` builds the backbone alone (same
    parameter names, no classifier).
    """

    def __init__(self, genotype: Genotype, concat: Concat, C: int, layers: int,
                 in_channels: int, num_classes: int | None, drop_prob: float = 0.0) -> None:
        super().__init__()
        C_curr = 3 * C
        self.stem = nn.Sequential(nn.Conv2d(in_channels, C_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C_curr))
        C_pp, C_p, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reductions = {layers // 3, 2 * layers // 3}
        red_prev = False
        stride = 1
        taps: dict[int, tuple[int, int]] = {1: (-1, 3 * C)}  # stride -> (cell index, channels)
        for i in range(layers):
            red = i in reductions
            if red:
                C_curr *= 2
                stride *= 2
            which = "reduce" if red else "normal"
            edges = genotype.cell(which)
            cell = DartsCell(edges, concat_of(edges, concat, which), C_pp, C_p, C_curr, red,
                             red_prev)
            cell.drop_prob = drop_prob
            self.cells.append(cell)
            red_prev = red
            C_pp, C_p = C_p, cell.multiplier * C_curr
            taps[stride] = (i, C_p)
        self._taps = sorted(taps.items())
        self.levels = [Level(ch, s) for s, (_, ch) in self._taps]
        self.feature_dim = C_p
        self.has_head = num_classes is not None
        if num_classes is None:
            return
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        s0 = s1 = self.stem(x)
        want = {i: n for n, (_, (i, _)) in enumerate(self._taps)}
        out: list[torch.Tensor | None] = [None] * len(self._taps)
        if -1 in want:
            out[want[-1]] = s1
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1)
            if i in want:
                out[want[i]] = s1
        return [t for t in out if t is not None]

    def forward_head(self, features: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if not self.has_head:
            raise no_head(self)
        return self.classifier(self.global_pooling(last_level(features)).flatten(1))

    def forward(self, x: torch.Tensor) -> Any:
        feats = self.forward_features(x)
        return self.forward_head(feats) if self.has_head else feats


# -- the space ----------------------------------------------------------------------------
def _int_option(key: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise NasforgeError(f"darts: {key} must be an integer from {lo} to {hi}, got {v!r}")
    return v


def _choice_name(cell: str, k: int, j: int, part: str) -> str:
    return f"{cell}.n{k}.{part}{j}"


@register("darts")
class DartsSpace(SearchSpace):
    """DARTS/NASNet cell space: a normal and a reduction cell, the CIFAR network; the
    published cells (NASNet-A, AmoebaNet-A, ENAS, DARTS, PC-DARTS, GDAS) are its zoo."""

    def __init__(self, C: int = 8, layers: int = 5, nodes: int = 4, ops: str = "darts",
                 concat: Concat = "all", drop_path: float = 0.0) -> None:
        self.C = _int_option("C", C, 1, 1024)
        self.layers = _int_option("layers", layers, 1, 100)
        self.nodes = _int_option("nodes", nodes, 1, 8)
        if ops not in OP_SETS:
            raise NasforgeError(f"darts: ops must be one of {', '.join(OP_SETS)}, got {ops!r} "
                                "('nasnet' adds sep_conv_7x7 and conv_7x1_1x7)")
        concat = check_concat(concat, self.nodes)
        if isinstance(drop_path, bool) or not isinstance(drop_path, int | float) or \
                not math.isfinite(drop_path) or not 0 <= drop_path < 1:
            raise NasforgeError(f"darts: drop_path must be a probability in [0, 1), got "
                                f"{drop_path!r}")
        self.ops, self.concat, self.drop_path = ops, concat, float(drop_path)
        self.op_names = OP_SETS[ops]
        self._choices = tuple(
            Choice(_choice_name(cell, k, j, part),
                   tuple(range(k + 2)) if part == "in" else self.op_names)
            for cell in CELLS for k in range(self.nodes) for j in (0, 1)
            for part in ("in", "op"))

    def config(self) -> dict[str, Any]:
        return {"C": self.C, "layers": self.layers, "nodes": self.nodes, "ops": self.ops,
                "concat": self.concat, "drop_path": self.drop_path}

    def choices(self) -> tuple[Choice, ...]:
        return self._choices

    # -- genotypes <-> archs -------------------------------------------------------------
    def canonicalize(self, values: dict[str, Value]) -> dict[str, Value]:
        """A node sums its two inputs, so their order does not matter: sort them by
        (input, op) so that the same network is one arch."""
        out = dict(values)
        for cell in CELLS:
            for k in range(self.nodes):
                pair = sorted(
                    (int(values[_choice_name(cell, k, j, "in")]),
                      self.op_names.index(str(values[_choice_name(cell, k, j, "op")])))
                     for j in (0, 1))
                for j, (i, o) in enumerate(pair):
                    out[_choice_name(cell, k, j, "in")] = i
                    out[_choice_name(cell, k, j, "op")] = self.op_names[o]
        return out

    @property
    def size(self) -> int:
        """Distinct archs: a node is an unordered pair of (input, op) edges, repeats
        allowed (NASNet-A's normal cell averages input 0 twice), so node ``k`` has
        ``n (n + 1) / 2`` forms with ``n = (k + 2) * len(ops)``; two cells."""
        cell = math.prod(n * (n + 1) // 2 for n in
                         ((k + 2) * len(self.op_names) for k in range(self.nodes)))
        return cell * cell

    def genotype(self, arch: Arch) -> Genotype:
        """The DARTS-form cells of ``arch``."""
        if arch.space != self.name:
            raise NasforgeError(f"expected a darts architecture, got one of space {arch.space!r}")
        d = arch.as_dict()
        cells = [tuple((str(d[_choice_name(c, k, j, "op")]), int(d[_choice_name(c, k, j, "in")]))
                       for k in range(self.nodes) for j in (0, 1)) for c in CELLS]
        return Genotype(*cells)

    def from_genotype(self, genotype: Genotype) -> Arch:
        """The arch of DARTS-form cells (refused, saying why, if they do not fit)."""
        if genotype.nodes != self.nodes or len(genotype.reduce) != 2 * self.nodes:
            raise ArchParseError(f"darts: the cells have {genotype.nodes} nodes, this space "
                                 f"{self.nodes} (set nodes={genotype.nodes})")
        values: dict[str, Value] = {}
        for c in CELLS:
            for e, (op, i) in enumerate(genotype.cell(c)):
                values[_choice_name(c, e // 2, e % 2, "in")] = i
                values[_choice_name(c, e // 2, e % 2, "op")] = op
        return self.make(values)

    def fits(self, entry: ZooEntry) -> bool:
        """Whether the published cells of ``entry`` are archs of this space."""
        used = {op for c in CELLS for op, _ in entry.genotype.cell(c)}
        return (entry.genotype.nodes == self.nodes and used <= set(self.op_names)
                and check_concat(entry.options.get("concat", "all"), self.nodes) == self.concat)

    def known_good(self) -> list[Arch]:
        """The published cells that fit this space's options (DARTS, PC-DARTS and GDAS by
        default; NASNet-A, AmoebaNet-A and ENAS with ``nodes=5, ops=nasnet, concat=loose``;
        NASNet-A-TF with its explicit concat lists)."""
        return [self.from_genotype(e.genotype) for e in GENOTYPES.values() if self.fits(e)]

    # -- string form -----------------------------------------------------------------------
    def format(self, arch: Arch) -> str:
        """``normal=op~i+op~i|...;reduce=...``: per cell, the nodes ``|``-separated, each
        the two ``op~input`` edges (inputs 0 and 1 the cell inputs, k + 2 node k)."""
        g = self.genotype(arch)
        parts = []
        for c in CELLS:
            edges = g.cell(c)
            nodes = ("+".join(f"{op}~{i}" for op, i in edges[2 * k:2 * k + 2])
                     for k in range(self.nodes))
            parts.append(f"{c}=" + "|".join(nodes))
        return ";".join(parts)

    def parse(self, text: str) -> Arch:
        """Inverse of :meth:`format`; also takes a :data:`GENOTYPES` name (``DARTS-V2``)."""
        if not isinstance(text, str):
            raise ArchParseError(f"darts: architecture must be a string, got "
                                 f"{type(text).__name__}")
        s = text.strip()
        if s in GENOTYPES:
            entry = GENOTYPES[s]
            if not self.fits(entry):
                opts = ", ".join(f"{k}={v}" for k, v in entry.options.items())
                raise ArchParseError(f"darts: {s} needs the space options {opts} (this space "
                                     f"has nodes={self.nodes}, ops={self.ops}, "
                                     f"concat={self.concat})")
            return self.from_genotype(entry.genotype)
        example = self.format(self.make([c.options[-1] for c in self._choices]))
        sections: dict[str, str] = {}
        for part in s.split(";"):
            name, sep, body = part.partition("=")
            name = name.strip()
            if not sep or name not in CELLS or name in sections:
                raise ArchParseError(f"darts: bad token {part!r:.80}: expected 'normal=...' "
                                     f"and 'reduce=...' once each (or a zoo name: "
                                     f"{', '.join(GENOTYPES)}); e.g. {example!r}")
            sections[name] = body
        if set(sections) != set(CELLS):
            raise ArchParseError(f"darts: {s!r:.80} needs both a 'normal=' and a 'reduce=' "
                                 f"cell; e.g. {example!r}")
        values: dict[str, Value] = {}
        for c in CELLS:
            nodes = sections[c].split("|")
            if len(nodes) != self.nodes:
                raise ArchParseError(f"darts: the {c} cell has {len(nodes)} '|'-separated "
                                     f"nodes, this space {self.nodes}")
            for k, node in enumerate(nodes):
                edges = node.split("+")
                if len(edges) != 2:
                    raise ArchParseError(f"darts: bad token {node!r:.80} ({c} node {k}): a "
                                         f"node is two edges 'op~input+op~input'")
                for j, edge in enumerate(edges):
                    op, sep, idx = edge.strip().partition("~")
                    if not sep or op not in self.op_names:
                        raise ArchParseError(
                            f"darts: bad token {edge!r:.80} ({c} node {k}): expected op~input "
                            f"with op one of {', '.join(self.op_names)}")
                    if not (idx.isascii() and idx.isdigit() and len(idx) <= 2
                            and int(idx) < k + 2):
                        raise ArchParseError(
                            f"darts: bad token {edge!r:.80}: node {k} can read inputs 0-{k + 1} "
                            f"(0, 1 the cell inputs, then the earlier nodes)")
                    values[_choice_name(c, k, j, "in")] = int(idx)
                    values[_choice_name(c, k, j, "op")] = op
        return self.make(values)

    # -- building --------------------------------------------------------------------------
    def _build(self, arch: Arch, input_shape: Sequence[int],
               num_classes: int | None) -> DartsNetwork:
        shape = tuple(input_shape)
        if len(shape) != 3:
            raise NasforgeError(f"darts: input_shape must be (channels, height, width), got "
                                f"{input_shape!r}")
        if num_classes is not None and (isinstance(num_classes, bool) or
                                        not isinstance(num_classes, int) or num_classes < 1):
            raise NasforgeError(f"darts: num_classes must be an integer >= 1, got "
                                f"{num_classes!r}")
        return DartsNetwork(self.genotype(arch), self.concat, self.C, self.layers,
                            int(shape[0]), num_classes, self.drop_path)

    def build(self, arch: Arch, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        return self._build(arch, input_shape, num_classes)

    def build_backbone(self, arch: Arch, input_shape: Sequence[int]) -> Backbone:
        """Stem and cells without the classifier: the last map of each resolution."""
        return self._build(arch, input_shape, None)


# -- the zoo ------------------------------------------------------------------------------
def count_params(name: str, C: int | None = None, layers: int = 20, num_classes: int = 10,
                 input_shape: Sequence[int] = (3, 32, 32)) -> int:
    """Parameters of zoo cell ``name`` at ``C``/``layers`` (the paper's CIFAR-10 settings
    by default: C=36 but for NASNet-A-TF's F=32), counted on the ``meta`` device:
    nothing is allocated."""
    if name not in GENOTYPES:
        raise NasforgeError(f"unknown zoo cell {name!r}; the zoo has {', '.join(GENOTYPES)}")
    C = GENOTYPES[name].paper_C if C is None else C
    space, arch = zoo_arch(name, C=C, layers=layers)
    with torch.device("meta"):
        net = space._build(arch, input_shape, num_classes)
    return sum(p.numel() for p in net.parameters())


def zoo_arch(name: str, **options: Any) -> tuple[DartsSpace, Arch]:
    """The space (its options fitted to the cells, plus ``options``) and arch of zoo
    cell ``name``: ``space, arch = zoo_arch("DARTS-V2", C=16, layers=8)``."""
    if name not in GENOTYPES:
        raise NasforgeError(f"unknown zoo cell {name!r}; the zoo has {', '.join(GENOTYPES)}")
    entry = GENOTYPES[name]
    space = DartsSpace(**{**entry.options, **options})
    return space, space.from_genotype(entry.genotype)


def zoo() -> list[dict[str, Any]]:
    """Every published cell: name, space options, parameters at the papers' CIFAR-10
    settings (ours and the paper's), the source and the arch string."""
    rows = []
    for name, e in GENOTYPES.items():
        space, arch = zoo_arch(name)
        rows.append({"name": name, "options": dict(e.options),
                     "params": count_params(name), "paper_C": e.paper_C,
                     "paper_params_m": e.paper_params_m, "source": e.source,
                     "arch": arch.text})
    return rows

