"""Compound scaling (``nasforge scale``): the spaces' depth/width scaling, the phi scan
under a budget, the input resize in model directories, and the command end to end on a
real tiny run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import nasforge
from nasforge import scaling, spaces
from nasforge.cli import main
from nasforge.errors import NasforgeError
from nasforge.metrics import count_flops
from nasforge.objectives import parse_constraints
from nasforge.scaling import Coefficients
from nasforge.spaces.base import scale_channels, scale_repeats
from nasforge.spaces.cnn_net import POOL_TYPES

CNN_ARCH = ("stem16|maxpool|conv-k3-w32-relu-skip|conv-k3-w32-relu|maxpool|conv-k3-w64-relu"
            "|conv-k3-w64-relu|fc128|drop0.1")
DIGITS = (1, 8, 8)


def run(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    cap = capsys.readouterr()
    return (0 if exc.value.code is None else int(exc.value.code)), cap.out, cap.err


def _mobile() -> tuple[spaces.SearchSpace, spaces.Arch]:
    sp = spaces.get("mobile", width_mult=0.5)
    return sp, sp.sample(np.random.default_rng(3))


def _flops(sc: scaling.Scaled, shape=DIGITS) -> int:
    return count_flops(scaling.build(sc, shape, 10), shape)


# ------------------------------------------------------------------- rounding helpers
def test_rounding_is_monotone_and_keeps_phi0():
    for w in (8, 12, 16, 19, 24, 40, 64):
        vals = [scale_channels(w, m) for m in np.linspace(1.0, 3.0, 41)]
        assert vals[0] == w and vals == sorted(vals) and all(v >= w for v in vals)
        assert all(v % 8 == 0 for v in vals[1:])
    for n in (1, 2, 3, 4):
        vals = [scale_repeats(n, m) for m in np.linspace(1.0, 3.0, 41)]
        assert vals[0] == n and vals == sorted(vals) and vals[-1] == round(3 * n)


def test_grid_points_double_the_flops_and_include_the_paper():
    g = scaling.grid()
    assert Coefficients(*scaling.PAPER) in g and len(g) <= 16
    for co in g:
        if co != Coefficients(*scaling.PAPER):
            assert co.flops_factor == pytest.approx(2.0, rel=0.01)
    assert {co.gamma for co in scaling.grid(image=False)} == {1.0}
    assert Coefficients.parse("width").beta == pytest.approx(math.sqrt(2))
    with pytest.raises(NasforgeError):
        Coefficients.parse("1.2,1.1")


# ------------------------------------------------------------------ spaces: depth, width
@pytest.mark.parametrize("which", ["cnn", "mobile"])
def test_flops_grow_monotonically_with_phi(which):
    if which == "cnn":
        sp = spaces.get("cnn")
        arch, shape = sp.parse(CNN_ARCH), DIGITS
    else:
        (sp, arch), shape = _mobile(), (1, 16, 16)
    co = Coefficients(*scaling.PAPER)
    flops = [_flops(scaling.scale_arch(sp, arch, shape, co, phi), shape)
             for phi in (0, 0.5, 1, 1.5, 2, 3)]
    assert flops == sorted(flops), flops
    assert flops[-1] > 3 * flops[0]  # ~2x per unit of phi in theory; rounding lowers it


def test_cnn_scaling_repeats_convs_per_stage_and_widens_to_multiples_of_8():
    sp = spaces.get("cnn")
    arch = sp.parse(CNN_ARCH)
    assert sp.scale(arch, 1.0, 1.0) == (sp, arch)
    sp2, a2 = sp.scale(arch, 2.0, 1.5)
    stages = [[sp2.blocks(a2)[i] for i in st] for st in sp2.stages(a2)]
    convs = [[b for b in st if b.type not in POOL_TYPES] for st in stages]
    assert [len(c) for c in convs] == [4, 4]  # 2 -> 4 convs at 1/2 and at 1/4 resolution
    assert all(b.width % 8 == 0 for c in convs for b in c)
    assert {b.width for b in convs[0]} == {48} and {b.width for b in convs[1]} == {96}
    assert all(b.skip and not b.down for c in convs for b in c[2:])  # the repeats: residual
    assert a2["stem_width"] == 24 and a2["head"] == "fc192"
    assert sp2.parse(a2.text) == a2  # a valid arch of the widened space
    assert spaces.get("cnn", **sp2.config()).parse(a2.text) == a2  # as a model dir rebuilds it


def test_random_cnn_and_mobile_archs_scale_to_buildable_networks():
    rng = np.random.default_rng(0)
    sp = spaces.get("cnn", max_blocks=5)
    cases = [(sp, sp.sample(rng), (1, 12, 12)) for _ in range(4)]
    msp, _ = _mobile()
    cases += [(msp, msp.sample(rng), (3, 16, 16)) for _ in range(2)]
    for space, arch, shape in cases:
        for d, w in ((1.4, 1.0), (1.0, 1.3), (1.7, 1.5)):
            s2, a2 = space.scale(arch, d, w)
            assert s2.parse(a2.text) == a2
            net = s2.build(a2, shape, 7)
            with torch.no_grad():
                assert net(torch.zeros(2, *shape)).shape == (2, 7)


def test_mobile_scaling_deepens_stages_and_widens():
    sp, arch = _mobile()
    sp2, a2 = sp.scale(arch, 1.5, 1.5)
    before, after = sp.stage_config(arch), sp2.stage_config(a2)
    for b, a in zip(before, after, strict=True):
        assert len(a) == scale_repeats(len(b), 1.5) and a[: len(b)] == b
        assert all(blk == b[-1] for blk in a[len(b):])
    assert all(w % 8 == 0 and w >= w0 for w, w0 in
               zip(sp2.stage_widths, sp.stage_widths, strict=True))
    assert sp2.head_channels >= sp.head_channels


def test_spaces_without_the_capability_say_so():
    sp = spaces.get("nb201", C=4, N=1)
    assert not sp.can_scale and spaces.get("cnn").can_scale and spaces.get("mobile").can_scale
    with pytest.raises(NasforgeError, match="does not support compound scaling.*cnn"):
        sp.scale(sp.sample(np.random.default_rng(0)), 1.2, 1.1)


# ------------------------------------------------------------------------- the budget
def test_the_scan_respects_the_budget_and_picks_the_largest_that_fits():
    sp = spaces.get("cnn")
    arch = sp.parse(CNN_ARCH)
    cons = parse_constraints(max_flops="4M", max_params="400k")
    cands = scaling.candidates(sp, arch, DIGITS, 10, Coefficients(*scaling.PAPER), cons,
                               phi_step=0.25, repeats=2)
    chosen = scaling.pick(cands)
    assert cands[0].phi == 0 and cands[0].fits
    assert not cands[-1].fits and cands[-1].metrics["flops"] > 4e6  # the scan went past it
    assert chosen is [c for c in cands if c.fits][-1] and chosen.phi > 0
    for c in cands:
        assert c.fits == (c.metrics["flops"] <= 4e6 and c.metrics["params"] <= 4e5)
        assert c.metrics["latency_ms"] > 0
    assert len({c.key for c in cands}) == len(cands)  # phi steps that round alike: once
    table = scaling.format_table(cands, chosen)
    assert table.count("\n") == len(cands) and "->" in table
    with pytest.raises(NasforgeError, match="too tight"):
        scaling.pick(scaling.candidates(sp, arch, DIGITS, 10, Coefficients(*scaling.PAPER),
                                        parse_constraints(max_flops="1k"), repeats=2))


# -------------------------------------------------------------------- end to end (CLI)
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real one-trial search on digits with final training and export."""
    out = tmp_path_factory.mktemp("scale") / "run"
    with pytest.raises(SystemExit) as exc:
        main(["search", "--dataset", "digits", "--trials", "1", "--epochs", "1",
              "--final-epochs", "1", "--out", str(out), "--no-progress",
              "--estimator-opt", "measure_latency=false"])
    assert exc.value.code in (0, None)
    return out


