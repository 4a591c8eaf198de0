"""Architecture encodings for predictors: one-hot (any space) and path (cell spaces).

A predictor-based strategy is only as good as the features it sees. The space's
one-hot ``encode`` works everywhere, but for a cell (a DAG whose edges carry ops) it
describes edges in isolation: an op on an edge that no input->output path uses looks
as important as one on the critical path. The *path encoding* of BANANAS (White et
al., AAAI 2021) instead has one feature per input->output path, labelled by the
sequence of ops along it, so the predictor sees what data actually flows through.

A space is treated as a cell space when every choice is named ``"j<-i"`` (an edge into
node ``j`` from node ``i < j``, as the ``nb201`` space does) and all edges share one
option tuple; node 0 is the input and the largest node the output. Ops named in
``null_ops`` (``"none"``, ``"zero"``) cut the edge, so a path through them does not
exist. Feature ``k`` counts the input->output routes whose op sequence is the ``k``-th
sequence (sequences ordered by length, then lexicographically by op index).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from nasforge.errors import NasforgeError
from nasforge.spaces.base import Arch, SearchSpace, Value

ENCODINGS = ("auto", "onehot", "path", "both")
#: ops that mean "no edge" in a cell
NULL_OPS: tuple[str, ...] = ("none", "zero")

_EDGE_RE = re.compile(r"^\s*(\d+)\s*<-\s*(\d+)\s*$")


def cell_edges(space: SearchSpace) -> list[tuple[int, int]] | None:
    """The ``(to, from)`` node pairs of a cell space's choices, or None if it is not one."""
    choices = space.choices()
    if not choices:
        return None
    edges: list[tuple[int, int]] = []
    for c in choices:
        m = _EDGE_RE.match(c.name)
        if m is None or c.options != choices[0].options:
            return None
        j, i = int(m.group(1)), int(m.group(2))
        if not i < j:
            return None
        edges.append((j, i))
    if len(set(edges)) != len(edges):
        return None
    return edges


def cell_paths(
    edges: Sequence[tuple[int, int]], ops: Sequence[Value], null_ops: Iterable[str] = NULL_OPS
) -> list[tuple[Value, ...]]:
    """Op sequences of all routes from node 0 to the last node, skipping cut edges.

    ``edges[k] = (to, from)`` carries ``ops[k]``. Routes are enumerated depth-first in a
    fixed order, so the result is deterministic.
    """
    null = set(null_ops)
    out_node = max(j for j, _ in edges)
    succ: dict[int, list[tuple[int, Value]]] = {}
    for (j, i), op in zip(edges, ops, strict=True):
        if str(op) not in null:
            succ.setdefault(i, []).append((j, op))
    paths: list[tuple[Value, ...]] = []

    def walk(node: int, seq: tuple[Value, ...]) -> None:
        if node == out_node:
            paths.append(seq)
            return
        for nxt, op in succ.get(node, []):
            walk(nxt, (*seq, op))

    walk(0, ())
    return paths


class Encoder:
    """Maps architectures to fixed-length float32 vectors; caches by arch (encodings are pure)."""

    name = "encoder"

    def __init__(self, size: int) -> None:
        self.size = size
        self._cache: dict[Arch, np.ndarray] = {}

    def _encode(self, arch: Arch) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, arch: Arch) -> np.ndarray:
        v = self._cache.get(arch)
        if v is None:
            if len(self._cache) > 200_000:  # bound memory on huge searches
                self._cache.clear()
            v = self._encode(arch)
            self._cache[arch] = v
        return v

    def many(self, archs: Sequence[Arch]) -> np.ndarray:
        """Encodings of ``archs`` stacked as rows (shape ``(len(archs), size)``)."""
        if not archs:
            return np.zeros((0, self.size), dtype=np.float32)
        return np.stack([self(a) for a in archs])


class OneHotEncoder(Encoder):
    """The space's own one-hot ``encode``: works for every space."""

    name = "onehot"

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space.encoding_size)
        self.space = space

    def _encode(self, arch: Arch) -> np.ndarray:
        return np.asarray(self.space.encode(arch), dtype=np.float32)


class PathEncoder(Encoder):
    """BANANAS path encoding of a cell space (see module docstring).

    Length ``sum(n_ops ** l for l in 1..max_len)`` where ``n_ops`` excludes the null ops
    and ``max_len`` is the longest possible route (``n_nodes - 1``); for nb201 that is
    4 + 16 + 64 = 84. An all-``none`` cell encodes to all zeros.
    """

    name = "path"

    def __init__(self, space: SearchSpace, null_ops: Iterable[str] = NULL_OPS) -> None:
        edges = cell_edges(space)
        if edges is None:
            raise NasforgeError(
                f"path encoding needs a cell space (choices named 'j<-i' with shared ops); "
                f"space {space.name!r} is not one: use encoding='onehot'"
            )
        self.space = space
        self.edges = edges
        self.null_ops = tuple(null_ops)
        self.ops: tuple[Value, ...] = tuple(
            o for o in space.choices()[0].options if str(o) not in self.null_ops
        )
        self._op_index = {o: k for k, o in enumerate(self.ops)}
        self.max_len = self._longest_route()
        n = len(self.ops)
        self._offsets = [0]
        for length in range(1, self.max_len + 1):
            self._offsets.append(self._offsets[-1] + n**length)
        super().__init__(self._offsets[-1])

    def _longest_route(self) -> int:
        """Edges on the longest route from node 0 to the output (DP over edges by source node)."""
        out_node = max(j for j, _ in self.edges)
        best: dict[int, int] = {0: 0}
        for j, i in sorted(self.edges, key=lambda e: (e[1], e[0])):
            if i in best:
                best[j] = max(best.get(j, 0), best[i] + 1)
        return best.get(out_node, 0)

    def index(self, seq: Sequence[Value]) -> int:
        """Feature index of an op sequence (offset of its length + its base-``n_ops`` number)."""
        n = len(self.ops)
        k = 0
        for op in seq:
            k = k * n + self._op_index[op]
        return self._offsets[len(seq) - 1] + k

    def _encode(self, arch: Arch) -> np.ndarray:
        v = np.zeros(self.size, dtype=np.float32)
        for seq in cell_paths(self.edges, arch.values, self.null_ops):
            if seq:
                v[self.index(seq)] += 1.0
        return v


class ConcatEncoder(Encoder):
    """Several encodings side by side (``"both"``: one-hot + path)."""

    name = "both"

    def __init__(self, parts: Sequence[Encoder]) -> None:
        super().__init__(sum(p.size for p in parts))
        self.parts = list(parts)

    def _encode(self, arch: Arch) -> np.ndarray:
        return np.concatenate([p(arch) for p in self.parts])


def make_encoder(space: SearchSpace, encoding: str = "auto") -> Encoder:
    """The encoder named ``encoding``; ``"auto"`` is path for cell spaces, one-hot otherwise."""
    if encoding not in ENCODINGS:
        raise NasforgeError(f"encoding must be one of {list(ENCODINGS)}, not {encoding!r}")
    if encoding == "auto":
        encoding = "path" if cell_edges(space) is not None else "onehot"
    if encoding == "onehot":
        return OneHotEncoder(space)
    if encoding == "path":
        return PathEncoder(space)
    return ConcatEncoder([OneHotEncoder(space), PathEncoder(space)])
