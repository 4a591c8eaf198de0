"""SPOS supernet: exact extraction, BN recalibration, uniform paths, search, run + export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nasforge.data import from_arrays
from nasforge.errors import NasforgeError
from nasforge.oneshot import (
    InheritedWeightsEstimator,
    Supernet,
    path_indices,
    recalibrate_bn,
    run_oneshot,
    spos_search,
    train_supernet,
)
from nasforge.oneshot.supernet import NUM_EDGES, NUM_OPS, batchnorms
from nasforge.spaces.nb201 import OP_NAMES, NB201Space


def _tiny_data(n: int = 120, size: int = 8, classes: int = 3, seed: int = 0):
    """A learnable toy problem: the class sets the mean brightness of one quadrant."""
    rng = np.random.default_rng(seed)
    y = rng.integers(classes, size=n)
    x = rng.normal(0.5, 0.2, size=(n, 1, size, size)).astype(np.float32)
    h = size // 2
    for c in range(classes):
        r, q = divmod(c, 2)
        x[y == c, :, r * h : (r + 1) * h, q * h : (q + 1) * h] += 0.6
    return from_arrays(np.clip(x, 0, 1), y, val_fraction=0.25, test_fraction=0.2, seed=seed)


def _trained_supernet(space: NB201Space, steps: int = 3, seed: int = 0) -> Supernet:
    """A supernet whose weights moved away from init (so a wrong key mapping shows)."""
    torch.manual_seed(seed)
    sn = Supernet(space, (1, 8, 8), 3)
    opt = torch.optim.SGD(sn.parameters(), lr=0.1)
    rng = np.random.default_rng(seed)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    for _ in range(steps):
        loss = F.cross_entropy(sn(x, sn.sample_path(rng)), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return sn


@pytest.mark.parametrize("N", [1, 2])
def test_extracted_subnet_computes_exactly_what_the_supernet_computes(N):
    space = NB201Space(C=4, N=N)
    sn = _trained_supernet(space)
    rng = np.random.default_rng(1)
    x = torch.randn(10, 1, 8, 8)
    calib = [torch.randn(8, 1, 8, 8) for _ in range(2)]
    archs = [space.sample(rng) for _ in range(4)]
    archs.append(space.make(["nor_conv_3x3", "skip_connect", "none", "avg_pool_3x3",
                             "nor_conv_1x1", "nor_conv_3x3"]))  # fmt: skip
    for arch in archs:
        path = path_indices(arch)
        recalibrate_bn(sn, calib, lambda b, p=path: sn(b, p))
        standalone = sn.extract(arch)
        assert type(standalone) is type(space.build(arch, (1, 8, 8), 3))
        sn.eval()
        standalone.eval()
        with torch.no_grad():
            want = sn.subnet_forward(arch, x)
            got = standalone(x)
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-5), arch.text
        sn.train()


def test_extraction_depends_on_the_path():
    """The copy must take each edge's *chosen* op: another path gives another function."""
    space = NB201Space(C=4, N=1)
    sn = _trained_supernet(space)
    a = space.make(["nor_conv_3x3"] * NUM_EDGES)
    b = space.make(["nor_conv_1x1"] * NUM_EDGES)
    sn.eval()
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        ea = sn.extract(a).eval()(x)
        assert torch.allclose(ea, sn(x, a), atol=1e-6)
        assert not torch.allclose(ea, sn(x, b), atol=1e-4)
    # the copied tensors are copies: training the stand-alone net leaves the supernet alone
    before = {k: v.clone() for k, v in sn.state_dict().items()}
    m = sn.extract(a)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in sn.state_dict().items())


