"""``--log-to mlflow``: a local MLflow store in ``RUN_DIR/mlruns``.

One parent MLflow run per search (the run's config as params, the best so far as a
metric), one child run per trial (its choices as params, its metrics), and the final
model directory (weights, arch.json, model.onnx) as the parent's artifacts. Through
``MlflowClient`` (not the fluent API) so that nothing global is left active in the
process. MLflow 3 keeps the file store in maintenance mode and refuses it unless
``MLFLOW_ALLOW_FILE_STORE`` is set; a local file store needs no server and no database
migration (the SQLite backend takes ~10 s to create), so this logger sets it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nasforge.estimators.base import Result
from nasforge.loggers import flat_choices, objective_of
from nasforge.run.loop import Callback
from nasforge.strategies.base import Suggestion

DIR_NAME = "mlruns"
EXPERIMENT = "nasforge"


def tracking_uri(run_dir: Path) -> str:
    return (Path(run_dir).resolve() / DIR_NAME).as_uri()


class MLflowLogger(Callback):
    def __init__(self, run_dir: Path, config: Mapping[str, Any] | None = None) -> None:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient

        self._config = config
        self.metric, self.sign = "val_accuracy", 1.0
        self.run_dir = Path(run_dir)
        self.client = MlflowClient(tracking_uri(self.run_dir))
        self.parent: str | None = None
        self.best: float | None = None
        self.n = 0

    def _parent(self) -> str:
        if self.parent is None:
            self.metric, self.sign, self.config, self.n, self.best = objective_of(
                self.run_dir, self._config)
            exp = self.client.get_experiment_by_name(EXPERIMENT)
            exp_id = exp.experiment_id if exp else self.client.create_experiment(EXPERIMENT)
            run = self.client.create_run(exp_id, run_name=self.run_dir.name,
                                         tags={"nasforge.run_dir": str(self.run_dir)})
            self.parent = run.info.run_id
            self.exp_id = exp_id
            for k, v in _flat(self.config).items():
                self.client.log_param(self.parent, k, v)
        return self.parent

    def on_trial_start(self, trial_id: int, suggestion: Suggestion) -> None:
        self._parent()

    def on_trial_end(self, trial_id: int, suggestion: Suggestion, result: Result) -> None:
        from mlflow.entities import Metric, Param

        parent = self._parent()
        self.n += 1
        child = self.client.create_run(self.exp_id, run_name=f"trial {trial_id}", tags={
            "mlflow.parentRunId": parent, "nasforge.trial_id": str(trial_id),
            "nasforge.status": "ok" if result.ok else "failed"})
        cid = child.info.run_id
        nums = {k: float(v) for k, v in result.metrics.items()
                if isinstance(v, int | float) and math.isfinite(float(v))}
        params = flat_choices(suggestion.arch.to_json(), suggestion.arch.text)
        if suggestion.fidelity:
            params["fidelity"] = json.dumps(suggestion.fidelity, sort_keys=True)
        self.client.log_batch(
            cid, metrics=[Metric(k, v, _ms(), 0) for k, v in nums.items()],
            params=[Param(k, str(v)[:500]) for k, v in params.items()])
        if result.error:
            self.client.set_tag(cid, "nasforge.error", result.error[:4000])
        self.client.set_terminated(cid, "FINISHED" if result.ok else "FAILED")
        v = nums.get(self.metric) if result.ok else None
        if v is not None and (self.best is None or self.sign * v > self.sign * self.best):
            self.best = v
        if self.best is not None:
            self.client.log_metric(parent, f"best_{self.metric}", self.best, step=self.n)

    def on_finalized(self, result: Any) -> None:
        parent = self._parent()
        for k, v in (getattr(result, "test_metrics", None) or {}).items():
            if isinstance(v, int | float) and math.isfinite(float(v)):
                self.client.log_metric(parent, f"final_{k}", float(v))
        if getattr(result, "best_arch", None) is not None:
            self.client.set_tag(parent, "nasforge.best_arch", str(result.best_arch.text)[:4000])
        md = getattr(result, "model_dir", None)
        if md is not None and Path(md).is_dir():
            self.client.log_artifacts(parent, str(md), artifact_path="model")
        self.client.set_terminated(parent, "FINISHED")


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and len(out) < 90:
            out.update(_flat(v, key + "."))
        else:
            out[key] = json.dumps(v, default=str)[:500]
    return dict(list(out.items())[:100])


def _ms() -> int:
    import time

    return int(time.time() * 1000)
