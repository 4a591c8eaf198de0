"""Proxy warm start: let a zero-cost proxy choose where a strategy starts.

Scoring an architecture with a zero-cost proxy costs a fraction of a second; a real
evaluation costs a training run. ``proxy-warmstart`` samples a pool of ``pool_size``
random architectures, ranks them with a proxy (``synflow`` by default; any estimator
name, e.g. ``zc-vote`` or ``params``) and hands the ``top_k`` best, best first, to the
base strategy in place of its random start: for regularized evolution they become the
initial population, for random search the first samples. After that the base strategy
runs unchanged. The proxy's compute is kept apart from the evaluation budget in
``proxy_seconds`` (also in the state), so the two costs can be reported separately.

Which proxy: what matters here is how the proxy ranks the very best archs, not its
overall rank correlation. On NAS-Bench-201 (benchmarks/results/proxy_assisted_nb201.md)
synflow on a small C=8, N=1 network (``proxy_space={"C": 8, "N": 1}``, 0.02 s/arch)
puts the top-10 archs at its 99th percentile and cuts evolution's queries to a top-10
arch from ~93 to ~26 (median, pool 1000), while jacob_cov, the best proxy by Spearman,
saturates at the top and barely helps.

Strategies never see a dataset, so data-dependent proxies score on their noise
fallback here; pass ``scores_file`` (CSV with ``arch`` and ``score`` columns, e.g.
precomputed on real data) or, in Python, ``scorer`` to rank with anything else.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.spaces.base import Arch, SearchSpace
from nasforge.strategies import register
from nasforge.strategies.base import Past, Strategy, Suggestion

#: scorer(archs) -> one score per arch, larger is better (non-finite: worst)
Scorer = Callable[[Sequence[Arch]], Sequence[float]]


def read_scores(path: str) -> dict[str, float]:
    """``arch -> score`` from a CSV with columns ``arch`` and ``score``."""
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise NasforgeError(f"proxy-warmstart: cannot read scores_file {path!r}: {e}") from None
    if not {"arch", "score"} <= set(df.columns):
        raise NasforgeError(
            f"proxy-warmstart: scores_file {path!r} needs columns 'arch' and 'score', "
            f"it has {list(df.columns)}"
        )
    return dict(zip(df["arch"].astype(str).str.strip(), df["score"].astype(float), strict=True))


@register("proxy-warmstart")
class ProxyWarmstart(Strategy):
    """Start a base strategy (default: evolution) from the proxy's top-k of a random pool."""

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        metric: str = "val_accuracy",
        mode: str = "max",
        base: str = "evolution",
        proxy: str = "synflow",
        pool_size: int = 500,
        top_k: int | None = None,
        proxy_options: Mapping[str, Any] | None = None,
        proxy_space: Mapping[str, Any] | None = None,
        scores_file: str | None = None,
        scorer: Scorer | None = None,
        base_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(space, seed, metric, mode)
        from nasforge import strategies

        if base == self.name:
            raise NasforgeError("proxy-warmstart cannot wrap itself; choose e.g. base='evolution'")
        self.base_name = base
        self.base_options = dict(base_options or {})
        self.base = strategies.get(
            base, space=space, seed=seed, metric=metric, mode=mode, **self.base_options
        )
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise NasforgeError(f"pool_size must be a positive integer, got {pool_size!r}")
        default_k = int(getattr(self.base, "population_size", 10))
        self.top_k = int(top_k) if top_k is not None else min(default_k, pool_size)
        if not 1 <= self.top_k <= pool_size:
            raise NasforgeError(f"top_k must be between 1 and pool_size ({pool_size}), got {top_k}")
        self.pool_size = pool_size
        self.proxy = proxy
        self.proxy_options = dict(proxy_options or {})
        self.proxy_space = dict(proxy_space or {})
        self.scores_file = scores_file
        self._scorer = scorer
        self._table: dict[str, float] | None = read_scores(scores_file) if scores_file else None
        if scorer is None and self._table is None:
            from nasforge import estimators

            estimators.registry.factory(proxy)  # fail now on an unknown proxy name
        self.queue: list[Arch] = []
        self.pooled = False
        self.proxy_seconds = 0.0
        self.pool_scores: list[tuple[str, float]] = []
        self._base_past: tuple[list[Past], list[Past]] | None = None  # for the base's restore

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "base": self.base_name,
            "base_options": self.base_options,
            "proxy": self.proxy,
            "pool_size": self.pool_size,
            "top_k": self.top_k,
            "proxy_options": self.proxy_options,
            "proxy_space": self.proxy_space,
            "scores_file": self.scores_file,
        }

    # -- the pool ---------------------------------------------------------------------------
    def _sample_pool(self) -> list[Arch]:
        """``pool_size`` distinct random archs, from a stream apart from the base's own."""
        rng = np.random.default_rng([self.seed, 0x5EED])
        pool: dict[Arch, None] = {}
        for _ in range(self.pool_size * 20):
            pool[self.space.sample(rng)] = None
            if len(pool) >= min(self.pool_size, self.space.size):
                break
        return list(pool)

    def _score(self, pool: Sequence[Arch]) -> list[float]:
        if self._scorer is not None:
            return [float(s) for s in self._scorer(pool)]
        if self._table is not None:
            missing = [a.text for a in pool if a.text not in self._table]
            if missing:
                raise NasforgeError(
                    f"proxy-warmstart: {len(missing)} pool arch(s) not in scores_file "
                    f"{self.scores_file!r}, e.g. {missing[0]!r}"
                )
            return [self._table[a.text] for a in pool]
        from nasforge import estimators, spaces

        est = estimators.get(self.proxy, **self.proxy_options)
        space = self.space
        if self.proxy_space:
            space = spaces.get(self.space.name, **{**self.space.config(), **self.proxy_space})
        key = self.proxy.replace("-", "_")
        out = []
        for a in pool:
            r: Result = est.evaluate(space.make(a.as_dict()), space)
            out.append(float(r.metrics.get(key, -math.inf)) if r.ok else -math.inf)
        return out

    def _build_pool(self) -> None:
        t0 = time.perf_counter()
        pool = self._sample_pool()
        scores = self._score(pool)
        self.proxy_seconds += time.perf_counter() - t0
        # proxies say "larger is better" whatever the mode of the searched metric
        order = sorted(
            range(len(pool)), key=lambda i: -scores[i] if math.isfinite(scores[i]) else math.inf
        )
        self.queue = [pool[i] for i in order[: self.top_k]]
        self.pool_scores = [(pool[i].text, float(scores[i])) for i in order[: self.top_k]]
        self.pooled = True

    # -- ask / tell -------------------------------------------------------------------------
    def ask(self) -> Suggestion:
        if not self.pooled:
            self._build_pool()
        if self.queue:
            arch = self.queue.pop(0)
            self._absorb(arch)
            return Suggestion(arch)
        return self.base.ask()

    def _absorb(self, arch: Arch) -> None:
        """Book a warm-start arch in the base as if it had asked for it itself.

        Evolution and random search keep ``seen`` and (evolution) ``n_asked``, which
        end their random phase; other strategies learn of it through :meth:`tell`.
        """
        seen = getattr(self.base, "seen", None)
        if isinstance(seen, set):
            seen.add(arch)
        if isinstance(getattr(self.base, "n_asked", None), int):
            self.base.n_asked += 1  # type: ignore[attr-defined]

    def _tell(self, suggestion: Suggestion, result: Result) -> None:
        self.base.tell(suggestion, result)

    # -- persistence ------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "base": self.base.state_dict(),
            "queue": [a.text for a in self.queue],
            "pooled": self.pooled,
            "proxy_seconds": self.proxy_seconds,
            "pool_scores": [list(p) for p in self.pool_scores],
        }

    def rebuild(self, asked: Sequence[Past], told: Sequence[Past]) -> None:
        """The base saw every ask (the warm-start ones booked as its own) and every tell: it
        rebuilds from all trials, when its state is loaded."""
        self._base_past = (list(asked), list(told))

    def _load_state(self, state: dict[str, Any]) -> None:
        if "base" in state:
            self.base._restore(state["base"], self._base_past)
            self._base_past = None
        self.queue = [self._arch(t) for t in state.get("queue", [])]
        self.pooled = bool(state.get("pooled", False))
        self.proxy_seconds = float(state.get("proxy_seconds", 0.0))
        self.pool_scores = [(str(t), float(s)) for t, s in state.get("pool_scores", [])]