def test_bn_recalibration_resets_and_recomputes_running_stats():
    space = NB201Space(C=4, N=1)
    sn = _trained_supernet(space, steps=5)
    stem_bn = sn.net.stem[1]
    mom_before = [m.momentum for m in batchnorms(sn)]
    old_mean = stem_bn.running_mean.clone()
    old_count = int(stem_bn.num_batches_tracked)
    calib = [torch.randn(8, 1, 8, 8) * 3 + 2 for _ in range(3)]
    path = (3,) * NUM_EDGES
    n = recalibrate_bn(sn, calib, lambda b: sn(b, path))
    assert n == 3
    assert int(stem_bn.num_batches_tracked) == 3 != old_count
    assert not torch.allclose(stem_bn.running_mean, old_mean)
    # momentum None = cumulative average: with equal batches it is the mean over all of them
    with torch.no_grad():
        feats = torch.cat([sn.net.stem[0](b) for b in calib])
    assert torch.allclose(stem_bn.running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-5)
    assert [m.momentum for m in batchnorms(sn)] == mom_before
    assert sn.training  # mode restored
    # a BN of an op not on the path was reset and not touched by the forward passes
    off_path = sn.net.cells[0].edges[0][OP_NAMES.index("nor_conv_1x1")].op[2]
    assert int(off_path.num_batches_tracked) == 0


def test_sampled_paths_are_uniform():
    sn = Supernet(NB201Space(C=2, N=1), (1, 8, 8), 2)
    rng = np.random.default_rng(0)
    counts = np.zeros((NUM_EDGES, NUM_OPS))
    for _ in range(5000):
        for e, o in enumerate(sn.sample_path(rng)):
            counts[e, o] += 1
    freq = counts / 5000
    assert np.abs(freq - 1 / NUM_OPS).max() < 0.03


def test_train_supernet_lowers_loss_and_search_scores_subnets():
    data = _tiny_data(n=160)
    space = NB201Space(C=4, N=1)
    torch.manual_seed(0)
    sn = Supernet(space, data.input_shape, data.num_classes)
    hist = train_supernet(sn, data, 6, batch_size=32, lr=0.05, seed=0)
    assert hist["epochs"] == 6 and hist["steps"] > 0
    assert hist["curve"][-1]["train_loss"] < hist["curve"][0]["train_loss"]
    est = InheritedWeightsEstimator(sn, data, calib_batches=2, batch_size=32, seed=0)
    told = []
    out = spos_search(sn, est, strategy="random", num_candidates=5, seed=0,
                      on_tell=lambda s, sug, res, tok: told.append(res))  # fmt: skip
    assert len(out.trials) == 5 == len(told)
    accs = [r.metrics["val_accuracy"] for _, r in out.trials]
    assert all(r.ok for _, r in out.trials) and all(0.0 <= a <= 1.0 for a in accs)
    assert out.best_score == max(accs)
    assert out.best in [a for a, _ in out.trials]
    # scoring recalibrates: a second score of the same arch is reproducible up to the
    # calibration batches drawn, and eval-mode accuracy is a valid fraction
    acc, loss = est.score(out.best)
    assert 0.0 <= acc <= 1.0 and np.isfinite(loss)


def test_bad_inputs_are_user_errors():
    space = NB201Space(C=2, N=1)
    with pytest.raises(NasforgeError, match="too small"):
        Supernet(space, (1, 4, 4), 3)
    sn = Supernet(space, (1, 8, 8), 3)
    with pytest.raises(NasforgeError, match="one op per edge"):
        path_indices([0, 1, 2])
    with pytest.raises(NasforgeError, match="unknown op"):
        sn.extract(["conv_7x7"] * NUM_EDGES)
    with pytest.raises(NasforgeError, match="method"):
        run_oneshot("enas", _tiny_data(), out="/nonexistent/never-created")


