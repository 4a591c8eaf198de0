"""The :class:`Dataset` splits and the seeded, stratified (or random) index helpers
every loader and every fidelity subset uses, so subsets match wherever drawn."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Dataset:
    """Train / validation / test splits as normalized float32 arrays of shape (N, C, H, W)
    (images) or (N, F) (tables: ``mean``/``std`` are then per feature).

    The validation split is held out from the training data and is what the search
    sees; the test split is touched once, for the final report. ``mean``/``std`` are the
    per-channel statistics used to normalize (inputs were scaled to [0, 1] first), kept
    so that a loaded model can normalize new images the same way.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str] = field(default_factory=list)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    #: what is predicted (a name in :mod:`nasforge.tasks`); regression targets are float32
    #: (N,) or (N, k) in the user's units, standardized only inside the task
    task: str = "classification"
    target_names: list[str] = field(default_factory=list)
    task_options: dict[str, Any] = field(default_factory=dict)
    #: what one sample is, which decides the spaces that fit (a space's ``input_kind``):
    #: ``"image"`` (C, H, W) for the image loaders, ``"tabular"`` (F,) for tables
    input_kind: str = "image"
    #: what turns raw inputs into ``x`` beyond ``mean``/``std``, as JSON data (tables: the
    #: fitted column steps of :class:`~nasforge.data.tabular.TabularPreprocessor`); stored
    #: with an exported model so ``predict`` repeats it
    preprocessing: dict[str, Any] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape: (C, H, W) for images, (F,) for tables."""
        return tuple(int(s) for s in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def stratify(self) -> bool:
        """Whether subsets keep class shares (classification) or are drawn at random."""
        from nasforge import tasks

        return bool(tasks.registry.factory(self.task).stratify)  # type: ignore[attr-defined]

    def make_task(self) -> Any:
        """The :class:`~nasforge.tasks.Task`, fitted to the training targets: every trial,
        the final model and the export use the same fit, as it is computed from the same
        split."""
        from nasforge import tasks

        opts = dict(self.task_options)
        if self.task == "classification" or "classes" in \
                tasks.registry.accepted_options(self.task)[0]:
            opts.setdefault("classes", list(self.classes))
        elif "target_names" in tasks.registry.accepted_options(self.task)[0]:
            opts.setdefault("target_names", list(self.target_names))
        return tasks.get(self.task, **opts).fit(self.y_train)

    def build_network(self, space: Any, arch: Any,
                      input_shape: tuple[int, ...] | None = None) -> Any:
        """The network a trial (or the final training) trains for ``arch``: built by this
        data's task (:meth:`~nasforge.tasks.Task.build_network`), at ``input_shape`` (the
        data's own by default; a resolution fidelity gives another)."""
        shape = tuple(input_shape or self.input_shape)
        return self.make_task().build_network(space, space_arch(space, arch), shape)

    @property
    def n_outputs(self) -> int:
        """The head's width: classes, or regression targets."""
        if self.task == "classification":
            return self.num_classes
        return self.make_task().n_outputs()

    def subset(self, y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
        """Sorted indices of a seeded ``fraction`` of targets ``y``: stratified for
        classification, uniform at random otherwise."""
        return subset_indices(y, fraction, seed, self.stratify)


def space_arch(space: Any, arch: Any) -> Any:
    """``arch`` itself, or parsed when given as its text."""
    return space.parse(arch) if isinstance(arch, str) else arch


def stratified_split(
    y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(keep, held_out)``: ``round(N * fraction)`` held out, spread over classes.

    Each class gives ``floor(n_c * fraction)`` and the remaining examples go to the
    classes with the largest remainders (ties broken at random), so the total is exact
    and class proportions match as closely as integers allow. Every class keeps at
    least one example; with ``fraction > 0`` at least one example is held out when
    possible, so small data sets still get a non-empty split. Both arrays are sorted.
    """
    y = np.asarray(y)
    classes = np.unique(y)
    groups = [rng.permutation(np.flatnonzero(y == c)) for c in classes]
    sizes = np.array([len(g) for g in groups])
    cap = sizes - 1  # every class keeps one
    exact = sizes * fraction
    take = np.minimum(np.floor(exact).astype(np.int64), cap)
    target = min(max(int(round(len(y) * fraction)), 1 if fraction > 0 else 0), int(cap.sum()))
    order = np.lexsort((rng.random(len(groups)), -(exact - np.floor(exact))))
    while take.sum() < target:  # hand out the rest by largest remainder, then round-robin
        progressed = False
        for i in order:
            if take.sum() >= target:
                break
            if take[i] < cap[i]:
                take[i] += 1
                progressed = True
        if not progressed:
            break
    held = [g[:k] for g, k in zip(groups, take, strict=True)]
    keep = [g[k:] for g, k in zip(groups, take, strict=True)]
    h = np.concatenate(held) if held else np.zeros(0, np.int64)
    k_all = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    return np.sort(k_all).astype(np.int64), np.sort(h).astype(np.int64)


def stratified_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a seeded, stratified ``fraction`` of ``y`` (all of it at 1.0)."""
    if fraction >= 1.0:
        return np.arange(len(y), dtype=np.int64)
    _, sub = stratified_split(y, fraction, np.random.default_rng(seed))
    if sub.size == 0:  # fraction so small that rounding took nothing: keep one example
        sub = np.array([int(np.random.default_rng(seed).integers(len(y)))], dtype=np.int64)
    return sub


def random_split(n: int, fraction: float, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(keep, held_out)`` of ``n`` examples, ``round(n * fraction)`` held out at
    random (at least one when ``fraction > 0`` and ``n > 1``); both sorted. The
    regression counterpart of :func:`stratified_split`."""
    k = min(max(int(round(n * fraction)), 1 if fraction > 0 and n > 1 else 0), max(n - 1, 0))
    perm = rng.permutation(n)
    return np.sort(perm[k:]).astype(np.int64), np.sort(perm[:k]).astype(np.int64)


def subset_indices(y: np.ndarray, fraction: float, seed: int, stratify: bool = True
                   ) -> np.ndarray:
    """A seeded ``fraction`` of ``y``'s indices, stratified or at random (sorted)."""
    if stratify:
        return stratified_subset(y, fraction, seed)
    if fraction >= 1.0:
        return np.arange(len(y), dtype=np.int64)
    _, sub = random_split(len(y), fraction, np.random.default_rng(seed))
    if sub.size == 0 and len(y):
        sub = np.array([int(np.random.default_rng(seed).integers(len(y)))], dtype=np.int64)
    return sub


def _limit(x: np.ndarray, y: np.ndarray, n: int, seed: int, stratify: bool = True
           ) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` examples, a stratified subset so class balance is kept."""
    if n >= len(y):
        return x, y
    idx = subset_indices(y, n / len(y), seed, stratify)
    return x[idx], y[idx]



def _split(y: np.ndarray, fraction: float, rng: np.random.Generator, stratify: bool
           ) -> tuple[np.ndarray, np.ndarray]:
    return stratified_split(y, fraction, rng) if stratify else random_split(len(y), fraction, rng)