def test_scale_end_to_end_exports_a_loadable_model(run_dir, tmp_path, capsys):
    code, out, err = run(["scale", run_dir / "best", "--max-flops", "8M", "--max-params",
                          "1M", "--coefficients", "paper", "--time-budget", "2s"], capsys)
    assert code == 0, err
    assert "phi" in out and "->" in out and "Model saved to" in out
    scaled = run_dir / "scaled"
    summary = json.loads((scaled / "summary.json").read_text())
    info = summary["scaling"]
    assert info["phi"] > 0 and summary["metrics"]["flops"] <= 8e6
    assert summary["onnx"]["error"] is None and (scaled / "model.onnx").is_file()
    model = nasforge.load(scaled)
    base = nasforge.load(run_dir / "best")
    assert model.input_shape == base.input_shape == DIGITS  # same inputs as the base model
    doc = json.loads((scaled / "arch.json").read_text())
    assert doc["input_resize"] == info["input_resize"]
    assert model.arch.text == info["candidates"][-2 if not info["candidates"][-1]["fits"]
                                                 else -1]["arch"]
    x = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    assert len(model.predict(x).labels) == 4
    png = tmp_path / "d.png"
    Image.fromarray((x[0] * 255).astype(np.uint8), "L").save(png)
    code, out, err = run(["predict", scaled, png], capsys)
    assert code == 0 and out.startswith(f"{png}: "), err


def test_grid_time_0_means_the_papers_coefficients(run_dir, capsys):
    code, out, err = run(["scale", run_dir / "best", "--max-flops", "8M", "--grid-time", "0",
                          "--dry-run"], capsys)
    assert code == 0, err
    assert "alpha=1.2 beta=1.1 gamma=1.15" in out and "dry run" in out
    assert not (run_dir / "dry").exists()


