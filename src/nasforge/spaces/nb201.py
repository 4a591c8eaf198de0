"""The NAS-Bench-201 cell space, exactly as published (Dong & Yang, ICLR 2020).

An architecture is one 4-node cell (6 edges, 5 ops each: 15,625 archs, no isomorphism
merging because the benchmark table is keyed by the string; :meth:`NB201Space.equivalence_key`
groups the cells that compute the same network, 9,550 of them, so strategies can skip
re-evaluating one). The network is the
published ``TinyNetwork``: stem, three stages of ``N`` cells at C/2C/4C channels joined
by ResNet reduction blocks, BN+ReLU, global pooling, linear classifier. The op
definitions (:data:`OPS`), :class:`Cell`, :class:`ResNetBasicblock` and
:class:`NB201Network` (which takes a cell factory) are public so that weight-sharing
methods (SPOS, DARTS) can reuse them and stay parameter-for-parameter identical.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
    last_level,
    no_head,
)

#: candidate ops of every edge, in NAS-Bench-201's order
OP_NAMES: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: the cell's edges as (to, from) node pairs, in the order of the NAS-Bench-201 string
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
#: choice names of the edges, e.g. ``"2<-1"``
EDGE_NAMES: tuple[str, ...] = tuple(f"{j}<-{i}" for j, i in EDGES)
NUM_NODES = 4
#: smallest input side: two stride-2 reductions must leave at least 2x2
MIN_INPUT_SIZE = 8


# -- ops (as in NAS-Bench-201's ``cell_operations.py``) -----------------------------------
class ReLUConvBN(nn.Module):
    """ReLU -> Conv (no bias when BN is affine) -> BN, the conv op of NAS-Bench-201."""

    def __init__(
        self,
        C_in: int,
        C_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int = 1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.Conv2d(
                C_in,
                C_out,
                kernel_size,
                stride=stride,
                padding=padding,
                dilation=dilation,
                bias=not affine,
            ),
            nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Zero(nn.Module):
    """The ``none`` op: multiplies by 0 (keeps the graph and shape, as NAS-Bench-201 does)."""

    def __init__(self, C_in: int, C_out: int, stride: int) -> None:
        super().__init__()
        self.C_in, self.C_out, self.stride = C_in, C_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.C_in == self.C_out:
            if self.stride == 1:
                return x.mul(0.0)
            return x[:, :, :: self.stride, :: self.stride].mul(0.0)
        shape = list(x.shape)
        shape[1] = self.C_out
        if self.stride != 1:
            shape[2] = (shape[2] + self.stride - 1) // self.stride
            shape[3] = (shape[3] + self.stride - 1) // self.stride
        return x.new_zeros(shape)


class FactorizedReduce(nn.Module):
    """``skip_connect`` when shape changes: two offset 1x1 convs (stride 2) or one 1x1 conv."""

    def __init__(
        self, C_in: int, C_out: int, stride: int, affine: bool, track_running_stats: bool
    ) -> None:
        super().__init__()
        self.stride = stride
        self.relu = nn.ReLU(inplace=False)
        if stride == 2:
            outs = [C_out // 2, C_out - C_out // 2]
            self.convs = nn.ModuleList(
                nn.Conv2d(C_in, c, 1, stride=stride, padding=0, bias=not affine) for c in outs
            )
            self.pad = nn.ConstantPad2d((0, 1, 0, 1), 0)
        elif stride == 1:
            self.conv = nn.Conv2d(C_in, C_out, 1, stride=stride, padding=0, bias=not affine)
        else:
            raise ValueError(f"invalid stride {stride}")
        self.bn = nn.BatchNorm2d(C_out, affine=affine, track_running_stats=track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            x = self.relu(x)
            y = self.pad(x)
            out = torch.cat([self.convs[0](x), self.convs[1](y[:, :, 1:, 1:])], dim=1)
        else:
            out = self.conv(x)
        return self.bn(out)


class Pooling(nn.Module):
    """``avg_pool_3x3`` (count_include_pad=False); a 1x1 ReLUConvBN first if channels change."""

    def __init__(
        self, C_in: int, C_out: int, stride: int, affine: bool, track_running_stats: bool
    ) -> None:
        super().__init__()
        self.preprocess = (
            None
            if C_in == C_out
            else ReLUConvBN(C_in, C_out, 1, 1, 0, 1, affine, track_running_stats)
        )
        self.op = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preprocess is not None:
            x = self.preprocess(x)
        return self.op(x)


OpFactory = Callable[[int, int, int, bool, bool], nn.Module]

#: op name -> factory(C_in, C_out, stride, affine, track_running_stats)
OPS: dict[str, OpFactory] = {
    "none": lambda C_in, C_out, stride, affine, trs: Zero(C_in, C_out, stride),
    "skip_connect": lambda C_in, C_out, stride, affine, trs: (
        nn.Identity()
        if stride == 1 and C_in == C_out
        else FactorizedReduce(C_in, C_out, stride, affine, trs)
    ),
    "nor_conv_1x1": lambda C_in, C_out, stride, affine, trs: ReLUConvBN(
        C_in, C_out, 1, stride, 0, 1, affine, trs
    ),
    "nor_conv_3x3": lambda C_in, C_out, stride, affine, trs: ReLUConvBN(
        C_in, C_out, 3, stride, 1, 1, affine, trs
    ),
    "avg_pool_3x3": lambda C_in, C_out, stride, affine, trs: Pooling(
        C_in, C_out, stride, affine, trs
    ),
}


# -- macro blocks -----------------------------------------------------------------------
class ResNetBasicblock(nn.Module):
    """The reduction block between stages: two ReLUConvBN 3x3 plus a shortcut."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"invalid stride {stride}")
        self.conv_a = ReLUConvBN(inplanes, planes, 3, stride, 1, 1, affine, track_running_stats)
        self.conv_b = ReLUConvBN(planes, planes, 3, 1, 1, 1, affine, track_running_stats)
        self.downsample: nn.Module | None
        if stride == 2:
            self.downsample = nn.Sequential(
                # ceil_mode only matters for odd sizes (where the original crashes)
                nn.AvgPool2d(kernel_size=2, stride=2, padding=0, ceil_mode=True),
                nn.Conv2d(inplanes, planes, kernel_size=1, stride=1, padding=0, bias=False),
            )
        elif inplanes != planes:
            self.downsample = ReLUConvBN(inplanes, planes, 1, 1, 0, 1, affine, track_running_stats)
        else:
            self.downsample = None
        self.in_dim, self.out_dim, self.stride = inplanes, planes, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return residual + self.conv_b(self.conv_a(x))


