"""A single-path weight-sharing supernet over the ``darts`` space (SPOS and FairNAS).

The NAS-Bench-201 supernet (:mod:`nasforge.oneshot.supernet`) shares weights over a fixed
DAG whose edges pick an op. A ``darts`` cell is different: node ``k`` picks *two inputs*
among the cell inputs and earlier nodes, and an op for each. So a :class:`DartsMixedCell`
holds, for every node ``k``, every candidate input ``i`` (``0 .. k + 1``) and every op,
one module, built with the stand-alone space's own :func:`~nasforge.spaces.darts.make_op`
(stride 2 on the cell inputs of a reduction cell, as :class:`~nasforge.spaces.darts.DartsCell`
does); a path runs, for each node, only its two chosen ``(input, op)`` modules. Every
cell of the network has its own weights, as :class:`~nasforge.spaces.darts.DartsNetwork`
has.

That makes a path *extractable*: the stand-alone network's ``cells.c._ops.e.<rest>``
(edge ``e`` of node ``e // 2``) is the supernet's ``cells.c.edges.k.i.o.<rest>`` for the
edge's input ``i`` and op ``o``; every other name (stem, preprocessing, classifier) is
the same, so :meth:`DartsSpaceSupernet.extract` renames keys and the copy computes what the
supernet computes on that path. A node that reads the same input with the same op twice
runs that one shared module twice; its stand-alone copy gets the weights in both edges.

Paths are :class:`~nasforge.spaces.darts.Genotype` values, not archs: an :class:`Arch`
is canonicalized (a node's two edges sorted), which would undo the per-slot bookkeeping
of strict fairness (:meth:`DartsSpaceSupernet.fair_paths`). The sampling and the scoring
reuse the NAS-Bench-201 machinery: :func:`~nasforge.oneshot.spos.train_supernet` (it only
asks the supernet for ``sample_path`` / ``fair_paths``),
:class:`~nasforge.oneshot.spos.InheritedWeightsEstimator` (it asks for ``path_of``) and
:func:`~nasforge.oneshot.spos.spos_search`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nasforge.errors import NasforgeError
from nasforge.spaces.base import Arch
from nasforge.spaces.darts import (
    CELLS,
    DartsSpace,
    FactorizedReduce,
    Genotype,
    ReLUConvBN,
    concat_of,
    drop_path,
    make_op,
)

if TYPE_CHECKING:
    from nasforge.data import Dataset

#: anything that names one sub-network: an Arch of the space, its string, or a Genotype
DartsPathLike = Arch | str | Genotype


class DartsMixedCell(nn.Module):
    """A ``darts`` cell with every (node, input, op) module (see the module docstring).

    ``edges[k][i][o]`` is op ``op_names[o]`` applied to input ``i`` of node ``k``.
    """

    def __init__(self, op_names: Sequence[str], nodes: int, concat: Sequence[int],
                 C_pp: int, C_p: int, C: int, reduction: bool, reduction_prev: bool) -> None:
        super().__init__()
        # the same preprocessing as DartsCell (same attribute names: extract copies them)
        self.preprocess0 = FactorizedReduce(C_pp, C) if reduction_prev else \
            ReLUConvBN(C_pp, C, 1, 1, 0)
        self.preprocess1 = ReLUConvBN(C_p, C, 1, 1, 0)
        self.op_names = tuple(op_names)
        self.nodes = nodes
        self.reduction = reduction
        self.concat = list(concat)
        self.multiplier = len(self.concat)
        self.edges = nn.ModuleList(
            nn.ModuleList(
                nn.ModuleList(make_op(op, C, 2 if reduction and i < 2 else 1)
                              for op in self.op_names)
                for i in range(k + 2))
            for k in range(nodes))
        self.drop_prob = 0.0

    def forward(self, s0: torch.Tensor, s1: torch.Tensor,
                edges: Sequence[tuple[int, int]]) -> torch.Tensor:
        """``edges``: per node two ``(input, op index)`` pairs, node by node."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for k in range(self.nodes):
            total: torch.Tensor | None = None
            for i, o in edges[2 * k:2 * k + 2]:
                op = self.edges[k][i][o]
                h = op(states[i])
                if self.training and self.drop_prob > 0 and not isinstance(op, nn.Identity):
                    h = drop_path(h, self.drop_prob)
                total = h if total is None else total + h
            assert total is not None
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


#: a path: for the normal and the reduction cell, per edge (node by node, two per node)
#: its ``(input, op index)``
DartsPath = tuple[tuple[tuple[int, int], ...], tuple[tuple[int, int], ...]]


