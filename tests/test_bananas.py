"""BANANAS: beats random on a toy space with interactions, deterministic, resumable, batched asks;
path encoding of nb201."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch
import torch.nn as nn

from nasforge import spaces, strategies
from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.spaces.base import Arch, Choice, SearchSpace
from nasforge.strategies.bananas import Bananas
from nasforge.strategies.base import History
from nasforge.strategies.encodings import (
    OneHotEncoder,
    PathEncoder,
    cell_edges,
    cell_paths,
    make_encoder,
)


class ToySpace(SearchSpace):
    """5 choices x 4 options (1024 archs); nothing to build."""

    name = "toy"

    def choices(self) -> tuple[Choice, ...]:
        return tuple(Choice(f"c{i}", ("a", "b", "c", "d")) for i in range(5))

    def build(self, arch: Arch, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        raise NotImplementedError


def toy_objective() -> dict[Arch, float]:
    """Additive terms plus pairwise interactions of neighbouring choices, unique optimum."""
    space = ToySpace()
    r = np.random.default_rng(123)
    unary = r.normal(size=(5, 4))
    pair = r.normal(size=(4, 4, 4)) * 1.5
    table = {}
    for arch in space.enumerate():
        x = [("a", "b", "c", "d").index(v) for v in arch.values]
        f = sum(unary[i, x[i]] for i in range(5)) + sum(pair[i, x[i], x[i + 1]] for i in range(4))
        table[arch] = float(f)
    return table


TOY = toy_objective()


def run(strategy, objective: dict[Arch, float], n: int) -> list[str]:
    out = []
    for _ in range(n):
        s = strategy.ask()
        out.append(s.arch.text)
        strategy.tell(s, Result(metrics={"val_accuracy": objective[s.arch]}))
    return out


def queries_to_optimum(strategy, objective: dict[Arch, float], budget: int) -> int:
    best = max(objective.values())
    for q in range(1, budget + 1):
        s = strategy.ask()
        strategy.tell(s, Result(metrics={"val_accuracy": objective[s.arch]}))
        if objective[s.arch] == best:
            return q
    return budget + 1


def test_toy_objective_has_unique_optimum():
    vals = sorted(TOY.values())
    assert vals[-1] > vals[-2]


def test_beats_random_on_toy_space():
    space = ToySpace()
    budget = 250
    bo = [queries_to_optimum(Bananas(space, seed=s), TOY, budget) for s in range(4)]
    # random search needs (1024 + 1) / 2 queries on average; let it run to the end
    rnd = [queries_to_optimum(strategies.get("random", space=space, seed=s), TOY, 1024)
           for s in range(4)]
    assert max(bo) <= budget, bo  # random finds it within 250 with probability 0.24 per seed
    assert np.mean(bo) < 0.5 * np.mean(rnd), (bo, rnd)


def test_same_seed_same_queries_and_different_seed_differs():
    space = ToySpace()
    a = run(Bananas(space, seed=3), TOY, 30)
    b = run(Bananas(space, seed=3), TOY, 30)
    c = run(Bananas(space, seed=4), TOY, 30)
    assert a == b
    assert a != c
    assert len(set(a)) == len(a)  # never repeats an architecture


@pytest.mark.parametrize(
    "kw",
    [
        {"retrain_every": 1, "prior_scale": 0.0, "bootstrap": False},
        {"retrain_every": 4, "prior_scale": 0.5, "bootstrap": True},
    ],
)
def test_resume_continues_identically(kw):
    space = ToySpace()
    kw = {"num_init": 5, "train_steps": 60, **kw}
    full = run(Bananas(space, seed=7, **kw), TOY, 30)

    history = History()
    first = history.watch(Bananas(space, seed=7, **kw))
    head = run(first, TOY, 17)
    state = json.loads(json.dumps(first.state_dict()))
    resumed = Bananas(space, seed=0, **kw)
    resumed.load_state_dict(state, history.trials)
    tail = run(resumed, TOY, 13)
    assert head + tail == full


def test_resume_with_pending_asks():
    space = ToySpace()
    kw = {"num_init": 4, "train_steps": 60}

    def drive(strategy, split: int | None) -> list[str]:
        out: list[str] = []
        history = History()
        history.watch(strategy)
        for rnd in range(6):
            batch = [strategy.ask() for _ in range(3)]
            out += [s.arch.text for s in batch]
            if rnd == split:  # checkpoint while the batch is outstanding
                state = json.loads(json.dumps(strategy.state_dict()))
                strategy = history.watch(Bananas(space, seed=99, **kw))
                strategy.load_state_dict(state, history.trials)
            for s in reversed(batch):
                strategy.tell(s, Result(metrics={"val_accuracy": TOY[s.arch]}))
        return out

    assert drive(Bananas(space, seed=1, **kw), 3) == drive(Bananas(space, seed=1, **kw), None)


def test_pending_asks_are_distinct():
    space = ToySpace()
    st = Bananas(space, seed=0, num_init=5, train_steps=50)
    run(st, TOY, 8)  # past the random phase: the predictor proposes
    batch = [st.ask() for _ in range(6)]
    texts = [s.arch.text for s in batch]
    assert len(set(texts)) == 6
    assert not {s.arch for s in batch} & {a for a, _ in st.told}
    for s in batch[::-1]:
        st.tell(s, Result(metrics={"val_accuracy": TOY[s.arch]}))
    assert not st.pending
    assert st.n_told == 14
    nxt = st.ask().arch
    assert nxt not in {a for a, _ in st.told}


@pytest.mark.parametrize("acquisition", ["ei", "ucb"])
def test_other_acquisitions_and_failures(acquisition):
    space = ToySpace()
    st = Bananas(space, seed=0, num_init=4, acquisition=acquisition, train_steps=50)
    texts = []
    for q in range(12):
        s = st.ask()
        texts.append(s.arch.text)
        res = Result.failed("boom") if q % 3 == 0 else Result(metrics={"val_accuracy": TOY[s.arch]})
        st.tell(s, res)
    assert len(set(texts)) == 12
    state = st.state_dict()
    json.dumps(state, allow_nan=False)
    assert "told" not in state["own"]  # rebuilt from the run's trials
    assert sum(not math.isfinite(s) for _, s in st.told) == 4
    old = st._history_state()  # the format of runs before format 2: -inf stored as null
    assert sum(s is None for _, s in json.loads(json.dumps(old, allow_nan=False))["told"]) == 4
    mean, std = st.predict([space.sample(np.random.default_rng(0)) for _ in range(5)])
    assert mean.shape == std.shape == (5,)
    assert np.all(np.isfinite(mean)) and np.all(std >= 0)


def test_minimize_mode_moves_towards_small_values():
    space = ToySpace()
    st = Bananas(space, seed=2, mode="min", metric="loss", num_init=8, train_steps=60)
    vals = []
    for _ in range(40):
        s = st.ask()
        v = -TOY[s.arch]
        vals.append(v)
        st.tell(s, Result(metrics={"loss": v}))
    assert np.mean(vals[-10:]) < np.mean(vals[:8])


def test_torch_global_state_untouched():
    torch.manual_seed(0)
    before = torch.get_rng_state().clone()
    threads = torch.get_num_threads()
    run(Bananas(ToySpace(), seed=0, num_init=3, train_steps=20), TOY, 8)
    assert torch.equal(before, torch.get_rng_state())
    assert torch.get_num_threads() == threads


def test_registered_and_config_round_trip():
    space = ToySpace()
    st = strategies.get("bananas", space=space, seed=5, acquisition="ucb", hidden=[16])
    assert isinstance(st, Bananas)
    cfg = st.config()
    again = strategies.get("bananas", space=space, **cfg)
    assert again.config() == cfg
    assert json.loads(json.dumps(cfg)) == cfg


@pytest.mark.parametrize(
    "kw",
    [
        {"acquisition": "pi"},
        {"encoding": "graph"},
        {"encoding": "path"},  # the toy space is not a cell space
        {"ensemble_size": 0},
        {"hidden": []},
        {"num_init": 1.5},
        {"mutations_per_parent": 0, "num_random": 0},
        {"lr": 0},
        {"prior_scale": -1.0},
        {"loss": "huber"},
    ],
)
def test_bad_options_raise(kw):
    with pytest.raises(NasforgeError):
        Bananas(ToySpace(), **kw)


# -- encodings ---------------------------------------------------------------------------
NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def test_path_encoding_nb201_shape_and_zeros():
    space = spaces.get("nb201")
    enc = make_encoder(space, "auto")
    assert isinstance(enc, PathEncoder)
    assert enc.size == 4 + 4**2 + 4**3 == 84
    assert enc.max_len == 3
    assert not enc(space.make(["none"] * 6)).any()
    # a conv into node 1 that never reaches the output is no path at all
    assert not enc(space.make(["nor_conv_3x3", "none", "none", "none", "none", "none"])).any()
    # every op everywhere: 4 routes (0-3, 0-1-3, 0-2-3, 0-1-2-3)
    full = enc(space.make(["nor_conv_3x3"] * 6))
    assert full.sum() == 4
    assert full[enc.index(("nor_conv_3x3",) * 2)] == 2  # the two length-2 routes share a label


def test_path_encoding_labels_op_sequences():
    space = spaces.get("nb201")
    enc = PathEncoder(space)
    # edges in order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2
    ops = ["nor_conv_3x3", "none", "avg_pool_3x3", "skip_connect", "none", "nor_conv_1x1"]
    arch = space.make(ops)
    paths = cell_paths(enc.edges, arch.values)
    long = ("nor_conv_3x3", "avg_pool_3x3", "nor_conv_1x1")
    assert sorted(paths) == sorted([("skip_connect",), long])
    v = enc(arch)
    assert v.sum() == 2
    assert v[enc.index(("skip_connect",))] == 1
    assert v[enc.index(long)] == 1
    # node 1 feeds nothing that reaches the output: its op does not change the encoding
    dead = ["nor_conv_3x3", "avg_pool_3x3", "none", "skip_connect", "none", "nor_conv_1x1"]
    other = ["avg_pool_3x3", *dead[1:]]
    assert np.array_equal(enc(space.make(dead)), enc(space.make(other)))
    assert not np.array_equal(enc(space.make(dead)), v)
    # distinct op sequences get distinct indices covering 0..size-1
    seqs = [tuple(enc.ops[k] for k in seq) for n in (1, 2, 3) for seq in np.ndindex(*(4,) * n)]
    idx = {enc.index(seq) for seq in seqs}
    assert idx == set(range(enc.size))


def test_encoder_choice_by_space():
    nb = spaces.get("nb201")
    assert cell_edges(nb) == [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    assert cell_edges(ToySpace()) is None
    assert isinstance(make_encoder(ToySpace()), OneHotEncoder)
    assert isinstance(make_encoder(nb, "onehot"), OneHotEncoder)
    both = make_encoder(nb, "both")
    assert both.size == 30 + 84
    a = nb.make(["skip_connect"] * 6)
    assert np.array_equal(both(a)[:30], nb.encode(a))
    with pytest.raises(NasforgeError):
        make_encoder(ToySpace(), "path")
    with pytest.raises(NasforgeError):
        make_encoder(nb, "graph")


def test_bananas_on_nb201_uses_path_encoding_and_runs():
    space = spaces.get("nb201")
    st = Bananas(space, seed=0, num_init=4, train_steps=30)
    assert isinstance(st.encoder, PathEncoder)
    rng = np.random.default_rng(0)
    score = {}
    for _ in range(8):
        s = st.ask()
        score.setdefault(s.arch, float(rng.random()))
        st.tell(s, Result(metrics={"val_accuracy": score[s.arch]}))
    assert len(score) == 8 and all(math.isfinite(v) for v in score.values())
