"""Equivalent architectures: the nb201 functional key, and strategies that skip equivalents."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nasforge import spaces, strategies
from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.spaces.nb201 import EDGES, OP_NAMES, NB201Space, format_ops, functional_ops
from nasforge.strategies.base import History

OPS6 = st.lists(st.sampled_from(OP_NAMES), min_size=6, max_size=6).map(tuple)


def _randomize(net: torch.nn.Module, seed: int) -> None:
    """Random weights *and* batch-norm affine/statistics (a trained net has non-zero betas)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(net.parameters()) + list(net.buffers()):
            if t.dtype.is_floating_point:
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)


@settings(max_examples=200)
@given(OPS6)
def test_functional_ops_is_idempotent_and_keeps_live_edges(ops: tuple[str, ...]) -> None:
    rep = functional_ops(ops)
    assert functional_ops(rep) == rep
    assert functional_ops(rep, symmetric=False) == rep or rep[2] == "none"
    # only ever turns edges off (or swaps the two symmetric nodes)
    plain = functional_ops(ops, symmetric=False)
    assert all(p in ("none", o) for p, o in zip(plain, ops, strict=True))


@settings(max_examples=40, deadline=None)
@given(OPS6)
@example(("none", "nor_conv_3x3", "none", "skip_connect", "nor_conv_3x3", "nor_conv_1x1"))
@example(("nor_conv_3x3", "avg_pool_3x3", "none", "skip_connect", "nor_conv_1x1", "none"))
@example(("none", "none", "avg_pool_3x3", "nor_conv_1x1", "skip_connect", "nor_conv_3x3"))
def test_equivalent_cells_compute_the_same_function(ops: tuple[str, ...]) -> None:
    """The representative's weights, loaded into the original, give the same outputs.

    Dead edges keep their own random weights in the original; the swap of nodes 1 and 2
    is undone by renaming the edges' parameters.
    """
    sp = NB201Space(C=4, N=1)
    rep = functional_ops(ops, symmetric=False)
    torch.manual_seed(0)
    a = sp.build(sp.make(rep), (3, 8, 8), 3).eval()
    b = sp.build(sp.make(ops), (3, 8, 8), 3).eval()
    _randomize(a, 1)
    _randomize(b, 2)
    state = a.state_dict()
    assert set(state) <= set(b.state_dict())
    b.load_state_dict(state, strict=False)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(a(x), b(x), rtol=1e-4, atol=1e-5)
    sym = functional_ops(ops)
    if sym != rep:  # nodes 1 and 2 swapped: edge k of one cell is edge perm[k] of the other
        perm = {0: 1, 1: 0, 2: 2, 3: 3, 4: 5, 5: 4}
        c = sp.build(sp.make(sym), (3, 8, 8), 3).eval()
        renamed = {}
        for name, t in state.items():
            parts = name.split(".")
            if "edges" in parts:
                k = parts.index("edges") + 1
                parts[k] = str(perm[int(parts[k])])
            renamed[".".join(parts)] = t
        c.load_state_dict(renamed)
        with torch.no_grad():
            assert torch.allclose(a(x), c(x), rtol=1e-4, atol=1e-5)


def test_known_equivalences() -> None:
    sp = spaces.get("nb201")
    key = sp.equivalence_key

    def arch(*ops: str):
        return sp.make(ops)

    # node 2 never reaches the output: its input edges do not matter
    a = arch("nor_conv_3x3", "nor_conv_3x3", "avg_pool_3x3", "skip_connect", "nor_conv_1x1", "none")
    b = arch("nor_conv_3x3", "skip_connect", "none", "skip_connect", "nor_conv_1x1", "none")
    assert key(a) == key(b) != a.text
    # a parameter-free edge from an always-zero node carries nothing ...
    z1 = arch("none", "nor_conv_3x3", "none", "skip_connect", "skip_connect", "nor_conv_1x1")
    z2 = arch("none", "nor_conv_3x3", "none", "skip_connect", "none", "nor_conv_1x1")
    assert key(z1) == key(z2)
    # ... but a conv edge from it adds its batch norm's learned constant
    z3 = arch("none", "nor_conv_3x3", "none", "skip_connect", "nor_conv_3x3", "nor_conv_1x1")
    assert key(z3) != key(z2)
    # no edge between nodes 1 and 2: they can swap
    s1 = arch("nor_conv_3x3", "avg_pool_3x3", "none", "skip_connect", "nor_conv_1x1", "none")
    s2 = arch("avg_pool_3x3", "nor_conv_3x3", "none", "skip_connect", "none", "nor_conv_1x1")
    assert key(s1) == key(s2)
    # a live change is a different network
    assert key(arch(*["nor_conv_3x3"] * 6)) != key(arch(*["nor_conv_1x1"] * 6))
    # every cell with an always-zero output is one network
    dead = [a for a in sp.enumerate() if functional_ops(a.values) == ("none",) * len(EDGES)]
    assert len(dead) > 100 and {key(a) for a in dead} == {format_ops(["none"] * 6)}


def test_other_spaces_key_is_the_arch() -> None:
    sp = spaces.get("cnn")
    a = sp.sample(np.random.default_rng(0))
    assert sp.equivalence_key(a) == a.text


def _score(arch) -> Result:
    """A smooth synthetic objective over nb201 (no table needed)."""
    w = {"none": 0.0, "skip_connect": 0.3, "nor_conv_1x1": 0.6, "nor_conv_3x3": 1.0,
         "avg_pool_3x3": 0.2}  # fmt: skip
    v = sum(w[str(o)] * (k + 1) for k, o in enumerate(arch.values))
    return Result(metrics={"val_accuracy": v + 0.01 * math.sin(len(arch.text))})


@pytest.mark.parametrize("name", ["local-search", "bananas"])
@pytest.mark.parametrize("skip", [True, False])
def test_strategies_skip_equivalent_archs(name: str, skip: bool) -> None:
    sp = spaces.get("nb201")
    opts = {"num_init": 5, "train_steps": 20} if name == "bananas" else {}
    st_ = strategies.get(name, space=sp, seed=3, skip_equivalent=skip, **opts)
    history = History()  # the saved state is O(1): the history comes from the trials
    history.watch(st_)
    keys, texts = [], set()
    for _ in range(120):
        sug = st_.ask()
        assert sug.arch.text not in texts  # never the same string twice either way
        texts.add(sug.arch.text)
        keys.append(sp.equivalence_key(sug.arch))
        st_.tell(sug, _score(sug.arch))
    if skip:
        assert len(set(keys)) == len(keys)
    # the state round-trips with the option
    again = strategies.get(name, space=sp, seed=3, skip_equivalent=skip, **opts)
    again.load_state_dict(st_.state_dict(), history.trials)
    assert again.ask().arch == st_.ask().arch


@pytest.mark.parametrize("name, option", [("local-search", "skip_equivalent"),
                                          ("bananas", "skip_equivalent"),
                                          ("bananas", "bootstrap")])  # fmt: skip
def test_flag_options_refuse_non_booleans(name: str, option: str) -> None:
    """A typo like ``--strategy-opt skip_equivalent=flase`` must not silently mean true."""
    sp = spaces.get("nb201")
    with pytest.raises(NasforgeError, match=f"{option} must be true or false"):
        strategies.get(name, space=sp, seed=0, **{option: "flase"})
    assert getattr(strategies.get(name, space=sp, seed=0, **{option: False}), option) is False
