"""NSGA-II (Deb et al. 2002) over any nasforge space, with Deb's constrained domination.

Several objectives (default: maximize ``val_accuracy``, minimize ``params``) are traded
off instead of collapsed into one score. Parents come from binary tournaments on
(front rank, crowding distance); children are crossovers and mutations made by the
space's own operators, so every space works unchanged.

Asynchronous, steady-state form (as in Durillo et al. 2009): results that arrive are
merged into the parent population by NSGA-II's elitist environmental selection (rank,
then crowding, over parents + newcomers) the next time a parent is needed, so any number
of asks may be outstanding and no generation barrier is needed. Until
``population_size`` architectures were asked, asks are uniform random samples.

With constraints, a feasible architecture beats an infeasible one and infeasible ones
compare by total normalized violation (:func:`nasforge.objectives.violation`); the front
reported by :meth:`NSGA2.front` and :func:`pareto` holds feasible architectures only.
Failed evaluations rank last.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from nasforge._util import finite_or_none
from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.objectives import (
    Constraint,
    Objective,
    constraint_metrics,
    parse_constraints,
    parse_objectives,
    violation,
)
from nasforge.pareto import crowding_distance, non_dominated_sort, pareto_front
from nasforge.spaces.base import Arch, SearchSpace
from nasforge.strategies import register
from nasforge.strategies.base import Past, Strategy, Suggestion

DEFAULT_OBJECTIVES = ("val_accuracy:max", "params:min")
#: spaces up to this size are enumerated to find an unseen architecture when sampling fails
ENUMERATE_LIMIT = 4096

ConstraintSpec = str | Constraint | Iterable[str | Constraint] | Mapping[str, Any] | None


def _finite_metrics(metrics: Mapping[str, Any], names: Iterable[str]) -> dict[str, float]:
    """The finite float values of ``names`` in ``metrics`` (JSON-safe, no inf/NaN)."""
    found = {k: finite_or_none(metrics.get(k)) for k in names}
    return {k: v for k, v in found.items() if v is not None}


def _front_records(archive: Mapping[str, dict[str, float] | None], objectives: Sequence[Objective],
                   constraints: Sequence[Constraint]) -> list[dict[str, Any]]:
    """Feasible non-dominated archive entries, best first by the first objective."""
    texts = [t for t, m in archive.items() if m is not None and violation(m, constraints) == 0.0]
    if not texts:
        return []
    pts = np.array([[o.minimized(archive[t] or {}) for o in objectives] for t in texts])
    keep = np.all(np.isfinite(pts), axis=1)
    texts = [t for t, k in zip(texts, keep, strict=True) if k]
    if not texts:
        return []
    idx = pareto_front(pts[keep])
    recs = [{"arch": texts[int(i)], "metrics": dict(archive[texts[int(i)]] or {})} for i in idx]
    recs.sort(key=lambda r: objectives[0].minimized(r["metrics"]))
    return recs


@register("nsga2")
class NSGA2(Strategy):
    """NSGA-II: multi-objective, constraint-aware evolution over any space (asynchronous)."""

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        metric: str | None = None,
        mode: str | None = None,
        objectives: str | Sequence[str | Objective] | None = None,
        constraints: ConstraintSpec = None,
        population_size: int = 20,
        crossover_prob: float = 0.9,
        mutation_prob: float = 1.0,
        max_retries: int = 50,
    ) -> None:
        """``objectives``: specs like ``"params:min"`` (the first one is also the
        ``metric``/``mode`` the loop uses for "best"). If only ``metric``/``mode`` are given,
        the objectives are ``[metric:mode, "params:min"]``. ``constraints``: anything
        :func:`nasforge.objectives.parse_constraints` accepts (``"params<=200k"``,
        ``{"max_latency_ms": 2}``, a list of those)."""
        if objectives is None:
            objectives = list(DEFAULT_OBJECTIVES)
            if metric is not None:
                first = f"{metric}:{mode or 'max'}"
                objectives = [first] + (["params:min"] if metric != "params" else [])
        objs = parse_objectives(objectives)
        super().__init__(space, seed, objs[0].metric, objs[0].mode)
        if population_size < 2:
            raise NasforgeError("population_size must be at least 2")
        if not 0.0 <= crossover_prob <= 1.0:
            raise NasforgeError("crossover_prob must be in [0, 1]")
        if not 0.0 <= mutation_prob <= 1.0:
            raise NasforgeError("mutation_prob must be in [0, 1]")
        self.objectives = objs
        self.constraints = parse_constraints(constraints)
        self.population_size = int(population_size)
        self.crossover_prob = float(crossover_prob)
        self.mutation_prob = float(mutation_prob)
        self.max_retries = int(max_retries)
        self._keep = list(dict.fromkeys([o.metric for o in objs]
                                        + constraint_metrics(self.constraints)))
        #: arch text -> the kept finite metrics, or None for a failed evaluation (told order)
        self.archive: dict[str, dict[str, float] | None] = {}
        self.seen: set[Arch] = set()
        self.n_asked = 0
        #: parents as (arch text, front rank, crowding distance), best first
        self.parents: list[tuple[str, int, float]] = []
        #: told archs not yet merged into ``parents`` (in told order)
        self.newcomers: list[str] = []
        self._arch_cache: dict[str, Arch] = {}

    def config(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "objectives": [str(o) for o in self.objectives],
            "constraints": [str(c) for c in self.constraints],
            "population_size": self.population_size,
            "crossover_prob": self.crossover_prob,
            "mutation_prob": self.mutation_prob,
        }

    # -- selection ---------------------------------------------------------------------------
    def population(self) -> list[tuple[str, int, float]]:
        """Current parents as ``(arch text, front rank, crowding distance)``, best first."""
        if self.newcomers:
            pool = list(dict.fromkeys([t for t, _, _ in self.parents] + self.newcomers))
            self.parents = self._select([t for t in pool if t in self.archive])
            self.newcomers = []
        return self.parents

    def _select(self, texts: list[str]) -> list[tuple[str, int, float]]:
        """NSGA-II environmental selection of ``population_size`` of ``texts``."""
        ok = [t for t in texts if self.archive[t] is not None]
        failed = [t for t in texts if self.archive[t] is None]
        out: list[tuple[str, int, float]] = []
        fronts: list[np.ndarray] = []
        if ok:
            pts = np.array([[o.minimized(self.archive[t] or {}) for o in self.objectives]
                            for t in ok])
            viol = ([violation(self.archive[t] or {}, self.constraints) for t in ok]
                    if self.constraints else None)
            fronts = non_dominated_sort(pts, violations=viol)
            for rank, front in enumerate(fronts):
                if len(out) >= self.population_size:
                    break
                crowd = crowding_distance(pts[front])
                order = np.lexsort((front, -crowd))  # crowding desc, then pool order
                for k in order[: self.population_size - len(out)]:
                    out.append((ok[int(front[k])], rank, float(crowd[k])))
        for t in failed[: max(0, self.population_size - len(out))]:
            out.append((t, len(fronts), 0.0))
        return out

    def _tournament(self, pop: list[tuple[str, int, float]]) -> Arch:
        i, j = (int(x) for x in self.rng.choice(len(pop), size=2, replace=False))
        a, b = pop[i], pop[j]
        win = a if (a[1], -a[2]) <= (b[1], -b[2]) else b
        return self._arch(win[0])

    def _arch(self, text: str) -> Arch:
        a = self._arch_cache.get(text)
        if a is None:
            a = self._arch_cache[text] = self.space.parse(text)
        return a

    # -- ask / tell ----------------------------------------------------------------------------
    def _random_unseen(self) -> Arch:
        arch = self.space.sample(self.rng)
        for _ in range(self.max_retries):
            if arch not in self.seen:
                return arch
            arch = self.space.sample(self.rng)
        if self.space.size <= ENUMERATE_LIMIT:
            unseen = [a for a in self.space.enumerate() if a not in self.seen]
            if unseen:
                return unseen[int(self.rng.integers(len(unseen)))]
        return arch  # the space is exhausted: a repeat cannot be avoided

    def _child(self, pop: list[tuple[str, int, float]]) -> Arch | None:
        for _ in range(self.max_retries):
            p1 = self._tournament(pop)
            child, p2 = p1, None
            if self.rng.random() < self.crossover_prob:
                p2 = self._tournament(pop)
                child = self.space.crossover(p1, p2, self.rng)
            if self.rng.random() < self.mutation_prob or child in (p1, p2) or child in self.seen:
                child = self.space.mutate(child, self.rng)
            if child not in self.seen:
                return child
        return None

    def ask(self) -> Suggestion:
        self.n_asked += 1
        pop = self.population()
        arch = None
        if self.n_asked > self.population_size and len(pop) >= 2:
            arch = self._child(pop)
        if arch is None:
            arch = self._random_unseen()
        self.seen.add(arch)
        return Suggestion(arch)

    def _tell(self, suggestion: Suggestion, result: Result) -> None:
        self.seen.add(suggestion.arch)
        text = suggestion.arch.text
        self.archive.pop(text, None)  # a re-evaluation counts as the newest
        self.archive[text] = _finite_metrics(result.metrics, self._keep) if result.ok else None
        self.parents = [p for p in self.parents if p[0] != text]
        self.newcomers.append(text)

    # -- results ---------------------------------------------------------------------------------
    def front(self) -> list[dict[str, Any]]:
        """The feasible Pareto front so far: ``[{"arch": text, "metrics": {...}}]``, best first
        by the first objective (metrics hold the objective and constraint metrics)."""
        return _front_records(self.archive, self.objectives, self.constraints)

    # -- persistence -------------------------------------------------------------------------------
    def rebuild(self, asked: Sequence[Past], told: Sequence[Past]) -> None:
        """Seen: every ask; the archive: the tells in told order (a re-evaluation last)."""
        self.seen = {p.suggestion.arch for p in asked}
        self.archive = {}
        for p in told:
            r = p.result
            assert r is not None
            text = p.suggestion.arch.text
            self.archive.pop(text, None)
            self.archive[text] = _finite_metrics(r.metrics, self._keep) if r.ok else None

    def _history_state(self) -> dict[str, Any]:
        return {
            "archive": [[t, m] for t, m in self.archive.items()],
            "seen": sorted(a.text for a in self.seen),
        }

    def _state(self) -> dict[str, Any]:
        return {
            "objectives": [str(o) for o in self.objectives],
            "constraints": [str(c) for c in self.constraints],
            "n_asked": self.n_asked,
            # crowding is inf at a front's ends: JSON has no inf, so store None
            "parents": [[t, r, c if math.isfinite(c) else None] for t, r, c in self.parents],
            "newcomers": list(self.newcomers),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        saved = state.get("objectives")
        if saved is not None and saved != [str(o) for o in self.objectives]:
            raise NasforgeError(
                f"saved NSGA-II state optimizes {saved}, not {[str(o) for o in self.objectives]}; "
                "resume with the same objectives"
            )
        if "archive" in state:  # a state from before run format 2
            self.archive = {str(t): (dict(m) if m is not None else None)
                            for t, m in state["archive"]}
            self.seen = {self._arch(t) for t in state.get("seen", [])}
        self.n_asked = int(state.get("n_asked", 0))
        self.parents = [(str(t), int(r), math.inf if c is None else float(c))
                        for t, r, c in state.get("parents", [])]
        self.newcomers = [str(t) for t in state.get("newcomers", [])]


def pareto(source: NSGA2 | Mapping[str, Any],
           constraints: ConstraintSpec = None) -> list[dict[str, Any]]:
    """The feasible Pareto front of an :class:`NSGA2` strategy or of a state saved before run
    format 2 (which held the whole archive; a newer state does not: build the strategy
    and ``load_state_dict(state, store.trials())``). ``constraints`` overrides the
    saved ones (e.g. to see the front under a tighter budget); only objective and constraint
    metrics are kept in the state, so a constraint on any other metric makes all infeasible.
    """
    if isinstance(source, NSGA2):
        objs, cons, archive = source.objectives, source.constraints, source.archive
    else:
        own = source.get("own", source)
        if "archive" not in own:
            raise NasforgeError(
                "not an NSGA-II state with an archive (a state saved since run format 2 "
                "keeps it in the run's trials: pass the strategy restored from them)"
            )
        objs = parse_objectives(own.get("objectives") or list(DEFAULT_OBJECTIVES))
        cons = parse_constraints(own.get("constraints") or [])
        archive = {str(t): m for t, m in own["archive"]}
    if constraints is not None:
        cons = parse_constraints(constraints)
    return _front_records(archive, objs, cons)
