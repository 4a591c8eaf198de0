"""The mobile space: string/JSON round trips, canonicalization, counting, building, export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nasforge import spaces
from nasforge.errors import ArchParseError, NasforgeError
from nasforge.metrics import count_params
from nasforge.spaces.mobile import InvertedResidual, MobileSpace, scale_width


def _tiny() -> MobileSpace:
    return MobileSpace(widths=(8, 16), strides=(1, 2), depths=(1, 2), kernels=(3, 5),
                       expansions=(1, 2), stem_width=8, head_width=16)  # fmt: skip


def test_registered_and_rebuilt_from_config():
    sp = spaces.get("mobile", width_mult=0.5, act="hardswish")
    assert isinstance(sp, MobileSpace)
    again = spaces.get("mobile", **json.loads(json.dumps(sp.config())))
    assert again.config() == sp.config()
    assert [c.name for c in again.choices()] == [c.name for c in sp.choices()]


def test_string_and_json_round_trips(rng):
    sp = MobileSpace()
    for _ in range(30):
        a = sp.sample(rng)
        assert sp.parse(a.text) == a
        assert sp.parse(a.text).text == a.text
        assert sp.from_json(sp.to_json(a)) == a
        assert sp.from_json(json.loads(sp.to_json(a))) == a
        # the string reads like the network: one token per active block
        cfg = sp.stage_config(a)
        assert a.text.count("|") == sp.num_stages - 1
        assert sum(len(s) for s in cfg) == a.text.count("k")


def test_canonicalization_resets_inactive_blocks():
    sp = MobileSpace()
    d = sp.largest().as_dict()
    d["s1_depth"] = 2
    a = sp.make(d)
    d2 = dict(d, s1_b3_kernel=3, s1_b3_expand=3, s1_b2_kernel=5)  # only inactive blocks differ
    b = sp.make(d2)
    assert a == b and a.text == b.text and hash(a) == hash(b)
    assert a["s1_b2_kernel"] == sp.kernels[0] and a["s1_b3_expand"] == sp.expansions[0]
    assert not sp.is_active("s1_b2_kernel", a.as_dict())
    assert sp.is_active("s1_b1_kernel", a.as_dict()) and sp.is_active("s1_depth", a.as_dict())
    assert a.text.split("|")[1] == "k7e6-k7e6"
    # a change in an active block is a different arch
    assert sp.make(dict(d, s1_b1_kernel=3)) != a


def test_size_matches_enumeration():
    sp = _tiny()
    archs = list(sp.enumerate())
    assert len(archs) == len(set(archs)) == sp.size == (4 + 16) ** 2
    assert all(sp.parse(a.text) == a for a in archs[:50])


@pytest.mark.parametrize(
    "bad, why",
    [
        ("k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", "stage"),
        ("k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", "depth"),
        ("k4e3-k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", "kernel 4"),
        ("k3e5-k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", "expansion 5"),
        ("k3x3-k3e3|k3e3-k3e3|k3e3-k3e3|k3e3-k3e3", "k<kernel>e<expand>"),
    ],
)
def test_parse_errors_name_the_problem(bad, why):
    with pytest.raises(ArchParseError, match=why):
        MobileSpace().parse(bad)


def test_bad_options_are_user_errors():
    with pytest.raises(NasforgeError, match="odd"):
        MobileSpace(kernels=(3, 4))
    with pytest.raises(NasforgeError, match="one stride per stage"):
        MobileSpace(widths=(8, 16), strides=(1,))
    with pytest.raises(NasforgeError, match="width_mult"):
        MobileSpace(width_mult=0)
    with pytest.raises(NasforgeError, match="act"):
        MobileSpace(act="swishy")
    sp = MobileSpace()
    with pytest.raises(NasforgeError, match="too small"):
        sp.build(sp.smallest(), (1, 7, 7), 10)
    with pytest.raises(NasforgeError, match="not an architecture"):
        sp.build(spaces.get("nb201").sample(np.random.default_rng(0)), (1, 28, 28), 10)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8), (3, 9, 13)])
def test_forward_shapes(shape, rng):
    sp = MobileSpace(width_mult=0.25)
    torch.manual_seed(0)
    for a in (sp.smallest(), sp.largest(), sp.sample(rng)):
        m = sp.build(a, shape, 7).eval()
        with torch.no_grad():
            out = m(torch.randn(3, *shape))
        assert out.shape == (3, 7) and torch.isfinite(out).all()


def test_structure_follows_the_arch():
    sp = MobileSpace(width_mult=0.5)
    a = sp.parse("k3e3-k5e6|k7e4-k3e3-k3e3|k3e3-k3e3|k3e3-k3e3-k3e3-k3e3")
    m = sp.build(a, (1, 28, 28), 10)
    blocks = [b for stage in m.stages for b in stage]
    assert [len(s) for s in m.stages] == [2, 3, 2, 4]
    assert all(isinstance(b, InvertedResidual) for b in blocks)
    b01 = m.stages[0][1]
    assert b01.dw[0].kernel_size == (5, 5)
    assert b01.dw[0].out_channels == sp.stage_widths[0] * 6 == b01.dw[0].groups
    first = m.stages[1][0]
    assert first.dw[0].stride == (2, 2) and not first.residual  # width changes, strided
    assert all(s[i].residual for s in m.stages for i in range(1, len(s)))
    assert sp.stage_widths == tuple(scale_width(w, 0.5) for w in sp.widths)
    # larger kernels / expansions / depth mean more parameters
    small = count_params(sp.build(sp.smallest(), (1, 28, 28), 10))
    big = count_params(sp.build(sp.largest(), (1, 28, 28), 10))
    mid = count_params(m)
    assert small < mid < big


def test_width_mult_scales_the_network():
    a = MobileSpace(width_mult=0.25)
    b = MobileSpace(width_mult=1.0)
    pa = count_params(a.build(a.largest(), (1, 28, 28), 10))
    pb = count_params(b.build(b.largest(), (1, 28, 28), 10))
    assert pa * 4 < pb
    assert all(w % 4 == 0 for w in a.stage_widths)


def test_export_load_predict_round_trip(tmp_path, rng):
    import nasforge
    from nasforge.data import from_arrays
    from nasforge.export import save_best

    x = rng.integers(0, 256, size=(60, 10, 10), dtype=np.uint8)
    y = np.arange(60) % 3
    data = from_arrays(x, y, seed=0)
    sp = MobileSpace(width_mult=0.25)
    a = sp.sample(rng)
    torch.manual_seed(0)
    model = sp.build(a, data.input_shape, data.num_classes).eval()
    save_best(tmp_path / "best", model, a, sp, data, {"val_accuracy": 0.5}, onnx=False)
    loaded = nasforge.load(tmp_path / "best")
    assert loaded.arch == a and loaded.space.config() == sp.config()
    with torch.no_grad():
        want = model(torch.from_numpy(data.x_test[:5])).softmax(-1).numpy()
    raw = x[:5]  # predict() takes raw images and normalizes them itself
    pred = loaded.predict(raw)
    assert len(pred) == 5
    got = loaded.predict(data.x_test[:5] * data.std[0] + data.mean[0])
    assert np.allclose(got.probabilities, want, atol=1e-5)
