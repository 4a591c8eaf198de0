"""NAS-Bench-201 space: exact published parameter counts, the canonical string, the operators."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nasforge import spaces
from nasforge.errors import ArchParseError, NasforgeError
from nasforge.spaces.nb201 import (
    EDGES,
    OP_NAMES,
    OPS,
    Cell,
    NB201Network,
    NB201Space,
    ResNetBasicblock,
    arch_to_ops,
)

EXAMPLE = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|"
    "+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def space() -> NB201Space:
    return NB201Space(C=4, N=1)


def test_registry_and_config() -> None:
    s = spaces.get("nb201", C=8, N=2)
    assert isinstance(s, NB201Space)
    assert s.config() == {"C": 8, "N": 2}
    assert spaces.get("nb201", **s.config()).config() == s.config()
    assert NB201Space().config() == {"C": 16, "N": 5}


@pytest.mark.parametrize("kw", [{"C": 0}, {"N": 0}, {"C": -3}, {"N": 1.5}, {"C": True}])
def test_bad_config(kw: dict) -> None:
    with pytest.raises(NasforgeError):
        NB201Space(**kw)


def test_choices_and_size(space: NB201Space) -> None:
    cs = space.choices()
    assert [c.name for c in cs] == ["1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"]
    assert list(EDGES) == [(1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2)]
    for c in cs:
        assert c.options == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert OP_NAMES == cs[0].options and set(OPS) == set(OP_NAMES)
    assert space.size == 15625
    archs = list(space.enumerate())
    assert len(archs) == 15625
    assert len(set(archs)) == 15625
    assert len({a.text for a in archs}) == 15625  # no isomorphism merging


# Parameter counts of the published NB201 network (CIFAR-10, C=16, N=5).
BASE = 73_306
PER_CONV3 = 243_040


def _c16(ops: list[str]) -> int:
    s = NB201Space()
    return n_params(s.build(s.make(ops), (3, 32, 32), 10))


@pytest.mark.parametrize(
    "ops,n3",
    [
        (["none"] * 6, 0),
        (["skip_connect", "avg_pool_3x3", "none", "skip_connect", "avg_pool_3x3", "none"], 0),
        (["nor_conv_3x3", "none", "none", "none", "none", "none"], 1),
        (
            [
                "nor_conv_3x3",
                "nor_conv_3x3",
                "avg_pool_3x3",
                "skip_connect",
                "nor_conv_3x3",
                "skip_connect",
            ],
            3,
        ),
        (["nor_conv_3x3"] * 6, 6),
    ],
)
def test_published_param_counts(ops: list[str], n3: int) -> None:
    assert _c16(ops) == BASE + n3 * PER_CONV3


def test_conv1x1_param_count() -> None:
    # a 1x1 ReLUConvBN per cell: C*C + 2C over the three stages, 5 cells each
    per_1x1 = 5 * sum(c * c + 2 * c for c in (16, 32, 64))
    assert _c16(["nor_conv_1x1"] + ["none"] * 5) == BASE + per_1x1
    assert _c16(["nor_conv_1x1", "nor_conv_3x3"] + ["none"] * 4) == BASE + per_1x1 + PER_CONV3


def test_format_and_parse_example(space: NB201Space) -> None:
    a = space.parse(EXAMPLE)
    assert a.text == EXAMPLE == str(a) == space.format(a)
    assert arch_to_ops(a) == (
        "nor_conv_3x3",
        "nor_conv_3x3",
        "avg_pool_3x3",
        "skip_connect",
        "nor_conv_3x3",
        "skip_connect",
    )
    assert a["2<-1"] == "avg_pool_3x3"
    assert arch_to_ops(EXAMPLE) == arch_to_ops(a)
    assert space.parse("  \n" + EXAMPLE + "\t ") == a


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(OP_NAMES), min_size=6, max_size=6))
def test_round_trips(ops: list[str]) -> None:
    space = NB201Space(C=4, N=1)
    a = space.make(ops)
    assert arch_to_ops(a) == tuple(ops)
    assert space.parse(a.text) == a
    assert space.parse(space.format(a)).text == a.text
    assert space.from_json(space.to_json(a)) == a
    assert space.from_json(json.loads(space.to_json(a))) == a
    assert space.from_json({"arch": a.text}) == a
    # the string lists op~input per node, nodes joined by '+'
    groups = a.text.split("+")
    assert [len(g.strip("|").split("|")) for g in groups] == [1, 2, 3]


@pytest.mark.parametrize(
    "text,token",
    [
        (EXAMPLE.replace("avg_pool_3x3~1", "max_pool_3x3~1"), "max_pool_3x3~1"),
        (EXAMPLE.replace("avg_pool_3x3~1", "avg_pool_3x3~2"), "avg_pool_3x3~2"),
        (EXAMPLE.replace("skip_connect~2", "skip_connect~9"), "skip_connect~9"),
        (EXAMPLE.replace("skip_connect~2", "skip_connect"), "skip_connect"),
        (EXAMPLE.replace("skip_connect~2", "skip_connect~2~2"), "skip_connect~2~2"),
        (
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|",
            "|nor_conv_3x3~0|",
        ),
        (
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
            "skip_connect~2|none~3|",
            "none~3|",
        ),
        (
            "nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|none~1|none~2|",
            "nor_conv_3x3~0|",
        ),
        ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2", "|none~0|none~1|none~2"),
        ("|none~0|+|none~0| none~1|+|none~0|none~1|none~2|", " none~1"),
        ("|none~0|+|none~0||none~1|+|none~0|none~1|none~2|", "|none~0||none~1|"),
    ],
)
def test_bad_strings_name_the_token(space: NB201Space, text: str, token: str) -> None:
    with pytest.raises(ArchParseError) as e:
        space.parse(text)
    assert token in str(e.value)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "|none~0|",
        "|none~0|+|none~0|none~1|",
        EXAMPLE + "+|none~0|",
        "a=b",
        EXAMPLE.replace("~", "-"),
    ],
)
def test_bad_group_counts(space: NB201Space, text: str) -> None:
    with pytest.raises(ArchParseError):
        space.parse(text)


def test_bad_json(space: NB201Space) -> None:
    a = space.parse(EXAMPLE)
    doc = a.to_json()
    doc["arch"] = format(space.make(["none"] * 6))
    with pytest.raises(ArchParseError):
        space.from_json(doc)
    with pytest.raises(ArchParseError):
        space.from_json({"choices": {**a.as_dict(), "1<-0": "conv_5x5"}})


def _forward(space: NB201Space, arch, shape: tuple[int, int, int], classes: int) -> torch.Tensor:
    torch.manual_seed(0)
    net = space.build(arch, shape, classes)
    net.eval()
    with torch.no_grad():
        return net(torch.randn(2, *shape))


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (3, 8, 8), (2, 9, 12)])
def test_forward_shapes(
    space: NB201Space, rng: np.random.Generator, shape: tuple[int, int, int]
) -> None:
    for _ in range(2):
        out = _forward(space, space.sample(rng), shape, 7)
        assert out.shape == (2, 7)
        assert torch.isfinite(out).all()


def test_all_none_cell_ignores_cell_input(space: NB201Space) -> None:
    # with every edge 'none' the cells output zeros, so the logits don't depend on the input
    net = space.build(space.make(["none"] * 6), (3, 8, 8), 3).eval()
    with torch.no_grad():
        a, b = net(torch.randn(1, 3, 8, 8)), net(torch.randn(1, 3, 8, 8))
    assert torch.allclose(a, b)
    net2 = space.build(space.parse(EXAMPLE), (3, 8, 8), 3).eval()
    with torch.no_grad():
        assert not torch.allclose(net2(torch.randn(1, 3, 8, 8)), net2(torch.randn(1, 3, 8, 8)))


def test_cell_sums_edges() -> None:
    # node1 = x, node2 = x + node1, node3 = node2 (others 'none') -> output 2x
    cell = Cell(
        ["skip_connect", "skip_connect", "skip_connect", "none", "none", "skip_connect"], 4, 4
    )
    x = torch.randn(1, 4, 5, 5)
    assert torch.allclose(cell(x), 2 * x)
    # all skips: n1 = x, n2 = 2x, n3 = x + x + 2x = 4x
    assert torch.allclose(Cell(["skip_connect"] * 6, 4, 4)(x), 4 * x)
    pool = Cell(["avg_pool_3x3"] + ["none"] * 4 + ["skip_connect"], 4, 4)(torch.ones(1, 4, 5, 5))
    assert torch.allclose(pool, torch.zeros(1, 4, 5, 5))  # n3 = n2 = 0
    pool = Cell(["none", "none", "none", "avg_pool_3x3", "none", "none"], 4, 4)(
        torch.ones(1, 4, 5, 5)
    )
    assert torch.allclose(
        pool, torch.ones(1, 4, 5, 5)
    )  # count_include_pad=False keeps borders at 1


@pytest.mark.parametrize("shape", [(3, 7, 32), (3, 32, 4), (3, 32), (0, 32, 32)])
def test_too_small_or_bad_input(space: NB201Space, shape: tuple) -> None:
    with pytest.raises(NasforgeError) as e:
        space.build(space.parse(EXAMPLE), shape, 10)
    if len(shape) == 3 and shape[0] > 0:
        assert "too small" in str(e.value) and "8x8" in str(e.value)


def test_reusable_blocks() -> None:
    for name, factory in OPS.items():
        m = factory(4, 4, 1, True, True)
        assert m(torch.randn(1, 4, 6, 6)).shape == (1, 4, 6, 6), name
        r = factory(4, 8, 2, True, True)
        assert r(torch.randn(1, 4, 6, 6)).shape == (1, 8, 3, 3), name
    blk = ResNetBasicblock(4, 8, 2)
    assert blk(torch.randn(1, 4, 8, 8)).shape == (1, 8, 4, 4)
    assert n_params(blk) == 4 * 8 * 9 + 16 + 8 * 8 * 9 + 16 + 4 * 8
    # a custom cell factory gets the same skeleton (here: an identity "cell")
    seen: list[tuple[int, int]] = []

    def factory(ci: int, co: int) -> torch.nn.Module:
        seen.append((ci, co))
        return torch.nn.Identity()

    net = NB201Network(factory, 4, 2, 1, 5)
    assert seen == [(4, 4)] * 2 + [(8, 8)] * 2 + [(16, 16)] * 2
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 5)


def test_mutate_neighbors_encode(space: NB201Space, rng: np.random.Generator) -> None:
    for _ in range(20):
        a = space.sample(rng)
        b = space.mutate(a, rng)
        diff = [k for k, v in a.items if b[k] != v]
        assert len(diff) == 1
        nbrs = space.neighbors(a)
        assert len(nbrs) == 24 and len(set(nbrs)) == 24 and a not in nbrs
        assert all(sum(x != y for x, y in zip(a.values, n.values, strict=True)) == 1 for n in nbrs)
        e = space.encode(a)
        assert e.shape == (30,) and e.sum() == 6
        assert space.encoding_size == 30
        assert [OP_NAMES[i] for i in e.reshape(6, 5).argmax(1)] == list(arch_to_ops(a))
