"""Few-shot NAS (Zhao et al. 2021): split the one-shot supernet on one edge's operation.

One supernet shares every op's weights among all 15,625 sub-networks, so a sub-network's
inherited accuracy mixes in what the other paths needed from the same weights. Splitting
on edge ``e`` gives ``NUM_OPS`` sub-supernets, each a copy of the trained one-shot
supernet whose edge ``e`` always takes one op, trained further on its own paths only:
fewer architectures share each set of weights, and the paper reports a better ranking
at a few times the one-shot cost. An architecture is scored by the sub-supernet of its
op on ``e``; :class:`FewShotSupernet` dispatches to it, so the SPOS estimator
(:class:`~nasforge.oneshot.spos.InheritedWeightsEstimator`) works on it unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from nasforge.errors import NasforgeError
from nasforge.oneshot.supernet import NUM_EDGES, NUM_OPS, Supernet, path_indices


class FewShotSupernet(nn.Module):
    """``NUM_OPS`` sub-supernets split on ``edge``; ``forward(x, path)`` runs the one
    whose fixed op is ``path[edge]``."""

    def __init__(self, parts: list[Supernet], edge: int) -> None:
        super().__init__()
        if len(parts) != NUM_OPS:
            raise NasforgeError(f"a split on one edge has {NUM_OPS} parts, got {len(parts)}")
        if not 0 <= edge < NUM_EDGES:
            raise NasforgeError(f"edge must be in 0..{NUM_EDGES - 1}, got {edge}")
        self.parts = nn.ModuleList(parts)
        self.edge = edge
        self.space = parts[0].space

    def forward(self, x: torch.Tensor, path: Any) -> torch.Tensor:
        p = path_indices(path)
        return self.parts[p[self.edge]](x, p)


def split_supernet(supernet: Supernet, edge: int) -> FewShotSupernet:
    """The one-shot ``supernet`` copied once per op of ``edge`` (its weights inherited)."""
    return FewShotSupernet([copy.deepcopy(supernet) for _ in range(NUM_OPS)], edge)


def train_fewshot(
    fewshot: FewShotSupernet,
    train: Callable[..., dict[str, Any]],
    **kw: Any,
) -> list[dict[str, Any]]:
    """Train every part with ``train`` (e.g. :func:`~nasforge.oneshot.spos.train_supernet`)
    on its own paths only (``fixed={edge: op}``); one history per part. ``seed`` in
    ``kw`` is offset per part so the parts see different batch orders."""
    seed = int(kw.pop("seed", 0))
    return [train(part, fixed={fewshot.edge: o}, seed=seed + o, **kw)
            for o, part in enumerate(fewshot.parts)]
