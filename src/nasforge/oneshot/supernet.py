"""The NAS-Bench-201 weight-sharing supernet that SPOS, DARTS and GDAS all train.

One :class:`MixedCell` holds all five candidate ops on each of the six edges, built with
the very op factories (:data:`~nasforge.spaces.nb201.OPS`) of the stand-alone
:class:`~nasforge.spaces.nb201.Cell`, inside the same
:class:`~nasforge.spaces.nb201.NB201Network` skeleton. That is what makes a sub-network
*extractable*: the stand-alone network's parameter ``cells.k.edges.e.<rest>`` is the
supernet's ``cells.k.edges.e.<op>.<rest>``, so :meth:`Supernet.extract` only renames keys
and the copy computes exactly what the supernet computes for that path.

The cell's forward takes what to run on each edge as one argument, so the same module
serves every method:

- a *path* (one op index per edge, e.g. from an :class:`~nasforge.spaces.base.Arch`):
  single-path one-shot (SPOS), only the chosen op runs;
- a float tensor of shape (6, 5): DARTS' continuous relaxation, a weighted sum of all ops;
- a :class:`GumbelPath`: GDAS, only the sampled op runs, scaled by its straight-through
  weight so the architecture logits still get a gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from nasforge.errors import NasforgeError
from nasforge.spaces.base import Arch
from nasforge.spaces.nb201 import (
    EDGES,
    MIN_INPUT_SIZE,
    NUM_NODES,
    OP_NAMES,
    OPS,
    NB201Network,
    NB201Space,
    arch_to_ops,
)

NUM_EDGES = len(EDGES)
NUM_OPS = len(OP_NAMES)

#: anything that names one op per edge: an Arch, an NB201 string, op names or op indices
PathLike = Arch | str | Sequence[int] | Sequence[str]


@dataclass(frozen=True)
class GumbelPath:
    """A GDAS sample: straight-through one-hot ``weights`` (6, 5) and the chosen op per edge."""

    weights: torch.Tensor
    index: tuple[int, ...]


def path_indices(path: PathLike) -> tuple[int, ...]:
    """One op index per edge (in :data:`EDGES` order) from any :data:`PathLike`."""
    if isinstance(path, Arch | str):
        ops: Sequence[Any] = arch_to_ops(path)
    else:
        ops = list(path)
    if len(ops) != NUM_EDGES:
        raise NasforgeError(f"a path needs one op per edge ({NUM_EDGES}), got {len(ops)}")
    out: list[int] = []
    for op in ops:
        if isinstance(op, str):
            if op not in OP_NAMES:
                raise NasforgeError(f"unknown op {op!r}; ops are {list(OP_NAMES)}")
            out.append(OP_NAMES.index(op))
        else:
            i = int(op)
            if not 0 <= i < NUM_OPS:
                raise NasforgeError(f"op index {i} out of range 0..{NUM_OPS - 1}")
            out.append(i)
    return tuple(out)


def path_to_arch(space: NB201Space, path: PathLike) -> Arch:
    """The space's :class:`Arch` for a path."""
    return space.make([OP_NAMES[i] for i in path_indices(path)])


