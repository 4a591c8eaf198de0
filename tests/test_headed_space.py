"""The ``with-head`` space: a backbone space plus the neck/head choices of detection and
the decoder choices of segmentation, searched, stored and rebuilt like any space."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nasforge import spaces, tasks
from nasforge.errors import ArchParseError, NasforgeError
from nasforge.spaces.headed import WithHead, with_task_choices
from nasforge.tasks import detection as D
from nasforge.tasks.segmentation import DECODER_CHOICES

SHAPE = (1, 64, 64)


@pytest.fixture(scope="module")
def det() -> D.Detection:
    return tasks.get("detection", n_classes=3)


@pytest.fixture(scope="module")
def space(det) -> WithHead:
    sp = with_task_choices(spaces.get("cnn", max_blocks=6, widths=[16, 32, 64],
                                      stem_widths=[16]), det)
    assert isinstance(sp, WithHead)
    return sp


def _params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_the_head_choices_follow_the_backbone_and_round_trip(space):
    names = [c.name for c in space.choices()]
    assert names[-len(D.HEAD_CHOICES):] == list(D.HEAD_CHOICES)
    assert space.label == "cnn+detection" and space.name == "with-head"
    rng = np.random.default_rng(0)
    for _ in range(30):
        a = space.sample(rng)
        assert space.parse(a.text) == a and space.from_json(space.to_json(a)) == a
        assert space.backbone_arch(a).space == "cnn"
        assert len(space.encode(a)) == space.encoding_size


def test_a_stored_config_rebuilds_the_same_space(space):
    cfg = json.loads(json.dumps(space.config(), sort_keys=True))  # as the run store keeps it
    again = spaces.get("with-head", **cfg)
    rng = np.random.default_rng(1)
    for _ in range(10):
        a = space.sample(rng)
        assert again.parse(a.text) == again.make(a.as_dict())
        assert again.parse(a.text).text == a.text


def test_known_good_designs_get_the_default_head_and_the_classifier_head_is_inactive(space):
    base = space.backbone
    kg = space.known_good()
    assert kg and len(kg) <= len(base.known_good())
    first = {k: v[0] for k, v in D.HEAD_CHOICES.items()}
    assert all(space.head_values(a) == first for a in kg)
    # the cnn's classifier head and its dropout are dropped by build_backbone: not searched
    rng = np.random.default_rng(2)
    for _ in range(50):
        a = space.sample(rng)
        assert a["head"] == "gap" and a["dropout"] == 0.0
        m = space.mutate(a, rng)
        assert m != a and m["head"] == "gap"
    assert all(n["head"] == "gap" for n in space.neighbors(kg[0]))


def test_the_default_head_is_the_hand_design_of_the_plain_space(space, det):
    """An old model directory (plain cnn space, no head choices) builds the same network
    as the wrapped space's known-good design: same parameter names and shapes."""
    a = space.known_good()[0]
    plain = space.backbone_arch(a)
    fixed = tasks.get("detection", n_classes=3, search_head=False)
    torch.manual_seed(0)
    old = fixed.build_network(space.backbone, plain, SHAPE)
    new = det.build_network(space, a, SHAPE)
    assert {k: v.shape for k, v in old.state_dict().items()} == \
        {k: v.shape for k, v in new.state_dict().items()}


@pytest.mark.parametrize("name", list(D.HEAD_CHOICES))
def test_every_option_of_every_head_choice_builds_and_trains(space, det, name):
    """Each option changes the network (params or anchors) and a training step runs."""
    base = space.known_good()[0]
    x = torch.rand(2, *SHAPE)
    y = torch.tensor([[[0, 0.1, 0.1, 0.5, 0.6], [2, 0.5, 0.4, 0.9, 0.9]]] * 2)
    seen = set()
    for opt in D.HEAD_CHOICES[name]:
        a = space.make({**base.as_dict(), name: opt})
        torch.manual_seed(0)
        net = det.build_network(space, a, SHAPE)
        out = net(x)
        assert out.shape[0] == 2 and out.shape[-1] == det.raw_width()
        assert torch.all(out[0, :, -2:] == 64)  # boxes in the input's pixels, resized or not
        loss = det.loss()(out, y)
        loss.backward()
        assert torch.isfinite(loss)
        seen.add((_params(net), out.shape[1]))
    assert len(seen) == len(D.HEAD_CHOICES[name]), f"{name}: options build the same network"


