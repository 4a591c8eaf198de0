"""Tests of the ``cnn`` macro space: canonical forms, counting, parsing and building."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nasforge import spaces
from nasforge.errors import ArchParseError, NasforgeError
from nasforge.spaces.base import Arch
from nasforge.spaces.cnn import CNNSpace

SPACE = spaces.get("cnn")
SEEDS = st.integers(0, 2**32 - 1)
HSET = settings(max_examples=60, deadline=None)

TINY_CONFIGS = [
    dict(max_blocks=2, min_blocks=1, widths=(8, 16), kernels=(3, 5), block_types=("conv", "pool"),
         activations=("relu",), dropouts=(0.0,), stem_widths=(8,)),
    dict(max_blocks=2, min_blocks=0, widths=(8,), kernels=(3,),
         block_types=("sepconv", "mbconv", "pool"), activations=("relu", "silu"),
         dropouts=(0.0, 0.5), stem_widths=(4, 8)),
    dict(max_blocks=3, min_blocks=2, widths=(8,), kernels=(3,), block_types=("pool",),
         activations=("relu",), dropouts=(0.0,), stem_widths=(4,)),
]


def _arch_from(seed: int, space: CNNSpace = SPACE) -> Arch:
    """A sampled, mutated or crossed-over arch, depending on the seed."""
    rng = np.random.default_rng(seed)
    a = space.sample(rng)
    kind = seed % 3
    if kind == 1:
        for _ in range(int(rng.integers(1, 4))):
            a = space.mutate(a, rng)
    elif kind == 2:
        a = space.crossover(a, space.sample(rng), rng)
    return a


def _active_diff(space: CNNSpace, a: Arch, b: Arch) -> list[str]:
    """Choices active in both archs whose values differ."""
    da, db = a.as_dict(), b.as_dict()
    return [
        k for k in da
        if da[k] != db[k] and space.is_active(k, da) and space.is_active(k, db)
    ]


# -- registry and config ---------------------------------------------------------------------


def test_registered_and_config_rebuilds() -> None:
    assert "cnn" in spaces.names()
    cfg = SPACE.config()
    json.dumps(cfg)
    again = spaces.get("cnn", **cfg)
    assert again.config() == cfg
    assert again.choices() == SPACE.choices()
    custom = spaces.get("cnn", **TINY_CONFIGS[1])
    rebuilt = spaces.get("cnn", **json.loads(json.dumps(custom.config())))
    assert rebuilt.choices() == custom.choices()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_blocks=0), dict(min_blocks=-1), dict(min_blocks=4, max_blocks=3),
        dict(max_blocks=2.5), dict(widths=()), dict(widths=(16, 16)), dict(widths=(0, 8)),
        dict(widths=(True,)), dict(kernels=(4,)), dict(block_types=("conv", "attention")),
        dict(block_types="conv"), dict(activations=("swish2",)), dict(dropouts=(1.0,)),
        dict(dropouts=(-0.1,)), dict(dropouts=(0, 0.0)), dict(stem_widths=(8, -1)),
        dict(expansion=0),
    ],
)
def test_bad_constructor_options_raise(kwargs: dict) -> None:
    with pytest.raises(NasforgeError):
        CNNSpace(**kwargs)


# -- round trips -----------------------------------------------------------------------------


@HSET
@given(SEEDS)
def test_string_and_json_round_trip(seed: int) -> None:
    a = _arch_from(seed)
    assert SPACE.parse(str(a)) == a
    assert SPACE.parse(str(a)).text == a.text
    assert SPACE.from_json(SPACE.to_json(a)) == a
    assert SPACE.from_json(a.to_json()) == a
    # the string has one token per active block plus stem and dropout
    assert len(a.text.split("|")) == int(a["n_blocks"]) + 2 + (a["head"] != "gap")


@HSET
@given(SEEDS)
def test_round_trip_custom_space(seed: int) -> None:
    space = spaces.get("cnn", **TINY_CONFIGS[1])
    a = _arch_from(seed, space)
    assert space.parse(a.text) == a
    assert space.from_json(space.to_json(a)) == a


def test_example_string_reads_as_documented() -> None:
    text = "stem16|mbconv-k5-w32-silu-skip-down|conv-k3-w64-relu|pool-down|drop0.25"
    a = SPACE.parse(text)
    assert a.text == text
    assert a["n_blocks"] == 3 and a["b0_type"] == "mbconv" and a["b0_kernel"] == 5
    assert a["b0_skip"] is True and a["b1_skip"] is False and a["b2_down"] is True
    assert a["dropout"] == 0.25 and a["stem_width"] == 16
    # parts of a block may come in any order; the result is canonical
    b = SPACE.parse(" stem16 | conv-relu-down-w64-k3 | drop0 ")
    assert b.text == "stem16|conv-k3-w64-relu-down|drop0.0"


# -- canonicalization ------------------------------------------------------------------------


@HSET
@given(SEEDS)
def test_inactive_changes_are_invisible_and_active_ones_are_not(seed: int) -> None:
    a = _arch_from(seed)
    d = a.as_dict()
    n_inactive = 0
    for c in SPACE.choices():
        for o in c.options:
            if o == d[c.name]:
                continue
            b = SPACE.make({**d, c.name: o})
            if SPACE.is_active(c.name, d):
                assert b != a, c.name
            else:
                n_inactive += 1
                assert b == a and b.text == a.text, c.name
    # inactive choices hold their first option
    for c in SPACE.choices():
        if not SPACE.is_active(c.name, d):
            assert d[c.name] == c.options[0]
    n_pool = sum(1 for b in SPACE.blocks(a) if b.type in ("pool", "maxpool", "avgpool"))
    assert (n_inactive > 0) == (int(a["n_blocks"]) < SPACE.max_blocks or n_pool > 0)


def test_pool_block_ignores_width_activation_skip_kernel() -> None:
    base = {c.name: c.options[0] for c in SPACE.choices()}
    base.update(n_blocks=2, b0_type="pool", b1_type="conv")
    a = SPACE.make({**base, "b0_width": 64, "b0_act": "gelu", "b0_skip": True, "b0_kernel": 7})
    assert a == SPACE.make(base)
    assert a.text == "stem8|pool|conv-k3-w16-relu|drop0.0"
    assert SPACE.make({**base, "b0_down": True}) != a
    # blocks beyond n_blocks do not matter either
    assert SPACE.make({**base, "b5_type": "mbconv", "b4_width": 48}) == a


# -- size and enumeration --------------------------------------------------------------------


@pytest.mark.parametrize("cfg", TINY_CONFIGS)
def test_size_matches_brute_force(cfg: dict) -> None:
    space = spaces.get("cnn", **cfg)
    distinct = {space.make(v) for v in itertools.product(*(c.options for c in space.choices()))}
    assert space.size == len(distinct)
    enumerated = list(space.enumerate())
    assert len(enumerated) == len(set(enumerated)) == space.size
    assert set(enumerated) == distinct
    assert space.size < np.prod([len(c.options) for c in space.choices()])


def test_default_size_and_lazy_enumeration() -> None:
    # conv types * kernels * widths * acts * skip * down * block dropouts
    n_conv = 3 * 3 * 8 * 4 * 2 * 2 * 3
    per_block = n_conv + 2 * 3 + 2 * 3  # + pool with/without down, 2x2 max/avg pools
    expected = 6 * 3 * 6 * sum(per_block**n for n in range(1, 11))  # stems, heads, dropouts
    assert SPACE.size == expected
    first = list(itertools.islice(SPACE.enumerate(), 50))
    assert len(set(first)) == 50


# -- operators -------------------------------------------------------------------------------


@HSET
@given(SEEDS)
def test_mutate_changes_exactly_one_active_choice(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = _arch_from(seed)
    b = SPACE.mutate(a, rng)
    assert b != a
    assert len(_active_diff(SPACE, a, b)) == 1


@settings(max_examples=15, deadline=None)
@given(SEEDS)
def test_neighbors_differ_in_one_active_choice(seed: int) -> None:
    a = _arch_from(seed)
    d = a.as_dict()
    nbrs = SPACE.neighbors(a)
    expected = sum(len(c.options) - 1 for c in SPACE.choices() if SPACE.is_active(c.name, d))
    assert len(nbrs) == len(set(nbrs)) == expected
    for n in nbrs:
        assert n != a
        diff = _active_diff(SPACE, a, n)
        assert len(diff) == 1 and SPACE.is_active(diff[0], d)


@HSET
@given(SEEDS)
def test_encode_fixed_length_one_hot_of_active(seed: int) -> None:
    a = _arch_from(seed)
    e = SPACE.encode(a)
    assert e.shape == (SPACE.encoding_size,)
    d = a.as_dict()
    assert e.sum() == sum(SPACE.is_active(c.name, d) for c in SPACE.choices())
    assert set(np.unique(e)) <= {0.0, 1.0}


# -- parse errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("stem16|conv-k3-w32-relu|drop0.1|", ""),
        ("stem17|conv-k3-w32-relu|drop0.1", "stem17"),
        ("stm16|conv-k3-w32-relu|drop0.1", "stm16"),
        ("stem16|conv-k4-w32-relu|drop0.1", "conv-k4-w32-relu"),
        ("stem16|conv-k3-w33-relu|drop0.1", "conv-k3-w33-relu"),
        ("stem16|conv-k3-w32-tanh|drop0.1", "conv-k3-w32-tanh"),
        ("stem16|conv-k3-w32|drop0.1", "conv-k3-w32"),
        ("stem16|conv-k3-k5-w32-relu|drop0.1", "conv-k3-k5-w32-relu"),
        ("stem16|conv-k3-w32-relu-skip-skip|drop0.1", "conv-k3-w32-relu-skip-skip"),
        ("stem16|dense-k3-w32-relu|drop0.1", "dense-k3-w32-relu"),
        ("stem16|pool-skip|drop0.1", "pool-skip"),
        ("stem16|pool-k3|drop0.1", "pool-k3"),
        ("stem16|conv-k3-w32-relu|drop0.35", "drop0.35"),
        ("stem16|maxpool-down|drop0.1", "maxpool-down"),
        ("stem16|conv-k3-w32-relu-drop0.7|drop0.1", "conv-k3-w32-relu-drop0.7"),
        ("stem16|conv-k3-w32-relu|fc7x|drop0.1", "fc7x"),
        ("stem16|conv-k3-w32-relu|dropx", "dropx"),
        ("stem16|conv-k3-w32-relu|0.1", "0.1"),
        ("stem16||drop0.1", ""),
    ],
)
def test_bad_strings_name_the_bad_token(text: str, bad: str) -> None:
    with pytest.raises(ArchParseError) as ei:
        SPACE.parse(text)
    assert f"{bad!r}" in str(ei.value)


def test_bad_block_count_and_shape_of_string() -> None:
    with pytest.raises(ArchParseError, match="11 blocks"):
        SPACE.parse("stem16|" + "pool|" * 11 + "drop0.0")
    with pytest.raises(ArchParseError, match="0 blocks"):
        SPACE.parse("stem16|drop0.0")
    with pytest.raises(ArchParseError):
        SPACE.parse("stem16")
    with pytest.raises(ArchParseError):
        SPACE.from_json('{"space": "cnn", "arch": "stem16|pool|drop0.7"}')


# -- building --------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8), (3, 9, 11)])
def test_forward_shapes(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    torch.manual_seed(0)
    archs = [SPACE.sample(rng) for _ in range(3)]
    # a deep all-downsampling chain reaches 1x1 and must stop shrinking there
    archs.append(SPACE.parse(
        "stem8|conv-k3-w16-relu-skip-down|pool-down|sepconv-k5-w16-gelu-skip-down|"
        "mbconv-k7-w32-silu-skip-down|pool-down|mbconv-k3-w16-hardswish-skip-down|drop0.5"
    ))
    for a in archs:
        net = SPACE.build(a, shape, 7).eval()
        stages = SPACE.trace(a, shape)
        sizes: list[tuple[int, ...]] = []

        def record(_m: torch.nn.Module, _i: object, o: torch.Tensor, out: list = sizes) -> None:
            out.append(tuple(o.shape[1:]))

        hooks = [m.register_forward_hook(record) for m in net.blocks]
        with torch.no_grad():
            y = net(torch.randn(2, *shape))
        for h in hooks:
            h.remove()
        assert y.shape == (2, 7) and torch.isfinite(y).all()
        assert sizes == [(s.out_channels, s.height, s.width) for s in stages]
        assert all(s.height >= 1 and s.width >= 1 for s in stages)
    deep = SPACE.trace(archs[-1], shape)
    assert (deep[-1].height, deep[-1].width) == (1, 1) or max(shape[1:]) > 32


def test_downsample_ignored_below_two_pixels() -> None:
    a = SPACE.parse("stem8|" + "pool-down|" * 6 + "drop0.0")
    strides = [s.stride for s in SPACE.trace(a, (1, 8, 8))]
    assert strides == [2, 2, 2, 1, 1, 1]
    strides = [s.stride for s in SPACE.trace(a, (3, 9, 11))]
    assert strides == [2, 2, 2, 2, 1, 1]  # 9x11 -> 5x6 -> 3x3 -> 2x2 -> 1x1


def test_skip_projection_and_params_differ() -> None:
    plain = SPACE.parse("stem16|conv-k3-w32-relu|drop0.0")
    skip = SPACE.parse("stem16|conv-k3-w32-relu-skip|drop0.0")
    same = SPACE.parse("stem16|conv-k3-w16-relu-skip|drop0.0")

    def n_params(a: Arch) -> int:
        return sum(p.numel() for p in SPACE.build(a, (1, 28, 28), 10).parameters())

    assert n_params(skip) == n_params(plain) + 16 * 32 + 2 * 32  # 1x1 proj conv + BN
    assert n_params(same) == n_params(SPACE.parse("stem16|conv-k3-w16-relu|drop0.0"))


def test_typical_model_is_small() -> None:
    rng = np.random.default_rng(1)
    counts = [
        sum(p.numel() for p in SPACE.build(SPACE.sample(rng), (1, 28, 28), 10).parameters())
        for _ in range(20)
    ]
    assert np.median(counts) < 500_000


@pytest.mark.parametrize("shape", [(1, 7, 28), (1, 28, 4), (0, 28, 28), (28, 28), (1, 28.0, 28)])
def test_bad_input_shapes_raise(shape: tuple) -> None:
    a = SPACE.sample(np.random.default_rng(0))
    with pytest.raises(NasforgeError):
        SPACE.build(a, shape, 10)


def test_bad_num_classes_and_foreign_arch_raise() -> None:
    a = SPACE.sample(np.random.default_rng(0))
    with pytest.raises(NasforgeError):
        SPACE.build(a, (1, 28, 28), 0)
    other = spaces.get("cnn", max_blocks=2)
    with pytest.raises(NasforgeError):
        other.build(SPACE.parse("stem8|pool|pool|pool|drop0.0"), (1, 28, 28), 10)
    with pytest.raises(NasforgeError):
        SPACE.build(("stem8|pool|drop0.0",), (1, 28, 28), 10)  # type: ignore[arg-type]
