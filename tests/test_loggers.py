"""``--log-to tensorboard`` / ``mlflow``: the written event files and MLflow store are read
back with the tools' own readers (one real, tiny search feeds both)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nasforge.errors import NasforgeError
from nasforge.loggers import make


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("tensorboard", reason="needs nasforge[tensorboard]")
    pytest.importorskip("mlflow", reason="needs nasforge[mlflow]")
    import nasforge

    out = tmp_path_factory.mktemp("logged") / "run"
    cbs = [make("tensorboard", out), make("mlflow", out)]
    res = nasforge.search("digits", space="cnn", strategy="random", trials=3, out=out,
                          estimator_options={"epochs": 1, "data_fraction": 0.2},
                          final_epochs=1, progress=False, callbacks=cbs)
    return out, res


@pytest.mark.slow
def test_tensorboard_event_files(logged) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, res = logged
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert "trial/val_accuracy" in tags and "search/best_val_accuracy" in tags
    vals = {e.step: e.value for e in acc.Scalars("trial/val_accuracy")}
    stored = {t.id: t.metrics["val_accuracy"] for t in res.trials if t.ok}
    assert vals.keys() == stored.keys()
    assert all(vals[k] == pytest.approx(v, abs=1e-6) for k, v in stored.items())
    best = [e.value for e in acc.Scalars("search/best_val_accuracy")]
    assert best == sorted(best) and best[-1] == pytest.approx(max(stored.values()), abs=1e-6)
    assert "final/test_accuracy" in tags
    hp_runs = sorted(p.name for p in (out / "tensorboard").iterdir() if p.is_dir())
    assert hp_runs == [f"trial_{i:05d}" for i in sorted(stored)]


@pytest.mark.slow
def test_mlflow_parent_children_and_model(logged) -> None:
    from mlflow.tracking import MlflowClient

    from nasforge.loggers.mlflow import EXPERIMENT, tracking_uri

    out, res = logged
    client = MlflowClient(tracking_uri(out))
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(kids) == len(res.trials) == 3
    by_trial = {int(r.data.tags["nasforge.trial_id"]): r for r in kids}
    for t in res.trials:
        assert by_trial[t.id].data.params["arch"] == t.arch[:250]
        if t.ok:
            assert by_trial[t.id].data.metrics["val_accuracy"] == pytest.approx(
                t.metrics["val_accuracy"])
    assert parent.data.metrics["final_test_accuracy"] == pytest.approx(
        res.test_metrics["test_accuracy"])
    assert parent.info.status == "FINISHED"
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "model")}
    assert {"model/arch.json", "model/weights.safetensors"} <= arts


def test_unknown_or_missing_logger_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(NasforgeError, match="choose from: tensorboard, mlflow"):
        make("wandb", tmp_path)