def test_head_options_move_params_and_anchors_the_expected_way(space, det):
    base = space.known_good()[0].as_dict()

    def net(**kw):
        return det.build_network(space, space.make({**base, **kw}), SHAPE)

    def anchors(**kw):
        return net(**kw).eval()(torch.zeros(1, *SHAPE)).shape[1]

    assert _params(net(neck="pan")) > _params(net(neck="fpn"))
    assert _params(net(neck_block="dw")) < _params(net(neck_block="conv"))
    assert _params(net(head_tower="shared")) < _params(net(head_tower="decoupled"))
    assert _params(net(head_width=32)) < _params(net(head_width=96))
    assert anchors(resolution=0.5) < anchors(resolution=0.75) < anchors(resolution=1.0)
    # levels: strides 8, 16, 32 on 64 px -> 64 + 16 + 4 anchors; two levels: 64 + 16
    assert anchors(n_levels=3) == 8 * 8 + 4 * 4 + 2 * 2
    assert anchors(n_levels=2) == 8 * 8 + 4 * 4


def test_a_fixed_option_is_a_one_option_choice_and_bad_options_say_so(space):
    t = tasks.get("detection", n_classes=3, neck="pan", resolution=0.75)
    cs = {c.name: c.options for c in t.arch_choices()}
    assert cs["neck"] == ("pan",) and cs["resolution"] == (0.75,)
    assert cs["neck_width"] == D.HEAD_CHOICES["neck_width"]
    assert tasks.get("detection", search_head=False).arch_choices() == ()
    plain = spaces.get("cnn")
    assert with_task_choices(plain, tasks.get("detection", search_head=False)) is plain
    assert with_task_choices(plain, tasks.get("classification")) is plain
    for bad in ({"neck": "bifpn"}, {"neck_width": 3}, {"resolution": 9}, {"head_depth": 1.5},
                {"search_head": "yes"}):
        with pytest.raises(NasforgeError) as e:
            tasks.get("detection", **bad)
        assert "\n" not in str(e.value) and next(iter(bad)) in str(e.value)
    with pytest.raises(ArchParseError, match="neck_width"):
        space.parse(space.known_good()[0].text.replace("neck_width=64", "neck_width=65"))
    with pytest.raises(NasforgeError, match="clashes"):
        WithHead("cnn", "detection", [["head", ["a", "b"]]])


def test_old_task_state_keeps_its_head_width():
    t = D.Detection.from_state({"task": "detection", "n_classes": 2, "fpn_width": 96,
                                "fpn_depth": 2, "head_depth": 3, "n_levels": 3})
    cfg = t.head_config()
    assert cfg["neck_width"] == 96 and cfg["head_width"] == 96 and cfg["neck_depth"] == 2
    assert D.Detection.from_state(t.state()).head_config() == cfg


def test_segmentation_searches_its_decoder(space):
    seg = tasks.get("segmentation", n_classes=3)
    sp = with_task_choices(space.backbone, seg)
    assert [c.name for c in sp.head_choices()] == list(DECODER_CHOICES)
    base = sp.known_good()[0].as_dict()
    sizes = set()
    for w in DECODER_CHOICES["decoder_width"]:
        for r in DECODER_CHOICES["resolution"]:
            net = seg.build_network(sp, sp.make({**base, "decoder_width": w, "resolution": r}),
                                    SHAPE)
            out = net(torch.zeros(2, *SHAPE))
            assert out.shape == (2, 3, 64, 64)  # at the input's size whatever the resize
            sizes.add(_params(net))
    assert len(sizes) == len(DECODER_CHOICES["decoder_width"])
    fixed = tasks.get("segmentation", decoder_width=16)
    assert {c.name: c.options for c in fixed.arch_choices()}["decoder_width"] == (16,)


