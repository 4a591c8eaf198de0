"""Regularized (aging) evolution, Real et al. 2019 ("AmoebaNet").

The population is a queue: each new child pushes out the *oldest* member, not the
worst, which keeps the search from clinging to a lucky early estimate. Parents are
chosen by tournament; children are mutations (optionally crossovers) of parents.
Works asynchronously: several children may be outstanding at once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.spaces.base import Arch, SearchSpace
from nasforge.strategies import register
from nasforge.strategies.base import Past, Strategy, Suggestion


@register("evolution")
class RegularizedEvolution(Strategy):
    """Regularized evolution: aging population, tournament selection, mutation (+ crossover)."""

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        metric: str = "val_accuracy",
        mode: str = "max",
        population_size: int = 20,
        sample_size: int = 5,
        crossover_prob: float = 0.0,
        max_retries: int = 50,
        warm_start: bool = True,
    ) -> None:
        """``warm_start``: the first members are the space's known-good designs."""
        super().__init__(space, seed, metric, mode)
        self._set_warm_start(warm_start)
        if population_size < 2:
            raise NasforgeError("population_size must be at least 2")
        if not 1 <= sample_size <= population_size:
            raise NasforgeError("sample_size must be between 1 and population_size")
        if not 0.0 <= crossover_prob <= 1.0:
            raise NasforgeError("crossover_prob must be in [0, 1]")
        self.population_size = population_size
        self.sample_size = sample_size
        self.crossover_prob = crossover_prob
        self.max_retries = max_retries
        self.population: deque[tuple[Arch, float]] = deque()
        self.seen: set[Arch] = set()
        self.n_asked = 0

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "population_size": self.population_size,
            "sample_size": self.sample_size,
            "crossover_prob": self.crossover_prob,
            **({} if self.warm_start else {"warm_start": False}),
        }

    def _tournament(self) -> Arch:
        idx = self.rng.choice(
            len(self.population), size=min(self.sample_size, len(self.population)), replace=False
        )
        best = max(idx, key=lambda i: self.population[int(i)][1])
        return self.population[int(best)][0]

    def _child(self) -> Arch:
        parent = self._tournament()
        if (
            self.crossover_prob > 0
            and len(self.population) > 1
            and self.rng.random() < self.crossover_prob
        ):
            child = self.space.crossover(parent, self._tournament(), self.rng)
            if child in self.seen:
                child = self.space.mutate(child, self.rng)
            return child
        return self.space.mutate(parent, self.rng)

    def ask(self) -> Suggestion:
        self.n_asked += 1
        warmup = self.n_asked <= self.population_size or not self.population
        known = self.next_known(self.seen) if warmup else None
        if known is not None:
            self.seen.add(known)
            return Suggestion(known)
        for _ in range(self.max_retries):
            arch = self.space.sample(self.rng) if warmup else self._child()
            if arch not in self.seen:
                break
        self.seen.add(arch)
        return Suggestion(arch)

    def _tell(self, suggestion: Suggestion, result: Result) -> None:
        self.seen.add(suggestion.arch)
        self.population.append((suggestion.arch, self.score(result)))
        while len(self.population) > self.population_size:
            self.population.popleft()

    def rebuild(self, asked: Sequence[Past], told: Sequence[Past]) -> None:
        """Seen: every ask; the population: the last ``population_size`` tells (aging)."""
        self.seen = {p.suggestion.arch for p in asked}
        self.population = deque(
            (p.suggestion.arch, self.score(p.result))  # type: ignore[arg-type]
            for p in told[max(0, len(told) - self.population_size):]
        )

    def _state(self) -> dict[str, Any]:
        return {"n_asked": self.n_asked}

    def _history_state(self) -> dict[str, Any]:
        return {
            "population": [[a.text, s] for a, s in self.population],
            "seen": sorted(a.text for a in self.seen),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        if "population" in state:  # a state from before run format 2
            self.population = deque((self._arch(t), float(s)) for t, s in state["population"])
        if "seen" in state:
            self.seen = {self._arch(t) for t in state["seen"]}
        self.n_asked = int(state.get("n_asked", 0))
