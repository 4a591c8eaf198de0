"""Backbones: every space's network split into feature levels and a head (issue 11 s.2).

The levels a backbone declares must be what ``forward_features`` returns on a real input,
the classifier must stay the same function with the same parameters (so saved weights
still load strictly), and a space that cannot split its network must say so.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch
import torch.nn as nn

from nasforge import spaces
from nasforge.errors import NasforgeError
from nasforge.spaces.base import Arch, Backbone, Choice, Level, SearchSpace

#: the modules each space's head is made of: the only keys build() adds to the backbone's
HEAD_PREFIXES = {
    "cnn": ("fc.", "classifier."),
    "mobile": ("head.", "classifier."),
    "nb201": ("lastact.", "classifier."),
    "darts": ("classifier.",),
}

#: (space factory, input shape, how many random archs): small, odd sides included
CASES: list[tuple[str, Callable[[], SearchSpace], tuple[int, int, int], int]] = [
    ("cnn-default", lambda: spaces.get("cnn"), (1, 28, 28), 1),
    ("cnn-small", lambda: spaces.get("cnn", max_blocks=6, widths=[8, 16], stem_widths=[8],
                                     expansion=2), (3, 13, 17), 6),
    ("cnn-empty-ok", lambda: spaces.get("cnn", min_blocks=0, max_blocks=2, widths=[8],
                                        stem_widths=[8]), (1, 8, 9), 4),
    ("mobile", lambda: spaces.get("mobile", width_mult=0.25, head_width=32), (3, 32, 32), 3),
    ("mobile-odd", lambda: spaces.get("mobile", widths=[8, 16, 16], strides=[2, 2, 2],
                                      depths=[1, 2], head_width=16), (1, 9, 12), 3),
    ("nb201", lambda: spaces.get("nb201", C=4, N=1), (3, 16, 16), 3),
    ("nb201-odd", lambda: spaces.get("nb201", C=4, N=2), (1, 11, 9), 2),
    ("darts", lambda: spaces.get("darts", C=4, layers=4), (3, 16, 16), 1),
    ("darts-odd", lambda: spaces.get("darts", C=2, layers=2), (1, 11, 9), 1),
]


def _archs(sp: SearchSpace, n: int) -> list[Arch]:
    rng = np.random.default_rng(11)
    return list(dict.fromkeys([*sp.known_good(), *(sp.sample(rng) for _ in range(n))]))


def _assert_levels(levels: Sequence[Level], feats: Sequence[torch.Tensor],
                   shape: tuple[int, int, int]) -> None:
    """One tensor per level with the declared channels and side = ceil(side / stride)."""
    assert len(feats) == len(levels) >= 1
    assert [lv.stride for lv in levels] == sorted(lv.stride for lv in levels)  # coarsest last
    _, h, w = shape
    for lv, f in zip(levels, feats, strict=True):
        assert isinstance(lv, Level) and lv.stride >= 1 and lv.channels >= 1
        assert tuple(f.shape) == (2, lv.channels, math.ceil(h / lv.stride),
                                  math.ceil(w / lv.stride)), (lv, f.shape)


@pytest.mark.parametrize(("label", "make", "shape", "n"), CASES, ids=[c[0] for c in CASES])
def test_levels_match_features_and_the_classifier_is_unchanged(label, make, shape, n):
    sp = make()
    assert sp.has_backbone() and sp.input_kind == "image"
    heads = HEAD_PREFIXES[sp.name]
    for arch in _archs(sp, n):
        torch.manual_seed(0)
        x = torch.randn(2, *shape)
        bb = sp.build_backbone(arch, shape).eval()
        assert isinstance(bb, Backbone)
        with torch.no_grad():
            out = bb(x)
        _assert_levels(bb.levels, out, shape)
        assert sp.backbone_levels(arch, shape) == bb.levels  # declared without building

        net = sp.build(arch, shape, 5).eval()
        assert isinstance(net, Backbone) and net.levels == bb.levels
        with torch.no_grad():
            feats = net.forward_features(x)
            logits = net(x)
            _assert_levels(net.levels, feats, shape)
            # forward is exactly the head on the features (either the list or its last map)
            assert torch.equal(logits, net.forward_head(feats))
            assert torch.equal(logits, net.forward_head(feats[-1]))
            assert logits.shape == (2, 5)

        # build() = the backbone's parameters, same names, plus the head's: so a classifier
        # checkpoint loads strictly into the backbone, and the backbone computes its features
        sd, bsd = net.state_dict(), bb.state_dict()
        assert set(bsd) < set(sd)
        assert all(k.startswith(heads) for k in set(sd) - set(bsd)), set(sd) - set(bsd)
        assert all(not k.startswith(heads) for k in bsd)
        assert [(k, v.shape) for k, v in bsd.items()] == [
            (k, v.shape) for k, v in sd.items() if k in bsd]
        n_head = sum(p.numel() for k, p in net.named_parameters() if k.startswith(heads))
        assert sum(p.numel() for p in net.parameters()) == (
            sum(p.numel() for p in bb.parameters()) + n_head)
        bb.load_state_dict({k: v for k, v in sd.items() if k in bsd}, strict=True)
        with torch.no_grad():
            for a, b in zip(bb(x), feats, strict=True):
                assert torch.equal(a, b)


def test_forward_is_the_head_on_the_features_in_training_mode_too():
    """Dropout draws the same numbers either way: the split adds no op to the forward."""
    sp = spaces.get("cnn")
    arch = sp.parse("stem16|conv-k3-w32-relu-drop0.2|maxpool-drop0.1|fc128|drop0.3")
    net = sp.build(arch, (1, 16, 16), 3).train()
    x = torch.randn(4, 1, 16, 16)
    torch.manual_seed(5)
    a = net(x)
    torch.manual_seed(5)
    b = net.forward_head(net.forward_features(x))
    assert torch.equal(a, b)


# ------------------------------------------------------------- the levels each space declares
def test_cnn_levels_are_the_last_map_of_each_resolution():
    sp = spaces.get("cnn")
    hand = sp.parse("stem16|maxpool|conv-k3-w48-relu|conv-k3-w48-relu|maxpool"
                    "|conv-k3-w96-relu|conv-k3-w96-relu|drop0.1")
    assert sp.backbone_levels(hand, (1, 28, 28)) == [Level(16, 1), Level(48, 2), Level(96, 4)]
    # a downsampling conv ends the stride-1 stage too; no downsample: one level
    down = sp.parse("stem8|conv-k3-w16-relu|conv-k3-w32-relu-down|sepconv-k3-w24-relu|drop0.0")
    assert sp.backbone_levels(down, (3, 32, 32)) == [Level(16, 1), Level(24, 2)]
    flat = sp.parse("stem8|conv-k3-w16-relu|conv-k3-w32-relu|drop0.0")
    assert sp.backbone_levels(flat, (3, 32, 32)) == [Level(32, 1)]


def test_cnn_levels_stop_where_downsampling_stops():
    """Below 2 pixels a downsample is ignored (CNNSpace.trace): no level, no stride, for it."""
    sp = spaces.get("cnn")
    arch = sp.parse("stem8|maxpool|maxpool|maxpool|maxpool|maxpool|conv-k3-w16-relu|drop0.0")
    levels = sp.backbone_levels(arch, (1, 8, 8))
    assert levels == [Level(8, 1), Level(8, 2), Level(8, 4), Level(16, 8)]
    feats = sp.build_backbone(arch, (1, 8, 8))(torch.randn(2, 1, 8, 8))
    _assert_levels(levels, feats, (1, 8, 8))


def test_cnn_without_blocks_exposes_the_stem():
    sp = spaces.get("cnn", min_blocks=0, max_blocks=2, widths=[8], stem_widths=[8])
    arch = sp.parse("stem8|drop0.0")
    assert sp.backbone_levels(arch, (1, 9, 9)) == [Level(8, 1)]


def test_mobile_levels_are_its_stages():
    sp = spaces.get("mobile", width_mult=0.5)
    # widths 16/24/40/64 at x0.5 (multiples of 4), strides stem 2 then 1, 2, 2, 1
    want = [Level(8, 2), Level(12, 4), Level(20, 8), Level(32, 8)]
    assert sp.stage_levels() == want
    assert sp.backbone_levels(sp.smallest(), (3, 32, 32)) == want
    assert sp.backbone_levels(sp.largest(), (3, 32, 32)) == want


def test_nb201_levels_are_its_three_cell_stages():
    sp = spaces.get("nb201", C=8, N=2)
    arch = sp.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+"
                    "|skip_connect~0|nor_conv_1x1~1|avg_pool_3x3~2|")
    assert sp.backbone_levels(arch, (3, 32, 32)) == [Level(8, 1), Level(16, 2), Level(32, 4)]
    # pooled features (what SPOS/DARTS read) still come after the head's BN+ReLU
    net = sp.build(arch, (3, 16, 16), 10).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net.classifier(net.features(x)), net(x))
        assert net.features(x).shape == (2, net.feature_dim)


# ---------------------------------------------------------------------- errors and bounds
class _Flat(SearchSpace):
    """A space that builds whole classifiers only (no split into backbone and head)."""

    name = "flat-toy"

    def choices(self) -> tuple[Choice, ...]:
        return (Choice("width", (2, 4)),)

    def build(self, arch: Arch, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        c, h, w = input_shape
        return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))


def test_a_space_without_backbones_says_so():
    sp = _Flat()
    assert not sp.has_backbone() and sp.input_kind == "image"
    with pytest.raises(NasforgeError, match="'flat-toy' does not build backbones") as e:
        sp.build_backbone(sp.make([2]), (1, 8, 8))
    for name in ("cnn", "mobile", "nb201"):  # and where to go instead
        assert name in str(e.value)
    assert sp.build(sp.make([2]), (1, 8, 8), 3)(torch.zeros(1, 1, 8, 8)).shape == (1, 3)


@pytest.mark.parametrize("name", ["cnn", "mobile", "nb201"])
def test_a_backbone_has_no_head(name):
    sp = spaces.get(name, **({"C": 4, "N": 1} if name == "nb201" else {}))
    arch = sp.sample(np.random.default_rng(0))
    bb = sp.build_backbone(arch, (1, 16, 16)).eval()
    assert not [k for k in bb.state_dict() if k.startswith(HEAD_PREFIXES[name])]
    with pytest.raises(NasforgeError, match="without a head"):
        bb.forward_head(bb(torch.zeros(2, 1, 16, 16)))  # type: ignore[operator]


def test_build_backbone_is_bounded_before_allocation(monkeypatch):
    """The meta-device size guard (issue 12) covers build_backbone as it covers build."""
    sp = spaces.get("cnn")
    arch = sp.parse("stem64|conv-k7-w192-relu|conv-k7-w192-relu|drop0.0")
    built: list[str] = []
    real = type(sp)._build

    def spy(self, arch, input_shape, num_classes, head=True):  # noqa: ANN001, ANN202
        net = real(self, arch, input_shape, num_classes, head)
        built.append(str(next(net.parameters()).device))
        return net

    monkeypatch.setattr(type(sp), "_build", spy)
    monkeypatch.setenv("NASFORGE_MAX_PARAMS", "100000")
    with pytest.raises(NasforgeError, match="over the limit.*refused before allocating"):
        sp.build_backbone(arch, (3, 32, 32))
    assert built == ["meta"]  # only the shape-only build ran
    with pytest.raises(NasforgeError, match="out of bounds"):
        sp.build_backbone(arch, (1, 100_000, 100_000))
    monkeypatch.delenv("NASFORGE_MAX_PARAMS")
    built.clear()
    assert isinstance(sp.build_backbone(arch, (3, 16, 16)), Backbone)
    assert built == ["meta", "cpu"]