def test_run_oneshot_spos_stores_trials_and_exports_a_loadable_model(tmp_path):
    import nasforge
    from nasforge.store import RunStore

    data = _tiny_data(n=160)
    res = run_oneshot("spos", data, out=tmp_path / "run", C=4, N=1, epochs=2, batch_size=32,
                      candidates=4, strategy="random", calib_batches=2, final_epochs=1,
                      onnx=False)  # fmt: skip
    with RunStore.open(tmp_path / "run") as store:
        trials = store.trials()
        meta = store.meta()
    assert len(trials) == 4 and all(t.status == "ok" for t in trials)
    best_trial = max(trials, key=lambda t: t.metrics["val_accuracy"])
    assert res.arch == best_trial.arch
    assert meta["status"] == "finished" and meta["final"]["arch"] == res.arch
    loaded = nasforge.load(tmp_path / "run" / "best")
    assert loaded.arch.text == res.arch
    raw = (
        data.x_test[:4] * np.array(data.std, np.float32)[None, :, None, None]
        + np.array(data.mean, np.float32)[None, :, None, None]
    )
    pred = loaded.predict(raw)
    assert len(pred) == 4
    assert 0.0 <= res.final["test_accuracy"] <= 1.0
    # the shared final step: the same test and cost names as a search's, plus SPOS's own
    for k in ("test_accuracy", "test_accuracy_no_tta", "test_loss", "val_accuracy", "val_loss",
              "params", "flops", "peak_memory_mb", "latency_ms", "epochs", "train_time_s"):
        assert k in res.final and k in meta["final"]["metrics"], k
    summary = json.loads((tmp_path / "run" / "best" / "summary.json").read_text())
    assert summary["metrics"]["test_accuracy"] == res.final["test_accuracy"]
    assert summary["latency"]["batch_1_ms"]["torch"] == res.final["latency_ms"]
    assert not (tmp_path / "run" / ".best-staging").exists()
    # `nasforge resume` does not continue a one-shot run: it points to `oneshot --resume`
    from nasforge.errors import RunDirError

    with pytest.raises(RunDirError, match="cannot be resumed"):
        nasforge.resume(tmp_path / "run")
    with RunStore.open(tmp_path / "run") as store:
        assert len(store.trials()) == 4


@pytest.mark.parametrize("method", ["spos", "darts", "gdas"])
def test_run_oneshot_refuses_a_regression_dataset_up_front(tmp_path, method):
    x = np.random.default_rng(0).random((40, 1, 8, 8)).astype(np.float32)
    data = from_arrays(x, x.mean((1, 2, 3)), seed=0)
    assert data.task == "regression"
    with pytest.raises(NasforgeError, match="classification-only") as e:
        run_oneshot(method, data, out=tmp_path / "run", C=2, epochs=1)
    assert "\n" not in str(e.value) and "regression" in str(e.value)
    assert not (tmp_path / "run").exists()


def test_cli_oneshot_command(tmp_path):
    import typer
    from typer.testing import CliRunner

    from nasforge.oneshot import register_cli

    app = typer.Typer()
    register_cli(app)

    @app.command("other")
    def other() -> None:  # a second command keeps `oneshot` a sub-command
        pass

    out = tmp_path / "cli"
    r = CliRunner().invoke(app, ["oneshot", "--method", "gdas", "--dataset", "digits",
                                 "--max-train", "150", "--out", str(out), "--C", "2",
                                 "--epochs", "1", "--final-epochs", "1", "--no-onnx"])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "best architecture: |" in r.output
    assert (out / "best" / "arch.json").is_file()
    # --resume of a finished run redoes nothing and reports the same architecture
    again = CliRunner().invoke(app, ["oneshot", "--method", "gdas", "--dataset", "digits",
                                     "--max-train", "150", "--out", str(out), "--C", "2",
                                     "--epochs", "1", "--final-epochs", "1", "--no-onnx",
                                     "--resume"])  # fmt: skip
    assert again.exit_code == 0, again.output
    first = [ln for ln in r.output.splitlines() if ln.startswith("best architecture:")]
    assert first and first[0] in again.output
    bad = CliRunner().invoke(app, ["oneshot", "--method", "enas", "--dataset", "digits"])
    assert bad.exit_code != 0 and isinstance(bad.exception, NasforgeError)
