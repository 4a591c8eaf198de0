"""Random search: the baseline every other strategy has to beat."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nasforge.estimators.base import Result
from nasforge.spaces.base import Arch, SearchSpace
from nasforge.strategies import register
from nasforge.strategies.base import Past, Strategy, Suggestion


@register("random")
class RandomSearch(Strategy):
    """Uniform random sampling, without repeating an architecture while unseen ones remain."""

    def __init__(self, space: SearchSpace, seed: int = 0, metric: str = "val_accuracy",
                 mode: str = "max", max_retries: int = 100, warm_start: bool = False) -> None:
        """``warm_start``: evaluate the space's known-good designs first (off by default:
        random search is the baseline of uniform draws)."""
        super().__init__(space, seed, metric, mode)
        self._set_warm_start(warm_start)
        self.max_retries = max_retries
        self.seen: set[Arch] = set()

    def config(self) -> dict[str, Any]:
        return {**super().config(), **({"warm_start": True} if self.warm_start else {})}

    def ask(self) -> Suggestion:
        known = self.next_known(self.seen)
        if known is not None:
            self.seen.add(known)
            return Suggestion(known)
        arch = self.space.sample(self.rng)
        for _ in range(self.max_retries):
            if arch not in self.seen:
                break
            arch = self.space.sample(self.rng)
        self.seen.add(arch)
        return Suggestion(arch)

    def _tell(self, suggestion: Suggestion, result: Result) -> None:
        self.seen.add(suggestion.arch)

    def rebuild(self, asked: Sequence[Past], told: Sequence[Past]) -> None:
        self.seen = {p.suggestion.arch for p in asked}  # every ask, told or not

    def _history_state(self) -> dict[str, Any]:
        return {"seen": sorted(a.text for a in self.seen)}

    def _load_state(self, state: dict[str, Any]) -> None:
        if "seen" in state:  # a state from before run format 2
            self.seen = {self._arch(t) for t in state["seen"]}