def test_scale_errors_are_one_line_and_exit_2(run_dir, tmp_path, capsys):
    cases = [
        ([tmp_path / "nope", "--max-flops", "1M"], "no such file"),
        ([run_dir / "best"], "give a budget"),
        ([run_dir / "best", "--max-flops", "10k"], "too tight"),
        ([run_dir / "best", "--max-flops", "8M", "--coefficients", "1,2"], "three numbers"),
        ([run_dir / "best", "--max-flops", "1M", "--out", run_dir / "best"], "being scaled"),
    ]
    for args, msg in cases:
        code, _, err = run(["scale", *args], capsys)
        assert code == 2 and msg in err and "Traceback" not in err, (args, err)
        assert len(err.strip().splitlines()) == 1, err


def test_a_space_that_cannot_scale_exits_2(tmp_path, capsys):
    from nasforge.data import load_dataset
    from nasforge.export import save_best

    data = load_dataset("digits", seed=0)
    sp = spaces.get("nb201", C=4, N=1)
    arch = sp.sample(np.random.default_rng(0))
    net = sp.build(arch, data.input_shape, data.num_classes)
    save_best(tmp_path / "best", net, arch, sp, data, {}, onnx=False)
    code, _, err = run(["scale", tmp_path / "best", "--max-flops", "1M"], capsys)
    assert code == 2 and "does not support compound scaling" in err
    assert len(err.strip().splitlines()) == 1


def test_grid_search_trains_each_point_and_ranks_them(run_dir):
    base = scaling.load_base(run_dir / "best")
    assert base.run_dir == run_dir and base.recipe.get("optimizer") == "sgd"
    pts = [Coefficients(*scaling.PAPER), Coefficients(*scaling.WIDTH_ONLY)]
    rows = scaling.grid_search(base, pts, 0.3)
    assert {r["coefficients"] for r in rows} == set(pts)
    scores = [r["val_accuracy"] for r in rows]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)


def test_a_model_dir_outside_a_run_scales_with_its_data_and_default_recipe(tmp_path):
    """A mobile model directory with no run beside it: the data set named in arch.json."""
    from nasforge.data import load_dataset
    from nasforge.export import save_best

    data = load_dataset("digits", seed=0)
    sp = spaces.get("mobile", width_mult=0.5, depths=[1, 2], stem_stride=1)
    arch = sp.smallest()
    net = sp.build(arch, data.input_shape, data.num_classes)
    save_best(tmp_path / "m" / "best", net, arch, sp, data, {}, onnx=False)
    base = scaling.load_base(tmp_path / "m" / "best")
    assert base.run_dir is None and base.data.name == "digits"
    budget = 3 * count_flops(net, DIGITS)
    res = scaling.scale_model(tmp_path / "m" / "best", max_flops=budget,
                              coefficients="1.2,1.1,1.15", time_budget=1.0,
                              out=tmp_path / "big", onnx=False, repeats=3)
    assert res.out == tmp_path / "big"
    model = nasforge.load(tmp_path / "big")
    summary = json.loads((tmp_path / "big" / "summary.json").read_text())
    assert model.space.name == "mobile" and summary["scaling"]["phi"] > 0
    assert count_flops(net, DIGITS) < summary["metrics"]["flops"] <= budget


@pytest.fixture(scope="module")
def resized_dir(tmp_path_factory):
    """A model directory of a cnn built for 12x12, behind an InputResize from 8x8."""
    from nasforge.data import load_dataset
    from nasforge.export import InputResize, save_best

    data = load_dataset("digits", seed=0)
    sp = spaces.get("cnn")
    arch = sp.parse(CNN_ARCH)
    torch.manual_seed(0)
    net = InputResize(sp.build(arch, (1, 12, 12), 10), (12, 12))
    d = save_best(tmp_path_factory.mktemp("rs") / "best", net, arch, sp, data, {}, onnx=False)
    return d, net


def test_an_input_resize_round_trips_through_the_model_directory(resized_dir):
    d, net = resized_dir
    doc = json.loads((d / "arch.json").read_text())
    assert doc["input_resize"] == [12, 12] and doc["input_shape"] == [1, 8, 8]
    model = nasforge.load(d)
    x = torch.rand(3, 1, 8, 8)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.module(x), net(x))


@pytest.mark.parametrize("bad", [[9], [9, 9.5], "9x9", [0, 9], [100000, 9], [True, 9]])
def test_a_tampered_input_resize_is_refused_on_load(resized_dir, tmp_path, bad):
    import shutil

    from nasforge.errors import RunDirError

    dst = tmp_path / "m"
    shutil.copytree(resized_dir[0], dst)
    doc = json.loads((dst / "arch.json").read_text())
    doc["input_resize"] = bad
    (dst / "arch.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match="input_resize|input_shape"):
        nasforge.load(dst)
