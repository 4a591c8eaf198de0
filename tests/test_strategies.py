"""Search strategies on made-up spaces: optimum found, determinism, exact resume, no repeats."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch.nn as nn

from nasforge import strategies
from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.spaces.base import Arch, Choice, SearchSpace
from nasforge.strategies.base import History
from nasforge.strategies.optuna_adapter import arch_to_params, params_to_arch


class ToySpace(SearchSpace):
    """A made-up space of ``n`` choices with mixed option types; nothing to build."""

    name = "toy"

    def __init__(self, n: int = 6, k: int = 3) -> None:
        pools: list[tuple] = [
            tuple(f"op{j}" for j in range(k)),
            tuple(range(1, k + 1)),
            tuple(0.5 * (j + 1) for j in range(k)),
        ]
        self._choices = tuple(Choice(f"c{i}", pools[i % 3]) for i in range(n))

    def choices(self) -> tuple[Choice, ...]:
        return self._choices

    def build(self, arch: Arch, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        raise NotImplementedError


class MixedSpace(ToySpace):
    """str, int, float and bool choices plus a single-option one (Optuna adapter edge cases)."""

    name = "mixed"

    def __init__(self) -> None:
        self._choices = (
            Choice("op", ("conv", "pool", "skip")),
            Choice("width", (16, 32, 64)),
            Choice("drop", (0.0, 0.25, 0.5)),
            Choice("se", (False, True)),
            Choice("fixed", ("only",)),
        )


def separable(space: SearchSpace, seed: int = 123) -> Callable[[Arch], float]:
    """A separable objective in [0, 1] with a unique optimum (one weight per option)."""
    rng = np.random.default_rng(seed)
    weights = {
        c.name: dict(zip(c.options, rng.permutation(len(c.options)), strict=True))
        for c in space.choices()
    }
    top = sum(max(w.values()) for w in weights.values()) or 1

    def f(arch: Arch) -> float:
        return float(sum(weights[k][v] for k, v in arch.items) / top)

    return f


def run(
    strategy: strategies.Strategy,
    f: Callable[[Arch], float],
    n: int,
    fail: Callable[[Arch], bool] | None = None,
) -> list[str]:
    """Sequential ask/tell for ``n`` queries; the query sequence (arch strings)."""
    out = []
    for _ in range(n):
        s = strategy.ask()
        out.append(s.arch.text)
        res = (
            Result.failed("boom") if fail and fail(s.arch) else Result({"val_accuracy": f(s.arch)})
        )
        strategy.tell(s, res)
    return out


# label -> (registered name, options); options keep the tests fast and the budgets
# meaningful (NSGA-II's default population is 50)
STRATEGIES: dict[str, tuple[str, dict]] = {
    "local-search": ("local-search", {}),
    "local-search-best-frontier": ("local-search", {"improvement": "best", "restart": "frontier"}),
    "local-search-model-perturb": ("local-search", {"order": "model", "restart": "perturb"}),
    "reinforce": ("reinforce", {}),
    "optuna-tpe": ("optuna-tpe", {}),
    "optuna-nsga2": ("optuna-nsga2", {"sampler_options": {"population_size": 10}}),
}


def make(label: str, space: SearchSpace, seed: int) -> strategies.Strategy:
    name, opts = STRATEGIES[label]
    return strategies.get(name, space=space, seed=seed, **opts)


@pytest.mark.parametrize("name", list(STRATEGIES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_finds_the_optimum_of_a_separable_space(name: str, seed: int) -> None:
    space = ToySpace(
        6, 3
    )  # 729 archs; random search finds the optimum in 120 queries ~15% of the time
    f = separable(space)
    best = max(space.enumerate(), key=f)
    queries = run(make(name, space, seed), f, 120)
    assert best.text in queries
    assert len(set(queries)) == len(queries)  # no arch queried twice


def test_random_search_usually_misses_the_optimum_within_that_budget() -> None:
    """Guards the test above against a budget so large that any strategy would pass."""
    space = ToySpace(6, 3)
    f = separable(space)
    best = max(space.enumerate(), key=f).text
    found = [best in run(strategies.get("random", space=space, seed=s), f, 120) for s in range(10)]
    assert sum(found) <= 5


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_same_seed_same_queries(name: str) -> None:
    space = ToySpace(5, 3)
    f = separable(space, 7)
    a = run(make(name, space, 3), f, 40)
    b = run(make(name, space, 3), f, 40)
    c = run(make(name, space, 4), f, 40)
    assert a == b
    assert a != c


@pytest.mark.parametrize("name", list(STRATEGIES))
@pytest.mark.parametrize("cut", [1, 13, 37])
def test_json_state_round_trip_continues_exactly(name: str, cut: int) -> None:
    space = ToySpace(6, 3)
    f = separable(space, 5)

    def fail(a: Arch) -> bool:  # some failures, so failed results are resumed too
        return a["c0"] == "op2" and a["c1"] == 3

    full = run(make(name, space, 11), f, 60, fail)
    history = History()  # the run's trials, as the store keeps them
    first = history.watch(make(name, space, 11))
    head = run(first, f, cut, fail)
    state = json.loads(json.dumps(first.state_dict(), allow_nan=False))
    second = make(name, space, 11)
    second.load_state_dict(state, history.trials)
    tail = run(second, f, 60 - cut, fail)
    assert head + tail == full


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_resume_with_outstanding_suggestions(name: str) -> None:
    """Two workers: save while two suggestions are out, resume, tell them, continue."""
    space = ToySpace(5, 3)
    f = separable(space, 9)

    def pattern(strategy: strategies.Strategy, save_at: int | None) -> list[str]:
        out: list[str] = []
        history = History()
        history.watch(strategy)
        for step in range(15):
            a, b = strategy.ask(), strategy.ask()
            out += [a.arch.text, b.arch.text]
            if step == save_at:
                state = json.loads(json.dumps(strategy.state_dict()))
                strategy = make(name, space, 2)
                strategy.load_state_dict(state, history.trials)
                history.watch(strategy)
            strategy.tell(b, Result({"val_accuracy": f(b.arch)}))
            strategy.tell(a, Result({"val_accuracy": f(a.arch)}))
        return out

    new = lambda: make(name, space, 2)  # noqa: E731
    full = pattern(new(), None)
    assert pattern(new(), 6) == full
    assert len(set(full)) == len(full)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_never_repeats_while_unseen_archs_remain(name: str) -> None:
    space = ToySpace(3, 3)  # 27 archs: the last queries must dig out the few unseen ones
    f = separable(space, 1)
    q = run(make(name, space, 0), f, space.size)
    assert sorted(q) == sorted(a.text for a in space.enumerate())


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_all_failures_do_not_break_a_strategy(name: str) -> None:
    space = ToySpace(4, 3)
    q = run(
        make(name, space, 0),
        lambda a: 0.0,
        20,
        fail=lambda a: True,
    )
    assert len(set(q)) == 20


def test_local_search_climbs_from_the_best_initial_sample() -> None:
    space = ToySpace(6, 3)
    f = separable(space, 3)
    ls = strategies.get("local-search", space=space, seed=0, n_init=5)
    q = run(ls, f, 6)
    init_best = max(q[:5], key=lambda t: f(space.parse(t)))
    nbrs = {a.text for a in space.neighbors(space.parse(init_best))}
    assert q[5] in nbrs  # the first query after the initial samples is a neighbour of their best


def test_local_search_best_improvement_scans_the_whole_neighbourhood() -> None:
    space = ToySpace(4, 3)  # 8 neighbours per arch
    f = separable(space, 4)
    ls = strategies.get("local-search", space=space, seed=0, n_init=1, improvement="best")
    q = run(ls, f, 9)
    start = space.parse(q[0])
    assert set(q[1:9]) == {a.text for a in space.neighbors(start)}
    with pytest.raises(NasforgeError):
        strategies.get("local-search", space=space, improvement="sideways")


def test_local_search_model_order_climbs_faster_on_an_additive_objective() -> None:
    """The ridge model ranks the neighbours, so the optimum of an additive score comes sooner."""
    space = ToySpace(8, 3)
    f = separable(space)
    best = max(space.enumerate(), key=f).text

    def first_hit(**opts: object) -> float:
        hits = []
        for seed in range(6):
            q = run(strategies.get("local-search", space=space, seed=seed, **opts), f, 200)
            hits.append(q.index(best) + 1 if best in q else 201)
        return float(np.mean(hits))

    assert first_hit(order="model") < 0.8 * first_hit(order="random")


def test_reinforce_policy_concentrates_on_good_options() -> None:
    space = ToySpace(4, 3)
    f = separable(space, 6)
    rl = strategies.get("reinforce", space=space, seed=0)
    run(rl, f, 60)
    best = max(space.enumerate(), key=f)
    probs = rl.probs()
    for c, p in zip(space.choices(), probs, strict=True):
        assert p[c.options.index(best[c.name])] > 1 / len(c.options)  # above uniform
    state = rl.state_dict()["own"]
    assert {"logits", "baseline", "adam_m", "adam_v"} <= set(state)


def test_optuna_adapter_maps_every_choice_type() -> None:
    space = MixedSpace()
    for arch in space.enumerate():
        params = arch_to_params(space, arch)
        assert all(isinstance(v, int) for v in params.values())
        assert params_to_arch(space, params) == arch
    f = separable(space, 2)
    for name in ("optuna-tpe", "optuna-nsga2"):
        st = make(name, space, 0)
        q = run(st, f, 30)
        assert len(set(q)) == 30
        archs = [space.parse(t) for t in q]
        assert {type(a["se"]) for a in archs} == {bool}
        assert {a["fixed"] for a in archs} == {"only"}
        assert {a["width"] for a in archs} <= {16, 32, 64}
        assert len(st.study.trials) >= 30


def test_optuna_nsga2_multi_objective() -> None:
    space = MixedSpace()
    st = strategies.get(
        "optuna-nsga2",
        space=space,
        seed=0,
        metrics="val_accuracy,params",
        directions=["maximize", "minimize"],
        sampler_options={"population_size": 8},
    )
    history = History()
    history.watch(st)
    for _ in range(30):
        s = st.ask()
        w = int(s.arch["width"])
        st.tell(
            s, Result({"val_accuracy": w / 64 + (0.1 if s.arch["se"] else 0.0), "params": w * 1000})
        )
    assert len(st.study.directions) == 2
    front = st.study.best_trials
    assert front and all(len(t.values) == 2 for t in front)
    state = json.loads(json.dumps(st.state_dict()))
    st2 = strategies.get(
        "optuna-nsga2",
        space=space,
        seed=0,
        metrics="val_accuracy,params",
        directions=["maximize", "minimize"],
        sampler_options={"population_size": 8},
    )
    st2.load_state_dict(state, history.trials)
    def study(s: strategies.Strategy) -> list[tuple]:  # all but the times
        return [(t.number, t.state, t.values, t.params, t.system_attrs)
                for t in s.study.trials]  # type: ignore[attr-defined]

    assert study(st2) == study(st)  # the same study, rebuilt from the trials
    assert st2.ask().arch == st.ask().arch
    with pytest.raises(NasforgeError):
        strategies.get("optuna-nsga2", space=space, metrics=["a", "b"], directions=["maximize"])
    with pytest.raises(NasforgeError):
        strategies.get("optuna-tpe", space=space, sampler_options={"no_such_option": 1})


def test_local_search_climbs_with_parallel_workers() -> None:
    """Two asks always out (two workers): the first batch still closes and the search
    climbs (it used to let every ask join the batch, which then never completed, and
    the run was random search)."""
    import math

    from nasforge.estimators.base import Result
    from nasforge.spaces import get as get_space
    from nasforge.strategies import get as get_strategy

    space = get_space("nb201", C=8, N=1)
    st = get_strategy("local-search", space=space, seed=0, n_init=3)

    def score(arch) -> float:  # a smooth objective: count of conv3x3 edges
        return float(sum(v == "nor_conv_3x3" for v in arch.values))

    out = [st.ask(), st.ask()]
    for _ in range(40):
        sug = out.pop(0)
        st.tell(sug, Result(metrics={"val_accuracy": score(sug.arch)}))
        out.append(st.ask())
    assert st.phase == "climb" or st.n_restarts > 0  # the batch closed
    assert len(st.batch) <= 3  # extra asks explored without joining it
    assert math.isfinite(max(st.scores.values()))
