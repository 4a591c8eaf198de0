"""Specialization without retraining: inherited-weight scores, measured costs, the search."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from nasforge.errors import NasforgeError
from nasforge.estimators.base import Estimator, Result
from nasforge.oneshot.inherited import InheritedWeights
from nasforge.oneshot.ofa.supernet import OFASupernet, StageConfig
from nasforge.run.loop import Callback
from nasforge.spaces.base import Arch
from nasforge.spaces.mobile import MobileNet, MobileSpace
from nasforge.strategies.base import Strategy, Suggestion


# -------------------------------------------------------------- inherited-weight scores
class SubnetEvaluator(InheritedWeights):
    """Scores a sub-network with its inherited weights (no training).

    The BN statistics of the sub-network are recalibrated first on ``calib_batches``
    *fixed* training batches (the same for every candidate, so scores are comparable and
    repeatable); then accuracy and loss are taken in eval mode on the validation split
    (a stratified ``max_val`` examples of it, if given).
    """

    name = "ofa-inherited"
    needs_data = False
    fixed_calibration = True
    calib_key = 22

    supernet: OFASupernet

    def subnet(self, arch: Arch | str | StageConfig) -> StageConfig:
        """The stage config of ``arch``."""
        return self.supernet.config_of(arch)

    def extract(self, arch: Arch | str | StageConfig) -> MobileNet:
        """Recalibrate, then :meth:`OFASupernet.extract`: the sub-network ready to use."""
        self.recalibrate(arch)
        return self.supernet.extract(arch)


# ------------------------------------------------------------------------------- costs
class CostModel:
    """Measured cost of stand-alone sub-networks, cached by architecture (a lookup table).

    ``params`` (counted) and ``flops`` are exact properties of the extracted network;
    ``latency_ms`` is the median CPU time of a batch-1 forward
    (:func:`nasforge.metrics.measure_latency`, ``threads`` intra-op threads), measured once
    per architecture and then looked up, so a constraint check never re-rolls noise.
    Weights do not change these numbers, so a freshly built network is measured.
    """

    def __init__(
        self,
        space: MobileSpace,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        latency: bool = True,
        threads: int | None = 1,
        repeats: int = 20,
        warmup: int = 5,
    ) -> None:
        self.space = space
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = num_classes
        self.latency = latency
        self.threads = threads
        self.repeats = repeats
        self.warmup = warmup
        self.table: dict[str, dict[str, float]] = {}
        self.measured = 0

    def __call__(
        self, arch: Arch, latency: bool | None = None, flops: bool = True
    ) -> dict[str, float]:
        """``{"params"[, "flops"][, "latency_ms"]}`` of ``arch``, each measured at most once.

        ``latency=False`` / ``flops=False`` skip the slow measurements for this call (a
        constraint check counts params first); default latency: the model's ``latency``.
        """
        want_latency = self.latency if latency is None else latency and self.latency
        cost = self.table.setdefault(arch.text, {})
        wanted = {"params": True, "flops": flops, "latency_ms": want_latency}
        need = [k for k, want in wanted.items() if want and k not in cost]
        if not need:
            return cost
        from nasforge import metrics

        with torch.random.fork_rng(devices=[]):
            model = self.space.build(arch, self.input_shape, self.num_classes)
        if "params" in need:
            cost["params"] = metrics.count_params(model)
        if "flops" in need:
            cost["flops"] = metrics.count_flops(model, self.input_shape)
        if "latency_ms" in need:
            lat = metrics.measure_latency(model, self.input_shape, batch_size=1,
                                          warmup=self.warmup, repeats=self.repeats,
                                          threads=self.threads)  # fmt: skip
            cost["latency_ms"] = lat["median_ms"]
            self.measured += 1
        return cost

    def to_json(self) -> dict[str, Any]:
        return {"threads": self.threads, "repeats": self.repeats, "table": self.table}


@dataclass(frozen=True)
class Constraint:
    """An efficiency budget: at most ``max_params`` parameters and/or ``max_latency_ms``."""

    max_params: int | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        if self.max_params is None and self.max_latency_ms is None:
            raise NasforgeError("give a constraint: --max-params N and/or --max-latency-ms X")
        for name, v in (("max_params", self.max_params), ("max_latency_ms", self.max_latency_ms)):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) \
                    or v <= 0:
                raise NasforgeError(f"{name} must be a positive number, got {v!r}")

    @property
    def needs_latency(self) -> bool:
        return self.max_latency_ms is not None

    def ok(self, cost: Mapping[str, float]) -> bool:
        if self.max_params is not None and cost["params"] > self.max_params:
            return False
        return self.max_latency_ms is None or cost["latency_ms"] <= self.max_latency_ms

    def check(self, arch: Arch, costs: CostModel) -> bool:
        """Whether ``arch`` fits; latency is only measured when the cheap checks pass."""
        c = costs(arch, latency=False, flops=False)
        if self.max_params is not None and c["params"] > self.max_params:
            return False
        return self.ok(costs(arch, flops=False)) if self.needs_latency else True

    def describe(self) -> str:
        parts = []
        if self.max_params is not None:
            parts.append(f"params <= {self.max_params:,}")
        if self.max_latency_ms is not None:
            parts.append(f"latency <= {self.max_latency_ms:g} ms")
        return " and ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"max_params": self.max_params, "max_latency_ms": self.max_latency_ms}


# ------------------------------------------------------------------------ specialization
@dataclass
class Specialization:
    """What :func:`specialize` found: the best feasible sub-network and every trial."""

    constraint: Constraint
    best: Arch
    best_metrics: dict[str, float]
    trials: list[tuple[Arch, Result]] = field(default_factory=list)
    rejected: int = 0
    search_time_s: float = 0.0


def specialize(
    evaluator: SubnetEvaluator,
    costs: CostModel,
    constraint: Constraint,
    *,
    strategy: str = "evolution",
    num_candidates: int = 50,
    population_size: int = 16,
    parent_ratio: float = 0.25,
    mutation_ratio: float = 0.5,
    mutate_prob: float = 0.1,
    max_tries: int = 10,
    seed: int = 0,
    on_start: Callable[[Arch, dict[str, Any]], Any] | None = None,
    on_finish: Callable[[Any, Arch, Result, dict[str, Any]], None] | None = None,
) -> Specialization:
    """Best sub-network under ``constraint`` by inherited-weight accuracy, no retraining.

    ``strategy="evolution"`` is OFA's: a population of feasible sub-networks; each
    generation keeps the best ``parent_ratio`` and refills with mutants (each choice
    resampled with probability ``mutate_prob``) and uniform crossovers of parents.
    ``"random"`` samples feasible sub-networks uniformly. Only feasible candidates are
    evaluated (``num_candidates`` distinct ones); a candidate over budget is resampled up
    to ``max_tries`` times, then shrunk one option at a time (depth, kernel or expansion
    one step down) until it fits. ``on_start(arch, state)`` / ``on_finish(token, arch,
    result, state)`` bracket each evaluation (how :func:`run_ofa` stores trials).
    Raises :class:`NasforgeError` if even the smallest sub-network is over budget.
    """
    space = evaluator.supernet.space
    if strategy not in ("evolution", "random"):
        raise NasforgeError(f"strategy must be 'evolution' or 'random', not {strategy!r}")
    if num_candidates < 1:
        raise NasforgeError(f"num_candidates must be >= 1, got {num_candidates}")
    if population_size < 2:
        raise NasforgeError(f"population_size must be >= 2, got {population_size}")
    if constraint.needs_latency and not costs.latency:
        raise NasforgeError("a latency constraint needs a CostModel that measures latency")
    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, 23])
    smallest = space.smallest()
    if not constraint.check(smallest, costs):
        c = costs(smallest)
        lat = f", {c['latency_ms']:.3g} ms" if "latency_ms" in c else ""
        raise NasforgeError(
            f"no sub-network fits {constraint.describe()}: the smallest one ({smallest.text}) "
            f"has {int(c['params']):,} params{lat}. Loosen the constraint or use a smaller "
            "space (e.g. a lower width_mult)."
        )
    rejected = 0
    scored: dict[Arch, float] = {}
    trials: list[tuple[Arch, Result]] = []
    state: dict[str, Any] = {"strategy": f"ofa-{strategy}", "generation": 0, "rejected": 0}

    def feasible(a: Arch) -> bool:
        nonlocal rejected
        ok = constraint.check(a, costs)
        rejected += not ok
        return ok

    def shrink(a: Arch) -> Arch:
        """Step random choices one option down until ``a`` fits (ends at the smallest)."""
        while not feasible(a):
            d = a.as_dict()
            cands = [c for c in space.choices()
                     if space.is_active(c.name, d) and c.options.index(d[c.name]) > 0]  # fmt: skip
            c = cands[int(rng.integers(len(cands)))]
            d[c.name] = c.options[c.options.index(d[c.name]) - 1]
            a = space.make(d)
        return a

    def fit(make: Callable[[], Arch]) -> Arch | None:
        """A new feasible arch from ``make`` (resampled, then shrunk); None if all seen."""
        a = make()
        for _ in range(max_tries):
            if a not in scored and feasible(a):
                return a
            a = make()
        a = shrink(a)
        return None if a in scored else a

    def mutate(a: Arch) -> Arch:
        d = a.as_dict()
        for c in space.choices():
            if rng.random() < mutate_prob:
                d[c.name] = c.options[int(rng.integers(len(c.options)))]
        return space.make(d)

    def budget_left() -> bool:
        return len(scored) < num_candidates

    def proposals() -> Iterator[tuple[Arch, dict[str, Any]]]:
        """OFA's search as a generator: each feasible new candidate with the state it is
        evaluated in; the search loop scores it into ``scored`` before the next one."""
        misses = 0  # consecutive failures to find a new feasible arch: the feasible set is used up
        max_misses = 10
        population: list[Arch] = []
        while budget_left() and len(population) < population_size and misses < max_misses:
            a = fit(lambda: space.sample(rng))
            if a is None:
                misses += 1
                continue
            misses = 0
            yield a, dict(state)  # evaluated in the loop; scored[a] is set
            population.append(a)
        if strategy == "random":
            while budget_left() and misses < max_misses:
                a = fit(lambda: space.sample(rng))
                if a is None:
                    misses += 1
                    continue
                misses = 0
                yield a, dict(state)  # evaluated in the loop; scored[a] is set
        else:
            n_parents = max(1, int(round(parent_ratio * population_size)))
            n_mut = int(round(mutation_ratio * population_size))
            while budget_left() and misses < max_misses:
                state["generation"] += 1
                parents = sorted(population, key=lambda p: -scored[p])[:n_parents]
                children: list[Arch] = []
                for j in range(population_size - n_parents):
                    if not budget_left() or misses >= max_misses:
                        break
                    if j < n_mut or len(parents) < 2:
                        par = parents[int(rng.integers(len(parents)))]
                        a = fit(lambda par=par: mutate(par))
                    else:
                        i1, i2 = rng.choice(len(parents), 2, replace=False)
                        pa, pb = parents[int(i1)], parents[int(i2)]
                        a = fit(lambda pa=pa, pb=pb: space.crossover(pa, pb, rng))
                    if a is None:
                        misses += 1
                        continue
                    misses = 0
                    yield a, dict(state)  # evaluated in the loop; scored[a] is set
                    children.append(a)
                population = parents + children

    def scored_result(a: Arch, res: Result) -> dict[str, Any]:
        """Record an evaluated candidate; the state ``on_finish`` sees."""
        trials.append((a, res))
        scored[a] = float(res.metrics["val_accuracy"]) if res.ok else -math.inf
        state["rejected"] = rejected
        return dict(state)

    from nasforge.run.loop import run_in_memory

    keep = _Specializing(proposals(), scored_result, on_start, on_finish)
    if keep.pending is not None:
        run_in_memory(_Proposals(space, keep), space, _WithCosts(evaluator, costs), trials=None,
                      callbacks=[keep])
    ok = [(a, r) for a, r in trials if r.ok]
    if not ok:
        errs = {r.error for _, r in trials}
        raise NasforgeError(f"every evaluated sub-network failed: {sorted(map(str, errs))[:3]}")
    best, best_res = max(ok, key=lambda t: t[1].metrics["val_accuracy"])  # first of ties
    return Specialization(constraint, best, dict(best_res.metrics), trials, rejected,
                          time.perf_counter() - t0)  # fmt: skip


class _Specializing(Callback):
    """Feeds OFA's candidates to the search loop and keeps its bookkeeping: the result
    scored into the search, the caller's ``on_start`` / ``on_finish`` around each
    evaluation, and the stop once the search proposes nothing more."""

    def __init__(self, proposals: Iterator[tuple[Arch, dict[str, Any]]],
                 scored: Callable[[Arch, Result], dict[str, Any]],
                 on_start: Callable[[Arch, dict[str, Any]], Any] | None,
                 on_finish: Callable[[Any, Arch, Result, dict[str, Any]], None] | None) -> None:
        self.proposals, self.scored = proposals, scored
        self.on_start, self.on_finish = on_start, on_finish
        self.pending = next(self.proposals, None)
        self.token: Any = None

    def on_trial_start(self, trial_id: int, suggestion: Suggestion) -> None:
        assert self.pending is not None
        _, state = self.pending
        self.token = self.on_start(suggestion.arch, state) if self.on_start is not None else None

    def on_trial_end(self, trial_id: int, suggestion: Suggestion, result: Result) -> bool | None:
        state = self.scored(suggestion.arch, result)
        if self.on_finish is not None:
            self.on_finish(self.token, suggestion.arch, result, state)
        self.pending = next(self.proposals, None)  # the search goes on from its last yield
        return self.pending is not None


class _Proposals(Strategy):
    """The loop's strategy: asks what OFA's search proposed; the search itself learns
    from the scores, so a tell adds nothing here."""

    name = "ofa-proposals"

    def __init__(self, space: MobileSpace, feed: _Specializing) -> None:
        super().__init__(space)
        self.feed = feed

    def ask(self) -> Suggestion:
        assert self.feed.pending is not None
        return Suggestion(self.feed.pending[0])

    def _tell(self, suggestion: Suggestion, result: Result) -> None:
        return None


class _WithCosts(Estimator):
    """The inherited-weight score plus the candidate's measured costs (params, FLOPs,
    latency), as one trial's result."""

    name = "ofa-with-costs"
    needs_data = False

    def __init__(self, evaluator: SubnetEvaluator, costs: CostModel) -> None:
        self.evaluator, self.costs = evaluator, costs

    def evaluate(self, arch: Arch, space: Any, data: Any = None,
                 fidelity: Mapping[str, Any] | None = None) -> Result:
        res = self.evaluator.evaluate(arch, space)
        if res.ok:
            res.metrics.update(self.costs(arch))
        return res

    def _evaluate(self, arch: Arch, space: Any, data: Any, fidelity: dict[str, Any]) -> Result:
        raise NotImplementedError  # evaluate() is the whole estimator