def test_a_search_stores_the_wrapped_space_and_exports_a_searched_head(tmp_path):
    """The run searches the head and the model directory rebuilds it (load, ONNX)."""
    import onnxruntime as ort

    import nasforge
    from nasforge.data.scenes import make_scenes
    from nasforge.store import RunStore

    data = make_scenes(tmp_path / "scenes", n_images=16, seed=1, size=48, min_px=12,
                       max_px=24, max_objects=2, fashion=False)
    res = nasforge.search(str(data), task="detection", trials=3, final_epochs=1,
                          estimator_options={"epochs": 1}, out=tmp_path / "r",
                          progress=False, strategy="random",
                          dataset_options={"task_options": {"neck": "pan",
                                                            "resolution": 0.75}},
                          space_options={"max_blocks": 3, "widths": [16, 32],
                                         "stem_widths": [16]})
    with RunStore.open(tmp_path / "r") as store:
        assert store.config["space"]["name"] == "with-head"
        archs = [t.arch for t in store.trials()]
        space_spec = store.config["space"]
    assert archs and all(" + neck=pan;" in str(a) and "resolution=0.75" in str(a)
                         for a in archs)
    from nasforge.cli._show import _space_label

    assert _space_label(space_spec) == "cnn+detection"
    assert _space_label({"name": "with-head", "options": {"bad": 1}}) == "with-head"
    model = nasforge.load(res.model_dir)
    assert model.module is not None
    x = np.random.default_rng(0).random((1, *model.input_shape), dtype=np.float32)
    with torch.no_grad():
        want = model.module(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(res.model_dir / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert np.allclose(got, want, atol=1e-4)


def child_detection_search(data: str, out: str) -> None:
    """Run in a subprocess by the kill test: a small detection search."""
    import nasforge

    nasforge.search(data, task="detection", trials=5, final_epochs=1, strategy="random",
                    estimator_options={"epochs": 1}, out=out, progress=False,
                    space_options={"max_blocks": 3, "widths": [16, 32], "stem_widths": [16]})


@pytest.mark.slow
def test_a_detection_search_killed_with_sigkill_resumes_with_its_head_choices(tmp_path):
    """kill -9 mid-search, then resume: the stored with-head space is rebuilt from its
    config, no finished trial is lost or redone, and the run ends with its model."""
    import sys
    from pathlib import Path

    from helpers import assert_kept, sigkill_after_trials, stored_after_kill

    from nasforge.data.scenes import make_scenes
    from nasforge.run.api import resume

    data = make_scenes(tmp_path / "scenes", n_images=16, seed=2, size=48, min_px=12,
                       max_px=24, max_objects=2, fashion=False)
    out = tmp_path / "run"
    here = str(Path(__file__).resolve().parent)
    code = (f"import sys; sys.path.insert(0, {here!r}); import test_headed_space as t; "
            f"t.child_detection_search({str(data)!r}, {str(out)!r})")
    assert sys.executable
    sigkill_after_trials(code, out, 2, poll=0.05)
    before, _running = stored_after_kill(out)
    assert 2 <= len(before) < 5
    res = resume(out, progress=False)
    done = [t for t in res.trials if t.done]
    assert len(done) == 5 and len({t.id for t in done}) == 5
    assert_kept(before, {t.id: t for t in done})
    assert all(" + neck=" in str(t.arch) for t in done)
    assert res.model_dir is not None and (res.model_dir / "model.onnx").is_file()


def test_the_onnx_check_is_relative_for_large_outputs(space, det, tmp_path):
    """ORT's kernels add in another order than torch's: outputs in the thousands (a
    detector's box corners are pixels) differ by more than 1e-4 absolutely, which the
    export check accepts relative to their size; a resized PAN detector exports."""
    from nasforge.export.to_onnx import export_onnx

    class Big(torch.nn.Module):  # a resize and a conv, then pixel-sized outputs
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)

        def forward(self, x):
            x = torch.nn.functional.interpolate(x, size=(37, 37), mode="bilinear")
            return self.conv(x).flatten(1) * 1e5

    torch.manual_seed(0)
    export_onnx(Big().eval(), SHAPE, tmp_path / "big.onnx")
    a = space.make({**space.known_good()[0].as_dict(), "resolution": 0.75, "neck": "pan"})
    net = det.serve(det.build_network(space, a, SHAPE)).eval()
    export_onnx(net, SHAPE, tmp_path / "m.onnx")
    assert (tmp_path / "big.onnx").is_file() and (tmp_path / "m.onnx").is_file()


@pytest.mark.parametrize("name", sorted(__import__("nasforge").strategies.registry.names()))
def test_every_strategy_searches_the_head_choices(space, name):
    """Each registered strategy asks and is told on the wrapped space with no change:
    its suggestions are archs of that space and the head choices vary."""
    from nasforge import strategies
    from nasforge.estimators.base import Result

    try:
        st = strategies.get(name, space=space, seed=0, metric="val_map50_95", mode="max")
    except NasforgeError:
        st = strategies.get(name, space=space, seed=0)
    rng = np.random.default_rng(0)
    heads = set()
    for _ in range(25):
        s = st.ask()
        if s is None:
            break
        assert space.parse(s.arch.text) == s.arch
        heads.add(tuple(space.head_values(s.arch).items()))
        st.tell(s, Result(metrics={"val_map50_95": float(rng.random()),
                                   "val_accuracy": float(rng.random()), "params": 1e3,
                                   "latency_ms": 1.0}, cost=1.0))
    assert len(heads) >= 2, f"{name} never changed the head"
