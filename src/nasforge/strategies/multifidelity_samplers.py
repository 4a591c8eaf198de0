"""Where a multi-fidelity bracket's first-rung configurations come from: uniform
(successive halving, Hyperband), BOHB's kernel-density model, or any registered strategy.

Split from :mod:`nasforge.strategies.multifidelity`, which re-exports every name here;
a sampler reads the strategy's rng, space, seen set and results, never its schedule.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.spaces.base import Arch, SearchSpace
from nasforge.strategies.base import Past, Suggestion

if TYPE_CHECKING:
    from nasforge.strategies.multifidelity import MultiFidelityStrategy

#: spaces up to this size are enumerated to find an unseen architecture when sampling fails
ENUMERATE_LIMIT = 4096


# -- samplers: where rung-0 configurations come from ---------------------------------------------
class Sampler:
    """Proposes new configurations for a bracket's first rung.

    ``strategy`` gives the random generator, the space, what was already sampled
    (``strategy.seen``) and every result so far (``strategy.results``).
    """

    name = "sampler"

    def sample(self, strategy: MultiFidelityStrategy) -> Arch:
        raise NotImplementedError

    def observe(self, strategy: MultiFidelityStrategy, suggestion: Suggestion, result: Result,
                rung: int) -> None:
        """Called on every tell that belongs to a bracket (``rung`` 0 is the first)."""

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


def random_unseen(strategy: MultiFidelityStrategy, retries: int = 100) -> Arch:
    """A uniform sample not sampled before, if one can be found (else a repeat)."""
    space, rng, seen = strategy.space, strategy.rng, strategy.seen
    known = strategy.next_known(seen)  # the space's known-good designs first
    if known is not None:
        return known
    arch = space.sample(rng)
    for _ in range(retries):
        if arch.text not in seen:
            return arch
        arch = space.sample(rng)
    if space.size <= ENUMERATE_LIMIT:
        unseen = [a for a in space.enumerate() if a.text not in seen]
        if unseen:
            return unseen[int(rng.integers(len(unseen)))]
    return arch


class RandomSampler(Sampler):
    """Uniform random configurations (Hyperband's and successive halving's sampler)."""

    name = "random"

    def sample(self, strategy: MultiFidelityStrategy) -> Arch:
        return random_unseen(strategy)


class KDESampler(Sampler):
    """BOHB's model: TPE-style ratio of two kernel densities over the one-hot encodings.

    Each choice is read from its one-hot block of ``space.encode`` as a category (an
    all-zero block, an inactive choice, is one more category). Observations at the
    largest budget that has at least ``min_points_in_model`` of them are split into the
    best ``top_n_percent`` ("good") and the rest ("bad"); each set gets a product
    Aitchison-Aitken kernel density (the categorical kernel BOHB uses). A proposal draws
    ``num_samples`` candidates around good points (each choice re-drawn uniformly with
    probability ``bandwidth_factor`` x its bandwidth; HpBandSter's BOHB uses the plain
    bandwidth for categorical choices, hence the default 1) and keeps the unseen one with
    the highest ``l(x) / g(x)``. A ``random_fraction`` of proposals stays uniform, as in
    BOHB, so the model cannot lock the search in. Bandwidths are
    ``(K - 1) / K * (1 + n)**-0.5`` for a choice of ``K`` categories and ``n`` points, so
    the model sharpens as evidence accumulates.
    """

    name = "kde"

    def __init__(self, min_points_in_model: int | None = None, top_n_percent: float = 15.0,
                 num_samples: int = 64, random_fraction: float = 1 / 3,
                 bandwidth_factor: float = 1.0, min_bandwidth: float = 1e-3) -> None:
        if not 0 < top_n_percent < 100:
            raise NasforgeError(f"top_n_percent must be in (0, 100), got {top_n_percent!r}")
        if not 0 <= random_fraction <= 1:
            raise NasforgeError(f"random_fraction must be in [0, 1], got {random_fraction!r}")
        if num_samples < 1:
            raise NasforgeError("num_samples must be at least 1")
        self.min_points_in_model = min_points_in_model
        self.top_n_percent = float(top_n_percent)
        self.num_samples = int(num_samples)
        self.random_fraction = float(random_fraction)
        self.bandwidth_factor = float(bandwidth_factor)
        self.min_bandwidth = float(min_bandwidth)
        self._cache: dict[str, np.ndarray] = {}
        self._layout_cache: tuple[np.ndarray, np.ndarray] | None = None
        self.n_model_samples = 0  # proposals that came from the model (for reports/tests)

    def state(self) -> dict[str, Any]:
        return {"n_model_samples": self.n_model_samples}

    def load_state(self, state: dict[str, Any]) -> None:
        self.n_model_samples = int(state.get("n_model_samples", 0))

    # -- encodings --------------------------------------------------------------------------
    def _layout(self, space: SearchSpace) -> tuple[np.ndarray, np.ndarray]:
        """Options per choice and where each one-hot block starts."""
        if self._layout_cache is None:
            sizes = np.array([len(c.options) for c in space.choices()], dtype=np.int64)
            starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
            self._layout_cache = (sizes, starts)
        return self._layout_cache

    def categories(self, space: SearchSpace, arch: Arch) -> np.ndarray:
        """Category index per choice from the one-hot encoding (``K`` = inactive)."""
        got = self._cache.get(arch.text)
        if got is None:
            enc = space.encode(arch)
            sizes, starts = self._layout(space)
            got = np.empty(len(sizes), dtype=np.int64)
            for d, (k, s0) in enumerate(zip(sizes, starts, strict=True)):
                block = enc[s0: s0 + k]
                got[d] = int(np.argmax(block)) if block.max() > 0 else int(k)
            self._cache[arch.text] = got
        return got

    def _from_categories(self, space: SearchSpace, cats: np.ndarray) -> Arch:
        vals = [c.options[int(k)] if int(k) < len(c.options) else c.options[0]
                for c, k in zip(space.choices(), cats, strict=True)]
        return space.make(vals)

    # -- the model ---------------------------------------------------------------------------
    def training_set(
        self, strategy: MultiFidelityStrategy
    ) -> tuple[float, list[tuple[str, float]]] | None:
        """``(budget, [(arch text, score), ...])`` at the largest budget with enough points."""
        n_min = self.min_points_in_model or len(strategy.space.choices()) + 1
        n_min = max(n_min, 2)
        by_r: dict[float, dict[str, float]] = {}
        for text, r, score in strategy.results:
            by_r.setdefault(float(r), {})[text] = score  # the latest score per arch and budget
        for r in sorted(by_r, reverse=True):
            if len(by_r[r]) >= n_min:
                return r, list(by_r[r].items())
        return None

    def _bandwidths(self, n: int, ncat: np.ndarray) -> np.ndarray:
        top = (ncat - 1) / ncat
        return np.clip(top * (1.0 + n) ** -0.5, self.min_bandwidth, top)

    @staticmethod
    def _log_density(
        x: np.ndarray, data: np.ndarray, bw: np.ndarray, ncat: np.ndarray
    ) -> np.ndarray:
        """log of the mean product Aitchison-Aitken kernel; x (m, D), data (n, D)."""
        eq = x[:, None, :] == data[None, :, :]
        same = np.log1p(-bw)
        other = np.log(bw / np.maximum(ncat - 1, 1))
        logk = np.where(eq, same, other).sum(axis=2)  # (m, n)
        mx = logk.max(axis=1, keepdims=True)
        return (mx[:, 0] + np.log(np.exp(logk - mx).sum(axis=1))) - math.log(data.shape[0])

    def sample(self, strategy: MultiFidelityStrategy) -> Arch:
        rng, space = strategy.rng, strategy.space
        if rng.random() < self.random_fraction:
            return random_unseen(strategy)
        fit = self.training_set(strategy)
        if fit is None:
            return random_unseen(strategy)
        _, obs = fit
        obs.sort(key=lambda t: -t[1])  # stable: ties keep told order
        n = len(obs)
        n_good = min(max(1, int(math.ceil(self.top_n_percent / 100.0 * n))), n - 1)
        cats = np.stack([self._cache[t] if t in self._cache
                         else self.categories(space, space.parse(t)) for t, _ in obs])
        good, bad = cats[:n_good], cats[n_good:]
        sizes, _ = self._layout(space)
        ncat = sizes + 1  # + the "inactive" category
        bw_g, bw_b = self._bandwidths(len(good), ncat), self._bandwidths(len(bad), ncat)
        # candidates around good points: each choice re-drawn with prob factor * bandwidth
        picks = good[rng.integers(len(good), size=self.num_samples)]
        redraw = rng.random(picks.shape) < np.minimum(1.0, self.bandwidth_factor * bw_g)
        fresh = np.floor(rng.random(picks.shape) * sizes).astype(np.int64)  # active options only
        cand = np.unique(np.where(redraw, fresh, picks), axis=0)  # sorted: deterministic
        archs = list({a: None for a in (self._from_categories(space, row) for row in cand)})
        x = np.stack([self.categories(space, a) for a in archs])
        ratio = self._log_density(x, good, bw_g, ncat) - self._log_density(x, bad, bw_b, ncat)
        for i in np.argsort(-ratio, kind="stable"):
            if archs[int(i)].text not in strategy.seen:
                self.n_model_samples += 1
                return archs[int(i)]
        return random_unseen(strategy)


class StrategySampler(Sampler):
    """Any registered strategy as the sampler (e.g. ``"evolution"``), told rung-0 results."""

    def __init__(self, name: str, space: SearchSpace, seed: int, metric: str, mode: str,
                 **options: Any) -> None:
        from nasforge import strategies

        self.name = name
        self.inner = strategies.get(name, space=space, seed=seed, metric=metric, mode=mode,
                                    **options)
        #: the inner strategy's note on its last ask (stored with the trial) and, on a
        #: resume, its asks and tells for its rebuild
        self.last_note: dict[str, Any] | None = None
        self.past: tuple[list[Past], list[Past]] | None = None

    def sample(self, strategy: MultiFidelityStrategy) -> Arch:
        sug = self.inner.ask()
        self.last_note = sug.note
        return sug.arch

    def observe(self, strategy: MultiFidelityStrategy, suggestion: Suggestion, result: Result,
                rung: int) -> None:
        if rung == 0:
            self.inner.tell(suggestion, result)

    def state(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state(self, state: dict[str, Any]) -> None:
        if state:
            self.inner._restore(state, self.past)
        self.past = None