class MixedCell(nn.Module):
    """An NB201 cell whose every edge holds all five ops (see module docstring).

    ``edges[e][o]`` is op ``OP_NAMES[o]`` of edge ``EDGES[e]``, built exactly as the
    stand-alone :class:`~nasforge.spaces.nb201.Cell` builds it. ``aux_skip`` (DARTS-)
    adds ``aux_skip * input`` to every edge's output.
    """

    def __init__(
        self,
        C_in: int,
        C_out: int,
        stride: int = 1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.edges = nn.ModuleList(
            nn.ModuleList(
                OPS[op](C_in, C_out, stride, affine, track_running_stats)
                if i == 0
                else OPS[op](C_out, C_out, 1, affine, track_running_stats)
                for op in OP_NAMES
            )
            for _, i in EDGES
        )
        self.in_dim, self.out_dim = C_in, C_out

    def _edge(self, k: int, h: torch.Tensor, arch: Any) -> torch.Tensor:
        ops = self.edges[k]
        if isinstance(arch, GumbelPath):
            chosen = arch.index[k]
            w = arch.weights[k]
            # the other ops contribute their (zero-valued) weights: no compute, but a
            # gradient path to alpha through the straight-through estimator
            total: torch.Tensor = w[chosen] * ops[chosen](h)
            for o in range(NUM_OPS):
                if o != chosen:
                    total = total + w[o]
            return total
        if isinstance(arch, torch.Tensor):
            out: torch.Tensor | None = None
            for o, op in enumerate(ops):
                y = arch[k, o] * op(h)
                out = y if out is None else out + y
            assert out is not None
            return out
        return ops[arch[k]](h)

    def forward(self, x: torch.Tensor, arch: Any, aux_skip: float = 0.0) -> torch.Tensor:
        nodes = [x]
        k = 0
        for j in range(1, NUM_NODES):
            total: torch.Tensor | None = None
            for i in range(j):
                y = self._edge(k, nodes[i], arch)
                if aux_skip:
                    y = y + aux_skip * nodes[i]
                total = y if total is None else total + y
                k += 1
            assert total is not None
            nodes.append(total)
        return nodes[-1]


def check_input(input_shape: Sequence[int], num_classes: int) -> tuple[int, int, int]:
    """Validate ``(C, H, W)`` and ``num_classes`` like ``NB201Space.build`` does."""
    shape = tuple(input_shape)
    if len(shape) != 3 or any(
        isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape
    ):
        raise NasforgeError(f"input_shape must be (channels, height, width), got {input_shape!r}")
    if min(shape[1:]) < MIN_INPUT_SIZE:
        raise NasforgeError(
            f"input {shape[1]}x{shape[2]} is too small for nb201 (it needs at least "
            f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}); load the data with a larger image_size"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise NasforgeError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    return shape  # type: ignore[return-value]


