"""FairNAS strict-fair path sampling and few-shot sub-supernets (split on one edge)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nasforge.errors import NasforgeError
from nasforge.oneshot import InheritedWeightsEstimator, Supernet, run_oneshot, train_supernet
from nasforge.oneshot.fewshot import FewShotSupernet, split_supernet, train_fewshot
from nasforge.oneshot.supernet import NUM_EDGES, NUM_OPS, path_to_arch
from nasforge.spaces.nb201 import NB201Space
from tests.test_spos import _tiny_data


def test_fair_paths_use_every_op_of_every_edge_exactly_once():
    sn = Supernet(NB201Space(C=4, N=1), (1, 8, 8), 3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        paths = sn.fair_paths(rng)
        assert len(paths) == NUM_OPS
        for e in range(NUM_EDGES):
            assert sorted(p[e] for p in paths) == list(range(NUM_OPS))
    fixed = sn.fair_paths(rng, {2: 3})
    assert all(p[2] == 3 for p in fixed)
    assert all(sn.sample_path(rng, {0: 1})[0] == 1 for _ in range(20))


def test_fair_training_moves_every_op_and_uniform_can_miss_some():
    """One fair step updates the weights of every op on every edge (all paths' gradients
    are summed); one uniform step touches one op per edge."""
    data = _tiny_data()
    space = NB201Space(C=4, N=1)

    def changed(sampling: str) -> tuple[int, int]:
        torch.manual_seed(0)
        sn = Supernet(space, data.input_shape, data.num_classes)
        before = {k: v.clone() for k, v in sn.state_dict().items()
                  if ".edges." in k and v.dtype.is_floating_point}
        train_supernet(sn, data, 1, batch_size=len(data.y_train), sampling=sampling)
        after = sn.state_dict()
        op = lambda k: tuple(k.split(".")[1:6])  # noqa: E731 - (cells, i, edges, e, op)
        moved = {op(k) for k, v in before.items() if not torch.equal(v, after[k])}
        return len(moved), len({op(k) for k in before})

    moved, weighted = changed("fair")
    assert weighted == 2 * NUM_EDGES * 3  # 1x1 and 3x3 conv on each edge of 3 cells
    assert moved == weighted  # one fair step trains every weighted op
    assert changed("uniform")[0] <= NUM_EDGES * 3  # one op per edge at most
    with pytest.raises(NasforgeError, match="sampling"):
        train_supernet(Supernet(space, data.input_shape, data.num_classes), data, 1,
                       sampling="greedy")


def test_fewshot_split_dispatches_on_the_edge_and_trains_parts_apart():
    data = _tiny_data()
    space = NB201Space(C=4, N=1)
    torch.manual_seed(0)
    sn = Supernet(space, data.input_shape, data.num_classes)
    train_supernet(sn, data, 1, batch_size=32)
    fs = split_supernet(sn, edge=0)
    x = torch.as_tensor(data.x_val[:4])
    path = (2, 1, 3, 0, 4, 1)
    fs.eval()
    sn.eval()
    # freshly split: every part is the one-shot supernet
    assert torch.allclose(fs(x, path), sn(x, path))
    hist = train_fewshot(fs, train_supernet, data=data, epochs=1, batch_size=32, seed=0)
    assert len(hist) == NUM_OPS
    # part 2 trained only paths with op 2 on edge 0: its other ops on edge 0 did not move
    p2 = fs.parts[2].state_dict()
    base = sn.state_dict()
    k_other = next(k for k in p2 if k.startswith("net.cells.") and ".edges.0.3." in k
                   and p2[k].dtype.is_floating_point)
    k_own = next(k for k in p2 if k.startswith("net.cells.") and ".edges.0.2." in k
                 and p2[k].dtype.is_floating_point)
    assert torch.equal(p2[k_other], base[k_other])
    assert not torch.equal(p2[k_own], base[k_own])
    fs.eval()
    assert torch.allclose(fs(x, path), fs.parts[2](x, path))
    est = InheritedWeightsEstimator(fs, data, calib_batches=2, batch_size=16)
    acc, loss = est.score(path_to_arch(space, path))
    assert 0.0 <= acc <= 1.0 and np.isfinite(loss)
    with pytest.raises(NasforgeError, match="edge"):
        FewShotSupernet(list(fs.parts), edge=NUM_EDGES)


def test_run_oneshot_fair_sampling_is_stored_and_bad_values_refused(tmp_path):
    from nasforge.store import RunStore

    data = _tiny_data()
    res = run_oneshot("spos", data, out=tmp_path / "run", C=4, N=1, epochs=1, candidates=3,
                      batch_size=32, sampling="fair", final_epochs=1, onnx=False)
    assert res.arch
    with RunStore.open(tmp_path / "run") as store:
        assert "fair" in json.dumps(store.meta())
    with pytest.raises(NasforgeError, match="sampling"):
        run_oneshot("spos", data, out=tmp_path / "bad", C=4, N=1, epochs=1, sampling="greedy")