class Cell(nn.Module):
    """A fixed NAS-Bench-201 cell: node_j = sum_{i<j} op_ij(node_i); the output is node 3.

    ``ops`` are the 6 edge ops in :data:`EDGES` order. ``none`` edges are kept (as
    :class:`Zero`) so the module tree matches the published ``InferCell``.
    """

    def __init__(
        self,
        ops: Sequence[str],
        C_in: int,
        C_out: int,
        stride: int = 1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        ops = tuple(ops)
        if len(ops) != len(EDGES):
            raise ValueError(f"a cell needs {len(EDGES)} edge ops, got {len(ops)}")
        for op in ops:
            if op not in OPS:
                raise ValueError(f"unknown op {op!r}; ops are {list(OP_NAMES)}")
        self.ops = ops
        self.edges = nn.ModuleList(
            OPS[op](C_in, C_out, stride, affine, track_running_stats)
            if i == 0
            else OPS[op](C_out, C_out, 1, affine, track_running_stats)
            for op, (_, i) in zip(ops, EDGES, strict=True)
        )
        self.in_dim, self.out_dim = C_in, C_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        k = 0
        for j in range(1, NUM_NODES):
            total: torch.Tensor | None = None
            for i in range(j):
                y = self.edges[k](nodes[i])
                total = y if total is None else total + y
                k += 1
            assert total is not None
            nodes.append(total)
        return nodes[-1]


#: cell_factory(C_in, C_out) -> a shape-preserving cell module (C_in == C_out in NB201)
CellFactory = Callable[[int, int], nn.Module]


class NB201Network(Backbone):
    """The NAS-Bench-201 macro skeleton around any cell (fixed, or a supernet's mixed cell).

    Extra positional arguments of :meth:`forward` are passed to every (non-reduction)
    cell, so a DARTS cell can receive its architecture weights.

    Its three cell stages are its ``levels`` (C, 2C, 4C channels at strides 1, 2, 4; each
    read before the next reduction block); the head is BN+ReLU, global pooling and the
    classifier. ``num_classes=None`` builds the backbone alone: stem and cells, the same
    parameter names, no head modules.
    """

    def __init__(
        self, cell_factory: CellFactory, C: int, N: int, in_channels: int,
        num_classes: int | None,
    ) -> None:
        super().__init__()
        self.C, self.N = C, N
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, C, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(C)
        )
        channels = [C] * N + [C * 2] + [C * 2] * N + [C * 4] + [C * 4] * N
        reductions = [False] * N + [True] + [False] * N + [True] + [False] * N
        self.cells = nn.ModuleList()
        self.is_reduction: list[bool] = []
        c_prev = C
        for c_curr, red in zip(channels, reductions, strict=True):
            cell = (
                ResNetBasicblock(c_prev, c_curr, 2, True) if red else cell_factory(c_prev, c_curr)
            )
            self.cells.append(cell)
            self.is_reduction.append(red)
            c_prev = c_curr
        #: indices of the cells whose outputs are the levels (the last of each stage)
        self.level_cells = [i for i in range(len(self.cells))
                            if i + 1 == len(self.cells) or reductions[i + 1]]
        self.levels = [Level(channels[i], 2 ** sum(reductions[: i + 1]))
                       for i in self.level_cells]
        self.feature_dim = c_prev
        self.has_head = num_classes is not None
        if num_classes is None:
            return
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward_features(self, x: torch.Tensor, *cell_args: Any) -> list[torch.Tensor]:
        """The output of each cell stage (before the head's BN+ReLU), coarsest last."""
        x = self.stem(x)
        out = []
        taps = set(self.level_cells)
        for i, (cell, red) in enumerate(zip(self.cells, self.is_reduction, strict=True)):
            x = cell(x) if red else cell(x, *cell_args)
            if i in taps:
                out.append(x)
        return out

    def pooled(self, features: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """BN+ReLU and global pooling of the last stage: the classifier's input."""
        if not self.has_head:
            raise no_head(self)
        return self.global_pooling(self.lastact(last_level(features))).flatten(1)

    def features(self, x: torch.Tensor, *cell_args: Any) -> torch.Tensor:
        """Pooled features before the classifier (what NB201's forward returns first)."""
        return self.pooled(self.forward_features(x, *cell_args))

    def forward_head(self, features: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits from the last stage's output (the feature list or that one tensor)."""
        pooled = self.pooled(features)  # first: a head-less network says so
        return self.classifier(pooled)

    def forward(self, x: torch.Tensor, *cell_args: Any) -> Any:
        feats = self.forward_features(x, *cell_args)
        return self.forward_head(feats) if self.has_head else feats


# -- string form ------------------------------------------------------------------------
def format_ops(ops: Sequence[str]) -> str:
    """The canonical NAS-Bench-201 string of 6 edge ops in :data:`EDGES` order."""
    groups: list[list[str]] = [[] for _ in range(NUM_NODES - 1)]
    for op, (j, i) in zip(ops, EDGES, strict=True):
        groups[j - 1].append(f"{op}~{i}")
    return "+".join("|" + "|".join(g) + "|" for g in groups)


def parse_ops(text: str) -> tuple[str, ...]:
    """Edge ops from a NAS-Bench-201 string; raises :class:`ArchParseError` naming the bad token."""
    if not isinstance(text, str):
        raise ArchParseError(f"nb201: architecture must be a string, got {type(text).__name__}")
    s = text.strip()
    example = format_ops(["nor_conv_3x3"] * len(EDGES))
    groups = s.split("+")
    if len(groups) != NUM_NODES - 1:
        raise ArchParseError(
            f"nb201: bad architecture {s!r}: expected {NUM_NODES - 1} '+'-separated node groups, "
            f"got {len(groups)}; e.g. {example!r}"
        )
    ops: list[str] = []
    for j, group in enumerate(groups, start=1):
        if len(group) < 2 or not group.startswith("|") or not group.endswith("|"):
            raise ArchParseError(
                f"nb201: bad token {group!r} (node {j}): each node group must be enclosed "
                f"in pipes, like '|op~0|op~1|'; e.g. {example!r}"
            )
        tokens = group[1:-1].split("|")
        if len(tokens) != j:
            raise ArchParseError(
                f"nb201: bad token {group!r}: node {j} needs {j} input edge(s) "
                f"(from nodes {list(range(j))}), got {len(tokens)}"
            )
        for i, tok in enumerate(tokens):
            if tok.count("~") != 1:
                raise ArchParseError(f"nb201: bad token {tok!r} (node {j}): expected 'op~{i}'")
            op, idx = tok.split("~")
            if op not in OPS:
                raise ArchParseError(
                    f"nb201: bad token {tok!r}: unknown op {op!r}; ops are {list(OP_NAMES)}"
                )
            if idx != str(i):
                raise ArchParseError(
                    f"nb201: bad token {tok!r}: edge {i + 1} of node {j} must come from node {i} "
                    f"(write '{op}~{i}')"
                )
            ops.append(op)
    return tuple(ops)


def arch_to_ops(arch: Arch | str) -> tuple[str, ...]:
    """The 6 edge ops of an nb201 arch (or its string), in :data:`EDGES` order."""
    if isinstance(arch, str):
        return parse_ops(arch)
    if arch.space != "nb201":
        raise NasforgeError(f"expected an nb201 architecture, got one of space {arch.space!r}")
    return tuple(str(arch[name]) for name in EDGE_NAMES)


def functional_ops(ops: Sequence[str], symmetric: bool = True) -> tuple[str, ...]:
    """The canonical representative of the cells that compute the same function as ``ops``.

    - An edge whose output is never used (its target has no path to the output) is
      'none', and so is a parameter-free edge (skip, pooling) from a node that is always
      zero. A conv edge from a zero node stays: its batch norm adds a learned constant.
    - A cell whose output is always zero is all 'none'.
    - ``symmetric``: nodes 1 and 2 are interchangeable when no edge joins them (node sums
      commute), so of the two orderings the lexicographically smaller one is chosen.
    Parameters on a dead edge still exist in the built network (and count in #params,
    FLOPs and latency); only the function, and so the reachable accuracy, is shared.
    """
    op = {(j, i): o for o, (j, i) in zip(ops, EDGES, strict=True)}  # (to, from) -> op
    last = NUM_NODES - 1

    def carries(j: int, i: int) -> bool:  # edge i -> j can put a non-zero value on node j
        return op[(j, i)] != "none" and (i in nonzero or op[(j, i)].startswith("nor_conv"))

    nonzero = {0}
    for j in range(1, NUM_NODES):
        if any(carries(j, i) for i in range(j)):
            nonzero.add(j)
    useful = {last}  # nodes with a path to the output
    for i in range(last - 1, 0, -1):
        if any(op[(j, i)] != "none" and j in useful for j in range(i + 1, NUM_NODES)):
            useful.add(i)
    out = {
        (j, i): o if last in nonzero and j in useful and carries(j, i) else "none"
        for (j, i), o in op.items()
    }
    first = tuple(out[e] for e in EDGES)
    if not symmetric or out[(2, 1)] != "none":
        return first
    swapped = {(1, 0): out[(2, 0)], (2, 0): out[(1, 0)], (2, 1): "none", (3, 0): out[(3, 0)],
               (3, 1): out[(3, 2)], (3, 2): out[(3, 1)]}  # fmt: skip
    return min(first, tuple(swapped[e] for e in EDGES))


# -- the space --------------------------------------------------------------------------
@register("nb201")
class NB201Space(SearchSpace):
    """NAS-Bench-201 cell space: 6 edges x 5 ops (15,625 archs), the published network."""

    def __init__(self, C: int = 16, N: int = 5) -> None:
        for key, v, hi in (("C", C, 4096), ("N", N, 64)):
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
                raise NasforgeError(f"nb201: {key} must be an integer from 1 to {hi}, got {v!r}")
        self.C, self.N = C, N
        self._choices = tuple(Choice(name, OP_NAMES) for name in EDGE_NAMES)

    def config(self) -> dict[str, Any]:
        return {"C": self.C, "N": self.N}

    def choices(self) -> tuple[Choice, ...]:
        return self._choices

    def format(self, arch: Arch) -> str:
        return format_ops([str(v) for v in arch.values])

    def parse(self, text: str) -> Arch:
        return self.make(parse_ops(text))

    def equivalence_key(self, arch: Arch) -> str:
        """The string of :func:`functional_ops`: cells that compute the same network."""
        return format_ops(functional_ops(arch_to_ops(arch)))

    def _build(self, arch: Arch, input_shape: Sequence[int], num_classes: int | None,
               head: bool = True) -> NB201Network:
        """The published network of ``arch``; without its head for a backbone."""
        ops = arch_to_ops(arch)
        shape = tuple(input_shape)
        if len(shape) != 3 or any(
            isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape
        ):
            raise NasforgeError(
                f"nb201: input_shape must be (channels, height, width), got {input_shape!r}"
            )
        c_in, h, w = shape
        if min(h, w) < MIN_INPUT_SIZE:
            raise NasforgeError(
                f"nb201: input {h}x{w} is too small; the network halves the resolution twice, "
                f"so it needs at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} (resize or pad the images)"
            )
        if head and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                     or num_classes < 1):
            raise NasforgeError(f"nb201: num_classes must be an integer >= 1, got {num_classes!r}")
        return NB201Network(lambda ci, co: Cell(ops, ci, co, 1), self.C, self.N, c_in,
                            num_classes if head else None)

    def build(self, arch: Arch, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        return self._build(arch, input_shape, num_classes)

    def build_backbone(self, arch: Arch, input_shape: Sequence[int]) -> Backbone:
        """Stem and cells without the head: the three cell stages are the levels."""
        return self._build(arch, input_shape, None, head=False)