class DartsSpaceSupernet(nn.Module):
    """Weight-sharing supernet of a :class:`~nasforge.spaces.darts.DartsSpace`.

    The skeleton is :class:`~nasforge.spaces.darts.DartsNetwork`'s (a 3x3 stem with
    ``3 * C`` channels and BN, ``layers`` cells with reductions at ``layers // 3`` and
    ``2 * layers // 3``, global average pooling, a linear classifier) with the same
    attribute names; only the cells are mixed. ``forward(x, path)`` runs one sub-network
    (an Arch, its string, a Genotype, or a :data:`DartsPath`).

    ``concat="loose"`` is refused: the cell's output channels would depend on the arch,
    so no single set of weights fits every path (``"all"`` and explicit lists do).
    """

    def __init__(self, space: DartsSpace, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        if not isinstance(space, DartsSpace):
            raise NasforgeError("DartsSpaceSupernet is built for the darts space, not "
                                f"{getattr(space, 'name', space)!r} (nb201: oneshot.Supernet)")
        if space.concat == "loose":
            raise NasforgeError("darts supernet: concat='loose' makes a cell's width depend "
                                "on the arch, so no shared weights fit every path; use "
                                "concat='all' or explicit lists")
        shape = tuple(input_shape)
        if len(shape) != 3 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1
                                  for d in shape):
            raise NasforgeError(f"input_shape must be (channels, height, width), got "
                                f"{input_shape!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise NasforgeError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        self.space = space
        self.input_shape = shape
        self.num_classes = num_classes
        self.op_names = tuple(space.op_names)
        self.nodes = space.nodes
        C, layers = space.C, space.layers
        # DartsNetwork's skeleton, line for line (the extract test checks the names match)
        C_curr = 3 * C
        self.stem = nn.Sequential(nn.Conv2d(shape[0], C_curr, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(C_curr))
        C_pp, C_p, C_curr = C_curr, C_curr, C
        self.cells = nn.ModuleList()
        reductions = {layers // 3, 2 * layers // 3}
        red_prev = False
        dummy = [(0, "skip_connect")] * (2 * self.nodes)  # concat_of only needs the length
        for i in range(layers):
            red = i in reductions
            if red:
                C_curr *= 2
            which = "reduce" if red else "normal"
            cell = DartsMixedCell(self.op_names, self.nodes,
                                  concat_of([(o, j) for j, o in dummy], space.concat, which),
                                  C_pp, C_p, C_curr, red, red_prev)
            cell.drop_prob = space.drop_path
            self.cells.append(cell)
            red_prev = red
            C_pp, C_p = C_p, cell.multiplier * C_curr
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(C_p, num_classes)

    # -- paths ---------------------------------------------------------------------------
    def path_of(self, arch: DartsPathLike | DartsPath) -> DartsPath:
        """The :data:`DartsPath` of ``arch`` (validated against this supernet's space)."""
        if isinstance(arch, str):
            arch = self.space.parse(arch)
        if isinstance(arch, Arch):
            if arch.space != self.space.name:
                raise NasforgeError(f"expected a darts architecture, got one of space "
                                    f"{arch.space!r}")
            want = {c.name for c in self.space.choices()}
            if set(arch.as_dict()) != want:
                raise NasforgeError("the arch is not of this supernet's space (its choices "
                                    f"differ: the space has nodes={self.nodes}, "
                                    f"ops={self.space.ops})")
            arch = self.space.genotype(arch)
        if isinstance(arch, Genotype):
            cells = []
            for c in CELLS:
                edges = arch.cell(c)
                if len(edges) != 2 * self.nodes:
                    raise NasforgeError(f"the {c} cell has {len(edges) // 2} nodes, the "
                                        f"supernet {self.nodes}")
                for op, _ in edges:
                    if op not in self.op_names:
                        raise NasforgeError(f"unknown op {op!r}; the supernet's ops are "
                                            f"{', '.join(self.op_names)}")
                cells.append(tuple((int(i), self.op_names.index(op)) for op, i in edges))
            arch = (cells[0], cells[1])
        return self._check_path(arch)

    def _check_path(self, path: Any) -> DartsPath:
        if not isinstance(path, tuple | list) or len(path) != 2:
            raise NasforgeError("a darts path is an Arch, its string, a Genotype or a pair "
                                "(normal, reduce) of (input, op index) edges")
        out = []
        for c, edges in zip(CELLS, path, strict=True):
            if len(edges) != 2 * self.nodes:
                raise NasforgeError(f"the {c} cell needs {2 * self.nodes} edges, got "
                                    f"{len(edges)}")
            cell = []
            for e, (i, o) in enumerate(edges):
                k = e // 2
                if not 0 <= int(i) < k + 2:
                    raise NasforgeError(f"{c} node {k} can read inputs 0-{k + 1}, got {i}")
                if not 0 <= int(o) < len(self.op_names):
                    raise NasforgeError(f"op index {o} out of range 0..{len(self.op_names) - 1}")
                cell.append((int(i), int(o)))
            out.append(tuple(cell))
        return (out[0], out[1])

    def genotype_of(self, path: DartsPath) -> Genotype:
        """The Genotype of a path (its edges in the path's order)."""
        p = self._check_path(path)
        return Genotype(*(tuple((self.op_names[o], i) for i, o in cell) for cell in p))

    def arch_of(self, path: DartsPath) -> Arch:
        """The space's (canonical) Arch of a path."""
        return self.space.from_genotype(self.genotype_of(path))

    def sample_path(self, rng: np.random.Generator,
                    fixed: Mapping[Any, Any] | None = None) -> DartsPath:
        """A uniform path, as :meth:`DartsSpace.sample` draws an arch: every edge's input
        uniform among ``0 .. k + 1`` and its op uniform, independently."""
        if fixed:
            raise NasforgeError("the darts supernet has no few-shot split (fixed=)")
        n = len(self.op_names)
        return tuple(  # type: ignore[return-value]
            tuple((int(rng.integers(e // 2 + 2)), int(rng.integers(n)))
                  for e in range(2 * self.nodes))
            for _ in CELLS)

    def fair_paths(self, rng: np.random.Generator,
                   fixed: Mapping[Any, Any] | None = None) -> list[DartsPath]:
        """``len(ops)`` paths that together use every op of every (cell, node, slot)
        exactly once (FairNAS's strict fairness, Chu et al. 2021); inputs stay uniform.

        Uniform sampling trains each op equally often only in expectation; in a short CPU
        training the ops drawn more often pull ahead, a bias strict fairness removes.
        ``train_supernet(sampling="fair")`` accumulates the gradients of one such round
        and takes one optimizer step.
        """
        if fixed:
            raise NasforgeError("the darts supernet has no few-shot split (fixed=)")
        n = len(self.op_names)
        perms = [[rng.permutation(n) for _ in range(2 * self.nodes)] for _ in CELLS]
        return [tuple(  # type: ignore[misc]
            tuple((int(rng.integers(e // 2 + 2)), int(perms[c][e][r]))
                  for e in range(2 * self.nodes))
            for c in range(len(CELLS)))
            for r in range(n)]

    # -- forward -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, path: Any) -> torch.Tensor:
        p = self.path_of(path)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, p[1] if cell.reduction else p[0])
        return self.classifier(self.global_pooling(s1).flatten(1))

    def subnet_forward(self, arch: DartsPathLike, x: torch.Tensor) -> torch.Tensor:
        """Logits of the sub-network ``arch`` with the shared weights."""
        return self(x, arch)

    # -- extraction ----------------------------------------------------------------------
    def _shared_key(self, key: str, cell_paths: Sequence[Sequence[tuple[int, int]]]) -> str:
        """The supernet key of a stand-alone key: ``cells.c._ops.e.<rest>`` ->
        ``cells.c.edges.k.i.o.<rest>``; every other key is the same."""
        parts = key.split(".")
        if len(parts) > 4 and parts[0] == "cells" and parts[2] == "_ops":
            c, e = int(parts[1]), int(parts[3])
            i, o = cell_paths[c][e]
            return ".".join(["cells", parts[1], "edges", str(e // 2), str(i), str(o),
                             *parts[4:]])
        return key

    def extract(self, arch: DartsPathLike | DartsPath) -> nn.Module:
        """The stand-alone network (``space.build``) of ``arch`` with the shared weights
        (and BN buffers: recalibrate first, :func:`~nasforge.oneshot.supernet.recalibrate_bn`)
        copied in, on the supernet's device and in its train/eval mode."""
        a = self.arch_of(self.path_of(arch))
        model = self.space.build(a, self.input_shape, self.num_classes)
        # the arch is canonical (a node's two edges sorted), and so is what was built: map
        # its edges, which sum to the same node as the path's
        g = self.space.genotype(a)
        per_type = {c: [(i, self.op_names.index(op)) for op, i in g.cell(c)] for c in CELLS}
        cell_paths = [per_type["reduce" if cell.reduction else "normal"] for cell in self.cells]
        shared = self.state_dict()
        state = {}
        for key, val in model.state_dict().items():
            src = shared[self._shared_key(key, cell_paths)]
            if src.shape != val.shape:  # cannot happen unless darts.py and this file diverge
                raise RuntimeError(f"shape mismatch for {key}: {tuple(src.shape)} vs "
                                   f"{tuple(val.shape)}")
            state[key] = src.detach().clone()
        model.load_state_dict(state, strict=True)
        dev = next(self.parameters()).device
        return model.to(dev).train(self.training)


def train_darts_supernet(
    supernet: DartsSpaceSupernet,
    data: Dataset,
    epochs: int | None = None,
    *,
    seconds: float | None = None,
    sampling: str = "uniform",
    seed: int = 0,
    lr: float = 0.05,
    batch_size: int = 64,
    deadline: float | None = None,
    device: str | torch.device | None = None,
    probe_steps: int = 2,
    **kw: Any,
) -> dict[str, Any]:
    """Train the shared weights of a darts supernet: SPOS (``sampling="uniform"``, one
    path per step) or FairNAS (``"fair"``: each step sums the gradients of a strictly
    fair round of ``len(ops)`` paths), with SGD and a per-step cosine schedule.

    This is :func:`~nasforge.oneshot.spos.train_supernet` (the same loop, checkpoints and
    no BN batch of one), plus a wall-clock budget: with ``seconds`` (and no ``epochs``)
    a few steps on a copy of the supernet time one step (a strictly fair step: a whole
    fair round), the steps that fit in the rest of the budget become ``max_steps`` (over
    as many epochs as they need, the last one partial), so the cosine schedule ends in
    time, and training
    also stops at ``seconds`` (checked between steps; the probe's own steps count
    too). ``device`` defaults to the supernet's.
    Extra keywords go to ``train_supernet`` (``momentum``, ``weight_decay``, ``checkpoint``...).
    """
    from nasforge.oneshot.spos import train_supernet

    if not isinstance(supernet, DartsSpaceSupernet):
        raise NasforgeError("train_darts_supernet trains a DartsSpaceSupernet "
                            "(nb201: oneshot.train_supernet)")
    if (epochs is None) == (seconds is None):
        raise NasforgeError("give exactly one of epochs and seconds")
    if seconds is not None and not (isinstance(seconds, int | float) and math.isfinite(seconds)
                                    and seconds > 0):
        raise NasforgeError(f"seconds must be a positive number, got {seconds!r}")
    dev = torch.device(device) if device is not None else next(supernet.parameters()).device
    t0 = time.monotonic()
    if seconds is not None:
        end = t0 + float(seconds)
        deadline = end if deadline is None else min(deadline, end)
        step_s = _probe_step(supernet, data, sampling, seed, lr, batch_size, dev, probe_steps)
        n = len(data.y_train) * kw.get("data_fraction", 1.0)
        steps_per_epoch = math.ceil(n / min(batch_size, max(1, int(n))))
        # the steps that fit the rest, whole epochs or not: rounding down to whole epochs
        # left up to half the budget unused (a strict-fair epoch can cost most of it)
        fit = max(1, int((end - time.monotonic()) / step_s))
        epochs = math.ceil(fit / steps_per_epoch)
        kw["max_steps"] = fit
    assert epochs is not None
    hist = train_supernet(supernet, data, epochs, batch_size=batch_size, lr=lr, seed=seed,
                          device=dev, deadline=deadline, sampling=sampling, **kw)
    hist["train_time_s"] = time.monotonic() - t0  # with the probe: what the budget paid
    return hist


def _probe_step(supernet: DartsSpaceSupernet, data: Dataset, sampling: str, seed: int,
                lr: float, batch_size: int, dev: torch.device, steps: int) -> float:
    """Seconds of one training step of ``sampling``, from ``steps`` single-path steps
    timed on a copy of the supernet (the real one starts untouched; the first, warm-up,
    step not counted); a strictly fair step is timed as what it is, one fair round of
    ``len(ops)`` paths (single random paths, times ``len(ops)``, misjudged it)."""
    net = copy.deepcopy(supernet).to(dev).train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    rng = np.random.default_rng([seed, 13])
    bs = max(2, min(batch_size, len(data.y_train)))
    times = []
    for _ in range(max(1, steps) + 1):
        idx = rng.choice(len(data.y_train), size=bs, replace=False)
        x = torch.as_tensor(data.x_train[idx], dtype=torch.float32, device=dev)
        y = torch.as_tensor(data.y_train[idx], dtype=torch.long, device=dev)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        for path in (net.fair_paths(rng) if sampling == "fair" else [net.sample_path(rng)]):
            F.cross_entropy(net(x, path), y).backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return float(np.mean(times[1:]))


def darts_inherited_estimator(supernet: DartsSpaceSupernet, data: Dataset,
                              **kw: Any) -> Any:
    """The SPOS inherited-weights estimator (BN recalibrated per candidate) on a darts
    supernet: :class:`~nasforge.oneshot.spos.InheritedWeightsEstimator` itself."""
    from nasforge.oneshot.spos import InheritedWeightsEstimator

    kw.setdefault("device", next(supernet.parameters()).device)
    return InheritedWeightsEstimator(supernet, data, **kw)


__all__ = [
    "DartsMixedCell",
    "DartsPath",
    "DartsSpaceSupernet",
    "darts_inherited_estimator",
    "train_darts_supernet",
]