class Supernet(nn.Module):
    """Weight-sharing supernet of the ``nb201`` space (SPOS by default).

    ``forward(x, path)`` runs the sub-network ``path`` (an Arch, its string, op names or
    op indices), or a DARTS weight matrix, or a :class:`GumbelPath`. SPOS needs affine
    BN with running statistics (the stand-alone network has them, and :meth:`extract`
    copies them); DARTS and GDAS follow NAS-Bench-201 and use ``affine=False,
    track_running_stats=False`` in the searched cells.
    """

    def __init__(
        self,
        space: NB201Space,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(space, NB201Space):
            raise NasforgeError(
                "the one-shot supernet is built for the nb201 space, "
                f"not {getattr(space, 'name', space)!r}"
            )
        self.space = space
        self.input_shape = check_input(input_shape, num_classes)
        self.num_classes = num_classes
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.net = NB201Network(
            lambda ci, co: MixedCell(ci, co, 1, affine, track_running_stats),
            space.C,
            space.N,
            self.input_shape[0],
            num_classes,
        )

    def forward(self, x: torch.Tensor, path: Any, aux_skip: float = 0.0) -> torch.Tensor:
        if not isinstance(path, torch.Tensor | GumbelPath):
            path = path_indices(path)
        return self.net(x, path, aux_skip)

    def subnet_forward(self, arch: PathLike, x: torch.Tensor) -> torch.Tensor:
        """Logits of the sub-network ``arch`` with the shared weights."""
        return self(x, path_indices(arch))

    def sample_path(self, rng: np.random.Generator,
                    fixed: Mapping[int, int] | None = None) -> tuple[int, ...]:
        """A uniformly random path: each edge's op uniform and independent (SPOS);
        ``fixed`` maps edges to the op they always take (a few-shot sub-supernet)."""
        path = [int(v) for v in rng.integers(NUM_OPS, size=NUM_EDGES)]
        for e, o in (fixed or {}).items():
            path[e] = int(o)
        return tuple(path)

    def fair_paths(self, rng: np.random.Generator,
                   fixed: Mapping[int, int] | None = None) -> list[tuple[int, ...]]:
        """``NUM_OPS`` paths that together use every op of every edge exactly once
        (FairNAS's strict fairness, Chu et al. 2021): one random permutation per edge.

        Uniform single-path sampling trains every op equally often only in expectation;
        in a short CPU-budget training the ops that happen to be drawn more often pull
        ahead, a bias in the inherited ranking that strict fairness removes. A ``fixed``
        edge takes its op in every path.
        """
        perms = [rng.permutation(NUM_OPS) for _ in range(NUM_EDGES)]
        fixed = fixed or {}
        return [tuple(int(fixed.get(e, perms[e][i])) for e in range(NUM_EDGES))
                for i in range(NUM_OPS)]

    # -- extraction --------------------------------------------------------------------
    def _shared_key(self, key: str, path: tuple[int, ...]) -> str:
        """The supernet state-dict key of a stand-alone network's ``key`` on ``path``."""
        parts = key.split(".")
        if (
            len(parts) > 4
            and parts[0] == "cells"
            and parts[2] == "edges"
            and not self.net.is_reduction[int(parts[1])]
        ):
            parts.insert(4, str(path[int(parts[3])]))
        return ".".join(parts)

    def extract(self, arch: PathLike) -> nn.Module:
        """The stand-alone network (``space.build``) of ``arch`` with the shared weights copied in.

        Buffers (BN running statistics) are copied too, so recalibrate first
        (:func:`recalibrate_bn`) to get a network that is accurate in eval mode.
        """
        if not (self.affine and self.track_running_stats):
            raise NasforgeError(
                "extract needs a supernet built with affine BN and running statistics "
                "(the SPOS default); a DARTS/GDAS supernet's cells have neither"
            )
        path = path_indices(arch)
        a = path_to_arch(self.space, path)
        model = self.space.build(a, self.input_shape, self.num_classes)
        shared = self.net.state_dict()
        state = {}
        for key, val in model.state_dict().items():
            src = shared[self._shared_key(key, path)]
            if src.shape != val.shape:  # cannot happen unless nb201.py and this file diverge
                raise RuntimeError(
                    f"shape mismatch for {key}: {tuple(src.shape)} vs {tuple(val.shape)}"
                )
            state[key] = src.detach().clone()
        model.load_state_dict(state, strict=True)
        dev = next(self.parameters()).device
        return model.to(dev).train(self.training)


# -------------------------------------------------------------------- batch-norm statistics
def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BN layers of ``model`` that keep running statistics."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def recalibrate_bn(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    forward: Callable[[torch.Tensor], Any] | None = None,
) -> int:
    """Recompute BN running statistics from ``batches``; return how many batches were used.

    Shared BN statistics are an average over every path trained, wrong for any single
    one, so a sub-network's statistics are re-estimated before it is scored: reset, set
    ``momentum=None`` (cumulative average, so every batch counts equally), and forward
    the batches in train mode without gradients. ``forward`` defaults to ``model``.
    """
    fwd = forward if forward is not None else model
    bns = batchnorms(model)
    momenta = [m.momentum for m in bns]
    was_training = model.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    n = 0
    model.train()
    try:
        with torch.no_grad():
            for xb in batches:
                fwd(xb)
                n += 1
    finally:
        for m, mom in zip(bns, momenta, strict=True):
            m.momentum = mom
        model.train(was_training)
    return n


def calibration_batches(
    x: torch.Tensor, num_batches: int, batch_size: int, rng: np.random.Generator
) -> list[torch.Tensor]:
    """``num_batches`` random training batches (without replacement across batches)."""
    n = len(x)
    take = min(n, num_batches * batch_size)
    idx = torch.from_numpy(rng.permutation(n)[:take])
    batches = [x[idx[i : i + batch_size]] for i in range(0, take, batch_size)]
    return [b for b in batches if len(b) > 1]  # BN in train mode cannot use a batch of one
