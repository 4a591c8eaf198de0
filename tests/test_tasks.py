"""Tasks, the fourth component: the registry, inference from targets, the data path for
regression, and regression end to end (search, final training, test, export, load,
predict, an ONNX graph in the user's units), plus classification left as it was."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import nasforge
from nasforge import tasks
from nasforge.cli import main
from nasforge.data import from_arrays, load_dataset
from nasforge.errors import DataError, NasforgeError, RunDirError


def _ink_target(x: np.ndarray) -> np.ndarray:
    """Ink in the top half minus ink in the bottom half: a target a CNN can learn from the
    pixels and a constant cannot (its spread is what R^2 measures against)."""
    h = x.shape[1] // 2
    return (x[:, :h].mean((1, 2)) - x[:, h:].mean((1, 2))).astype(np.float32)


@pytest.fixture(scope="module")
def digits_xy() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    return x, _ink_target(x)


# ------------------------------------------------------------------------- registry, infer
def test_registry_lists_the_tasks_with_their_defaults():
    assert tasks.names() == ["classification", "detection", "regression", "segmentation"]
    det = tasks.get("detection")
    assert (det.objective, det.mode) == ("val_map50_95", "max")
    assert tasks.get("classification").objective == "val_accuracy"
    reg = tasks.get("regression")
    assert (reg.objective, reg.mode) == ("val_rmse", "min")


@pytest.mark.parametrize("y, want", [
    (np.arange(40) % 3, "classification"),
    (np.array(["cat", "dog"] * 10), "classification"),
    (np.array([0.0, 1.0] * 20), "classification"),  # class labels stored as floats
    (np.linspace(0, 1, 40), "regression"),
    (np.random.default_rng(0).normal(size=(40, 2)), "regression"),
])  # fmt: skip
def test_infer_reads_the_targets(y, want):
    assert tasks.infer(y) == want


def test_unknown_task_option_names_the_valid_ones():
    with pytest.raises(NasforgeError, match="did you mean 'loss'"):
        tasks.get("regression", los="huber")
    with pytest.raises(NasforgeError, match="loss must be one of mse, huber"):
        tasks.get("regression", loss="l1")


# ------------------------------------------------------------------------------ the data
def test_float_targets_make_a_regression_dataset_with_random_splits(digits_xy):
    x, y = digits_xy
    ds = from_arrays(x, y, seed=0)
    assert ds.task == "regression" and ds.classes == [] and ds.target_names == ["y"]
    assert ds.y_train.dtype == np.float32 and ds.n_outputs == 1
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == len(y)
    # targets stay in the user's units; only the task standardizes them
    assert np.isin(ds.y_test, y).all()
    t = ds.make_task()
    assert t.mean[0] == pytest.approx(float(ds.y_train.mean()), rel=1e-5)
    assert t.encode(ds.y_train).mean().abs() < 1e-5


def test_several_targets_and_their_names(digits_xy):
    x, y = digits_xy
    yy = np.stack([y, 2 * y + 1], axis=1)
    ds = from_arrays(x, yy, target_names=["ink", "ink2"], seed=0, task="regression")
    assert ds.y_train.shape[1] == 2 and ds.n_outputs == 2
    with pytest.raises(DataError, match="2 target names for 1 target"):
        from_arrays(x, y, target_names=["a", "b"])


def test_regression_data_errors_are_one_clear_line(digits_xy):
    x, y = digits_xy
    bad = y.copy()
    bad[3] = np.nan
    with pytest.raises(DataError, match="NaN or infinite targets"):
        from_arrays(x, bad, task="regression")
    with pytest.raises(DataError, match="class names .* are not numbers"):
        from_arrays(x, (y > 0).astype(int), classes=["neg", "pos"], task="regression")
    with pytest.raises(NasforgeError, match="unknown task 'regresion'.*'regression'"):
        from_arrays(x, y, task="regresion")


def test_digits_as_numbers():
    ds = load_dataset("digits", task="regression")
    assert ds.task == "regression"
    assert set(np.unique(ds.y_train)) <= set(range(10))


# ---------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def regression_run(digits_xy, tmp_path_factory):
    x, y = digits_xy
    ds = from_arrays(x, y, seed=0)
    out = tmp_path_factory.mktemp("reg") / "run"
    result = nasforge.search(ds, trials=3, out=out, seed=0, progress=False, final_epochs=12,
                             estimator_options={"epochs": 3, "optimizer": "adamw",
                                                "lr": 2e-3, "measure_latency": False})
    return ds, result


def test_regression_search_beats_a_constant_on_the_test_split(regression_run):
    ds, result = regression_run
    m = result.test_metrics
    assert {"test_rmse", "test_mae", "test_r2"} <= set(m)
    # a constant (the training mean) has R^2 <= 0 on held-out data; the network must
    # explain most of the variance
    assert m["test_r2"] > 0.9, m
    constant_rmse = float(np.sqrt(((ds.y_test - ds.y_train.mean()) ** 2).mean()))
    assert m["test_rmse"] < 0.4 * constant_rmse
    # the search ranked trials by the task's objective
    cfg = json.loads((result.run_dir / "best" / "arch.json").read_text())
    assert cfg["task"]["task"] == "regression" and cfg["classes"] == []
    assert all("val_rmse" in t.metrics for t in result.trials if t.ok)


def test_loaded_regressor_predicts_numbers_in_the_users_units(regression_run, digits_xy):
    ds, result = regression_run
    x, y = digits_xy
    model = nasforge.load(result.run_dir / "best")
    pred = model.predict(x[:200])
    assert pred.values.shape == (200, 1)
    assert isinstance(pred[0], float)
    err = np.sqrt(((pred.values[:, 0] - y[:200]) ** 2).mean())
    assert err < 0.4 * y.std()  # not standardized units: those would be ~1/std off


def test_onnx_graph_answers_like_torch_with_the_destandardization_inside(regression_run,
                                                                         digits_xy):
    import onnxruntime as ort

    ds, result = regression_run
    x, _ = digits_xy
    best = result.run_dir / "best"
    model = nasforge.load(best)
    xin = model.preprocess(x[:64])
    sess = ort.InferenceSession(str(best / "model.onnx"))
    got = sess.run(None, {sess.get_inputs()[0].name: xin})[0]
    with torch.no_grad():
        want = model.module(torch.from_numpy(xin)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(got, model.predict(x[:64]).values, atol=1e-4)
    assert float(np.abs(got).mean()) < 1.0  # the ink targets are small numbers


def test_a_corrupt_task_state_is_a_run_dir_error(regression_run, tmp_path):
    import shutil

    _, result = regression_run
    copy = tmp_path / "best"
    shutil.copytree(result.run_dir / "best", copy)
    doc = json.loads((copy / "arch.json").read_text())
    doc["task"]["std"] = [0.0]
    (copy / "arch.json").write_text(json.dumps(doc))
    with pytest.raises(RunDirError, match="std"):
        nasforge.load(copy)


def test_classification_is_still_the_default_and_records_its_task(tmp_path):
    ds = load_dataset("digits")
    assert ds.task == "classification" and ds.n_outputs == 10
    r = nasforge.search(ds, trials=1, out=tmp_path / "c", progress=False, final_epochs=1,
                        estimator_options={"epochs": 1, "measure_latency": False})
    assert "test_accuracy" in r.test_metrics
    doc = json.loads((r.run_dir / "best" / "arch.json").read_text())
    assert doc["task"] == {"task": "classification"}
    pred = nasforge.load(r.run_dir / "best").predict(ds.x_test[:4, 0] * 0 + 0.5)
    assert len(pred.labels) == 4


def test_a_task_that_contradicts_the_dataset_is_refused(digits_xy):
    x, y = digits_xy
    with pytest.raises(NasforgeError, match="regression data set"):
        nasforge.search(from_arrays(x, y), task="classification", trials=1)


# --------------------------------------------------------------------------------- CLI
def _cli(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    cap = capsys.readouterr()
    return int(exc.value.code or 0), cap.out, cap.err


def test_cli_lists_tasks(capsys):
    code, out, _ = _cli(["tasks"], capsys)
    assert code == 0
    assert [ln.split()[0] for ln in out.splitlines()] == ["classification", "detection",
                                                          "regression", "segmentation"]


def test_cli_unknown_task_is_one_line_and_exit_2(capsys, tmp_path):
    code, out, err = _cli(["search", "--dataset", "digits", "--task", "regresion",
                           "--trials", "1", "--out", tmp_path / "r"], capsys)
    assert code == 2
    assert "unknown task 'regresion'" in err and "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


def test_cli_regression_search_and_predict(capsys, tmp_path):
    out_dir = tmp_path / "r"
    code, out, err = _cli(["search", "--dataset", "digits", "--task", "regression",
                           "--trials", "1", "--epochs", "1", "--final-epochs", "2",
                           "--no-progress", "--out", out_dir], capsys)
    assert code == 0, err
    assert "test_rmse" in out and ".values" in out
    from sklearn.datasets import load_digits

    imgs = (load_digits().images[:2] * 15).astype(np.uint8)
    np.save(tmp_path / "two.npy", imgs)
    code, out, err = _cli(["predict", out_dir / "best", tmp_path / "two.npy", "--json"],
                          capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 2 and all(isinstance(r["y"], float) for r in rows)


def test_early_stopping_watches_the_tasks_metric(digits_xy):
    from nasforge import estimators, spaces

    x, y = digits_xy
    ds = from_arrays(x, y, seed=0)
    est = estimators.get("train", epochs=2, early_stopping=True, measure_latency=False)
    sp = spaces.get("cnn")
    res = est.evaluate(sp.known_good()[0], sp, ds)
    assert res.ok, res.error
    assert (est.stopper.metric, est.stopper.mode) == ("val_rmse", "min")
    assert any(k.startswith("curve_val_rmse") or "val_rmse" in k for k in res.report)
