"""The darts-space weight-sharing supernet: a path's extracted stand-alone network computes
what the supernet computes, sampling (uniform, strictly fair), training, scoring, errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from nasforge.data import Dataset
from nasforge.errors import NasforgeError
from nasforge.oneshot import InheritedWeightsEstimator, spos_search
from nasforge.oneshot.darts_space import DartsSpaceSupernet, train_darts_supernet
from nasforge.oneshot.supernet import recalibrate_bn
from nasforge.spaces.darts import DARTS_OPS, DartsSpace, Genotype
from nasforge.spaces.nb201 import NB201Space

SHAPE = (1, 8, 8)


def _space(**kw) -> DartsSpace:
    return DartsSpace(C=4, layers=3, **kw)  # cells: normal, reduce, reduce


def _supernet(seed: int = 0, **kw) -> DartsSpaceSupernet:
    torch.manual_seed(seed)
    return DartsSpaceSupernet(_space(**kw), SHAPE, 10)


def _shake_bn(sn: DartsSpaceSupernet, x: torch.Tensor) -> None:
    """Give every BN non-default running statistics and affine parameters, so that a
    wrongly copied buffer or weight shows in the outputs."""
    rng = np.random.default_rng(5)
    sn.train()
    with torch.no_grad():
        for _ in range(4):
            sn(x, sn.sample_path(rng))
        for m in sn.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    sn.eval()


def _tiny_data(n: int = 96, seed: int = 0) -> Dataset:
    """Ten separable classes of 8x8 images (class k: a bright row k % 8, a sign)."""
    rng = np.random.default_rng(seed)

    def make(m: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(10, size=m)
        x = rng.normal(0, 0.3, size=(m, *SHAPE)).astype(np.float32)
        for i, c in enumerate(y):
            x[i, 0, c % 8, :] += 2.0 if c < 8 else -2.0
        return x, y.astype(np.int64)

    xt, yt = make(n)
    xv, yv = make(48)
    xs, ys = make(48)
    return Dataset("tiny", xt, yt, xv, yv, xs, ys, classes=[str(i) for i in range(10)])


def test_extracted_network_computes_what_the_supernet_computes_on_its_path():
    sn = _supernet()
    x = torch.randn(5, *SHAPE)
    _shake_bn(sn, x)
    rng = np.random.default_rng(0)
    paths = [sn.sample_path(rng) for _ in range(4)]
    # a node reading the same input with the same op twice (the module runs twice), and a
    # reduction cell reading both cell inputs (stride 2) with parametric ops
    twice = tuple((i, o) for i, o in ((0, 3), (0, 3), (1, 5), (2, 0), (3, 4), (1, 6),
                                       (0, 2), (4, 1)))
    red = ((0, 2), (1, 2), (1, 4), (2, 6), (0, 3), (3, 3), (4, 5), (2, 1))
    paths.append((twice, red))
    space = sn.space
    for p in paths:
        model = sn.extract(p).eval()
        assert not model.training
        with torch.no_grad():
            torch.testing.assert_close(model(x), sn(x, p), atol=1e-5, rtol=1e-5)
        built = space.build(sn.arch_of(p), SHAPE, 10)
        assert sum(q.numel() for q in model.parameters()) == \
            sum(q.numel() for q in built.parameters())
        assert set(model.state_dict()) == set(built.state_dict())
    # an Arch and its string name the same path as its genotype
    a = space.sample(np.random.default_rng(3))
    with torch.no_grad():
        torch.testing.assert_close(sn.extract(a).eval()(x), sn(x, a.text), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sn(x, space.genotype(a)), sn(x, a))


def test_every_cell_has_its_own_weights_and_every_input_all_ops():
    sn = _supernet()
    cell = sn.cells[0]
    assert [len(node) for node in cell.edges] == [2, 3, 4, 5]  # inputs 0 .. k + 1
    assert all(len(ops) == len(DARTS_OPS) for node in cell.edges for ops in node)
    assert sn.cells[1].edges[0][0][3] is not sn.cells[2].edges[0][0][3]
    assert [c.reduction for c in sn.cells] == [False, True, True]


def test_uniform_paths_follow_the_space_sampling():
    sn = _supernet()
    rng = np.random.default_rng(0)
    inputs, ops = Counter(), Counter()
    for _ in range(700):
        for cell in sn.sample_path(rng):
            inputs.update(i for i, _ in cell[6:])  # node 3: inputs 0..4
            ops.update(o for _, o in cell)
    assert set(inputs) == set(range(5)) and min(inputs.values()) > 0.7 * 280
    assert set(ops) == set(range(7)) and min(ops.values()) > 0.8 * 1600


def test_strict_fairness_uses_every_op_of_every_slot_once_per_round():
    sn = _supernet()
    rng = np.random.default_rng(1)
    for _ in range(3):
        paths = sn.fair_paths(rng)
        assert len(paths) == len(DARTS_OPS)
        for c in range(2):
            for e in range(2 * sn.nodes):
                assert sorted(p[c][e][1] for p in paths) == list(range(len(DARTS_OPS)))
                assert all(0 <= p[c][e][0] < e // 2 + 2 for p in paths)
    # inputs are drawn, not permuted: across rounds node 3 reads every input
    seen = {p[0][6][0] for _ in range(30) for p in sn.fair_paths(rng)}
    assert seen == set(range(5))


@pytest.mark.parametrize("sampling", ["uniform", "fair"])
def test_short_training_lowers_the_loss_and_inherited_scoring_works(sampling):
    data = _tiny_data()
    sn = _supernet()
    hist = train_darts_supernet(sn, data, 6 if sampling == "uniform" else 2, sampling=sampling,
                                seed=0, lr=0.05, batch_size=32)
    losses = [r["train_loss"] for r in hist["curve"]]
    assert hist["steps"] == (6 if sampling == "uniform" else 2) * 3
    assert losses[-1] < losses[0]
    est = InheritedWeightsEstimator(sn, data, calib_batches=2, batch_size=32, seed=0)
    arch = sn.space.sample(np.random.default_rng(2))
    acc, loss = est.score(arch)
    assert 0.0 <= acc <= 1.0 and np.isfinite(loss)
    # recalibrated in the supernet, the extracted copy scores the same
    est.recalibrate(arch)
    sn.eval()
    x = torch.as_tensor(data.x_val)
    with torch.no_grad():
        torch.testing.assert_close(sn.extract(arch).eval()(x), sn(x, arch), atol=1e-5, rtol=1e-5)
    found = spos_search(sn, est, strategy="random", num_candidates=3, seed=0)
    assert found.best.space == "darts" and len(found.trials) == 3


@pytest.mark.parametrize("sampling", ["uniform", "fair"])
def test_a_time_budget_sets_the_epochs_and_is_kept(sampling):
    data = _tiny_data()
    sn = _supernet()
    hist = train_darts_supernet(sn, data, seconds=4.0, seed=0, batch_size=32,
                                sampling=sampling)
    assert hist["epochs"] >= 1 and hist["train_time_s"] < 4.0 + 1.0
    assert hist["train_time_s"] > 4.0 * 0.5  # and used: not rounded down to fewer epochs


def test_max_steps_spreads_the_schedule_over_the_steps_it_allows():
    data = _tiny_data(n=320)  # 10 steps of 32 per epoch
    sn = _supernet()
    hist = train_darts_supernet(sn, data, 2, seed=0, batch_size=32, max_steps=7)
    assert hist["steps"] == 7 and hist["epochs"] == 1 and not hist["stopped_early"]
    with pytest.raises(NasforgeError, match="max_steps"):
        train_darts_supernet(sn, data, 1, max_steps=0)


def test_a_budget_under_one_fair_epoch_ends_its_schedule_in_time(monkeypatch):
    """FairNAS epochs cost len(ops) paths per step: when even one does not fit the
    budget, the schedule spans the steps that do, so training is not cut off at a high
    learning rate (it used to stop at the deadline with most of the cosine left)."""
    import nasforge.oneshot.darts_space as ds

    monkeypatch.setattr(ds, "_probe_step", lambda *a, **k: 0.5)  # 0.5 s a step
    seen: dict = {}

    def fake_train(supernet, data, epochs, **kw):  # what train_supernet is asked to do
        seen.update(kw, epochs=epochs)
        return {"epochs": 1, "steps": kw.get("max_steps"), "curve": [], "stopped_early": False}

    monkeypatch.setattr("nasforge.oneshot.spos.train_supernet", fake_train)
    train_darts_supernet(_supernet(), _tiny_data(n=640), seconds=5.0, sampling="fair",
                         batch_size=32)  # 20 steps an epoch, about 9-10 fit
    assert seen["epochs"] == 1 and 8 <= seen["max_steps"] <= 10
    seen.clear()
    train_darts_supernet(_supernet(), _tiny_data(n=64), seconds=5.0, batch_size=32)
    # 2 steps an epoch: 9-10 steps over 5 epochs, the last one partial or whole
    assert 8 <= seen["max_steps"] <= 10 and seen["epochs"] == -(-seen["max_steps"] // 2)


def test_no_batch_norm_batch_of_one():
    data = _tiny_data(n=33)  # 33 = 32 + 1: the last example is left out
    sn = _supernet()
    hist = train_darts_supernet(sn, data, 1, seed=0, batch_size=32)
    assert hist["steps"] == 1


def test_recalibrate_bn_is_generic():
    sn = _supernet()
    x = torch.randn(8, *SHAPE)
    p = sn.sample_path(np.random.default_rng(0))
    assert recalibrate_bn(sn, [x, x], lambda xb: sn(xb, p)) == 2
    assert sn.cells[0].preprocess1[2].num_batches_tracked.item() == 2


def test_clear_errors():
    sn = _supernet()
    x = torch.randn(2, *SHAPE)
    with pytest.raises(NasforgeError, match="darts space"):
        DartsSpaceSupernet(NB201Space(C=4, N=1), SHAPE, 10)
    with pytest.raises(NasforgeError, match="loose"):
        DartsSpaceSupernet(DartsSpace(C=4, layers=3, concat="loose"), SHAPE, 10)
    with pytest.raises(NasforgeError, match="input_shape"):
        DartsSpaceSupernet(_space(), (8, 8), 10)
    with pytest.raises(NasforgeError, match="num_classes"):
        DartsSpaceSupernet(_space(), SHAPE, 0)
    nb = NB201Space(C=4, N=1)
    with pytest.raises(NasforgeError, match="darts architecture"):
        sn(x, nb.sample(np.random.default_rng(0)))
    other = DartsSpace(C=4, layers=3, nodes=3)
    with pytest.raises(NasforgeError, match="nodes"):
        sn(x, other.sample(np.random.default_rng(0)))
    nasnet = DartsSpace(C=4, layers=3, ops="nasnet")
    g = Genotype((("sep_conv_7x7", 0),) * 8, (("skip_connect", 0),) * 8)
    with pytest.raises(NasforgeError, match="unknown op"):
        sn(x, g)
    assert nasnet.op_names[-1] == "conv_7x1_1x7"
    bad = list(map(list, sn.sample_path(np.random.default_rng(0))))
    bad[0][0] = (2, 0)  # node 0 cannot read node 0
    with pytest.raises(NasforgeError, match="inputs 0-1"):
        sn(x, tuple(map(tuple, bad)))
    with pytest.raises(NasforgeError, match="epochs and seconds"):
        train_darts_supernet(sn, _tiny_data(), 1, seconds=3)
    with pytest.raises(NasforgeError, match="sampling"):
        train_darts_supernet(sn, _tiny_data(), 1, sampling="greedy")
    with pytest.raises(NasforgeError, match="DartsSpaceSupernet"):
        train_darts_supernet(torch.nn.Linear(2, 2), _tiny_data(), 1)  # type: ignore[arg-type]
