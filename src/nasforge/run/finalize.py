"""After the search: choose the returned model, retrain it, test it once, export it.

Candidates are the feasible trials at the run's highest fidelity; a retrained model that
breaks a hard constraint when measured again is never exported (the next one is tried).
Multi-objective or constrained runs also get their Pareto report.

:func:`finish_model` (train if asked, test once, cost metrics, staged export) is the last
step of every path: this module's retraining, SPOS/DARTS/GDAS and OFA all call it.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasforge.run.display import _Display, _fmt
from nasforge.run.setup import _Setup
from nasforge.store import RunStore, TrialRecord

if TYPE_CHECKING:
    from nasforge.data import Dataset


# -------------------------------------------------------------------------- final model
#: a constrained search retrains at most this many candidates when the final model breaks
#: a bound (latency noise, a val_accuracy floor), and checks at most this many in all
MAX_FINAL_RETRAINS = 3
MAX_FINAL_CANDIDATES = 10
STAGING_DIR = ".best-staging"


def _cost_metrics(model: Any, input_shape: Any, *, onnx: bool, repeats: int = 50,
                  onnx_path: Path | None = None, threads: int | None = None
                  ) -> dict[str, float]:
    """Cost metrics measured on ``model`` itself, as the train estimator names them.

    ``threads``: torch's (and ONNX Runtime's) intra-op threads for the latencies (None:
    the current setting), so a budget measured at a thread count is re-measured at it."""
    from nasforge import metrics as M
    from nasforge.estimators.training import latency_metrics

    model.to("cpu").eval()
    out: dict[str, float] = {
        "params": M.count_params(model),
        "flops": M.count_flops(model, input_shape),
        "peak_memory_mb": M.peak_memory_mb(model, input_shape),
    }
    with M._threads(threads):
        out.update(latency_metrics(model, input_shape, onnx=onnx, repeats=repeats,
                                   onnx_path=onnx_path))
    return out


def _broken(metrics: Mapping[str, Any], constraints: list[Any]) -> list[str]:
    """The constraints ``metrics`` break, each with the measured value."""
    return [f"{c} ({c.metric} = {metrics.get(c.metric, 'missing')})"
            for c in constraints if not c.satisfied(metrics)]


def _install(staging: Path, target: Path) -> None:
    """Move the checked model directory into place, replacing an older one."""
    import shutil

    old = target.with_name(".best-old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _test_scores(served: Any, data: Dataset, device: str) -> tuple[float, float, float]:
    """``(accuracy, loss, accuracy without test-time augmentation)`` on the test split,
    in one pass: a TTA model's plain logits come from its own first forward."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from nasforge.estimators.training import _layout, evaluate_model
    from nasforge.export import FlipTTA

    if not isinstance(served, FlipTTA):
        acc, loss = evaluate_model(served, data.x_test, data.y_test, device=device)
        return acc, loss, acc
    n = len(data.y_test)
    if n == 0:
        raise ValueError("no test examples")
    x = torch.as_tensor(np.asarray(data.x_test), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(data.y_test), dtype=torch.long)
    fmt = torch.channels_last if x.dim() == 4 else torch.contiguous_format
    restore = _layout(served)
    served.to(device, memory_format=fmt).eval()
    correct = plain_correct = 0
    loss_sum = 0.0
    try:
        with torch.no_grad():
            for i in range(0, n, 512):
                xb = x[i : i + 512].to(device).contiguous(memory_format=fmt)
                yb = y[i : i + 512].to(device)
                out, plain = served.forward_both(xb)
                loss_sum += float(F.cross_entropy(out.float(), yb, reduction="sum"))
                correct += int((out.argmax(1) == yb).sum())
                plain_correct += int((plain.argmax(1) == yb).sum())
    finally:
        served.to(memory_format=restore)
    return correct / n, loss_sum / n, plain_correct / n


def _test_metrics(served: Any, data: Dataset, device: str) -> dict[str, float]:
    """The task's metrics on the test split, prefixed ``test_`` (one pass over it).

    Classification keeps its own path (:func:`_test_scores`: the accuracy with and without
    test-time augmentation from one pass); other tasks score the served network's raw
    outputs with the task's metrics."""
    if data.task == "classification":
        acc, loss, plain = _test_scores(served, data, device)
        return {"test_accuracy": acc, "test_accuracy_no_tta": plain, "test_loss": loss}
    from nasforge.estimators.training import score_model

    task = data.make_task()
    m = score_model(served, data.x_test, data.y_test, task, device=device)
    return {f"test_{k}": v for k, v in m.items()}


def _epoch_cap(space: Any, rec: TrialRecord, secs: float) -> int | None:
    """The final training's epochs when the space caps them (``final_epochs_factor`` x
    the winning trial's epochs) and that many fit the time left; None: train for the
    time. Small tables overfit when the final training runs thousands of epochs."""
    factor = getattr(space, "final_epochs_factor", None)
    ep, took = rec.metrics.get("epochs"), rec.metrics.get("train_time_s")
    if not factor or not ep or not took or not math.isfinite(float(ep)) or float(ep) <= 0:
        return None
    cap = max(1, math.ceil(float(factor) * float(ep)))
    per_epoch = float(took) / float(ep)
    return cap if cap * per_epoch * 1.3 < secs else None  # train+val is a bit larger


def served_tta(augment: Any, data: Dataset) -> str | None:
    """The test-time augmentation a model is served with: a classifier trained on mirrored
    images gets the average over the image and its mirror (``"flip"``), others none."""
    return ("flip" if str(augment or "none").startswith("flip")
            and data.task == "classification" and len(data.input_shape) == 3 else None)


def finish_model(
    model: Any,
    arch: Any,
    space: Any,
    data: Dataset,
    out_dir: str | os.PathLike[str],
    *,
    train: Mapping[str, Any] | None = None,
    tta: str | None = None,
    extra: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    alias: str | None = None,
    summary: Mapping[str, Any] | None = None,
    review: Callable[[dict[str, Any]], bool] | None = None,
    onnx: bool = True,
    device: str = "cpu",
    threads: int | None = None,
    repeats: int = 50,
    say: Callable[[str], Any] | None = None,
) -> tuple[dict[str, Any], Path | None]:
    """Train ``model`` (if asked), test it once, measure its costs, export it to ``out_dir``.

    The last step of every path (a search's retrained winner, a SPOS/DARTS/GDAS winner, an
    OFA sub-network), written once so that every path reports the same test metrics for
    the data's task (:func:`_test_metrics`), the same cost metrics (:func:`_cost_metrics`,
    with ONNX Runtime latencies when ``onnx``) and the same model directory, whose
    ``summary.json`` carries the latency block.

    ``train``: :func:`~nasforge.estimators.training.train_model`'s keyword arguments
    (None: keep the weights, e.g. OFA's inherited ones); adds ``epochs``,
    ``train_time_s`` and, when the validation split was left out of training, its last
    ``val_<metric>`` figures. ``metrics``: figures the caller already has and judged by;
    they win a clash (OFA's ``latency_ms`` is the one its budget was checked on).
    ``alias``: a prefix the test metrics are also stored under (``"inherited_"``).
    ``threads``/``repeats``: how the latencies are measured. ``summary``: more top-level
    ``summary.json`` keys.

    The model is saved to a staging folder beside ``out_dir`` and moved into place
    whole, replacing an older one, only when ``review(final metrics)`` (if given) says
    so -- it may also add figures derived from them before they are written; a refused
    model is deleted and ``(final metrics, None)`` returned, so a constrained search can
    try its next candidate.
    """
    import shutil

    from nasforge.estimators.training import runtime_names, train_model
    from nasforge.export import SUMMARY_FILE, _write_json, save_best, with_tta

    say = say or (lambda _msg: None)
    target = Path(out_dir)
    given = dict(metrics or {})
    trained: dict[str, Any] = {}
    if train is not None:
        t0 = time.perf_counter()
        hist = train_model(model, data, **train)
        trained = {"epochs": hist["epochs"], "train_time_s": time.perf_counter() - t0}
        if not train.get("include_val"):  # figures on data the training did not see
            trained.update({f"val_{k}": hist[f"val_{k}"]
                            for k in data.make_task().metric_names if f"val_{k}" in hist})
        say(f"final training done: {hist['epochs']:.3g} epochs in "
            f"{trained['train_time_s']:.0f} s; testing and exporting")
    t_post = time.perf_counter()
    served = with_tta(model, tta)
    tested = _test_metrics(served, data, device)
    served.to("cpu").eval()
    final: dict[str, Any] = dict(tested)
    if alias:
        final.update({f"{alias}{k}": v for k, v in tested.items()})
    final.update(_cost_metrics(served, data.input_shape, onnx=False, repeats=repeats,
                               threads=threads))
    final.update(trained)
    final.update(given)
    staging = target.with_name(STAGING_DIR)
    shutil.rmtree(staging, ignore_errors=True)
    save_best(staging, model, arch, space, data, final, extra, onnx=onnx, tta=tta)
    shipped = staging / "model.onnx"
    if onnx:  # ONNX Runtime's latencies, on the file that is shipped when there is one
        final.update(_cost_metrics(served, data.input_shape, onnx=True, repeats=repeats,
                                   onnx_path=shipped if shipped.is_file() else None,
                                   threads=threads))
        final.update(given)
    if review is not None and not review(final):
        shutil.rmtree(staging, ignore_errors=True)
        return final, None
    doc = json.loads((staging / SUMMARY_FILE).read_text())
    doc["metrics"].update(final)
    doc["latency"] = {
        "threads": final.get("latency_threads"),
        "runtimes": runtime_names(),
        "batch_1_ms": {"torch": final.get("latency_ms"),
                       "onnx": final.get("onnx_latency_ms")},
        "batch_32_ms": {"torch": final.get("latency_ms_b32"),
                        "onnx": final.get("onnx_latency_ms_b32")},
        "onnx_file": ("model.onnx" if shipped.is_file()
                      else "temporary export" if onnx else None),
    }
    doc.update(summary or {})
    _write_json(staging / SUMMARY_FILE, doc)
    _install(staging, target)
    primary = f"test_{data.make_task().primary}"
    say(f"{primary.replace('_', ' ', 1)} {tested[primary]:.4f}; tested and exported to "
        f"{target} in {time.perf_counter() - t_post:.0f} s")
    return final, target


def _final_train(store: RunStore, setup: _Setup, data: Dataset, cands: list[TrialRecord],
                 final_epochs: int | None, display: _Display,
                 final_seconds: float | None = None
                 ) -> tuple[TrialRecord | None, dict[str, Any], Path | None, str | None]:
    """Retrain the best feasible architecture on the full training split, test it, export it.

    Returns ``(chosen trial, final metrics, model dir, None)``, or ``(None, {}, None,
    why)`` when no candidate stays within the run's hard constraints. Cost metrics are
    measured again -- on the untrained network first (latency does not depend on the
    weights, so a candidate that now measures over budget costs no training), then on the
    retrained one -- and a model that breaks a bound is never exported: the next feasible
    candidate is tried, at most :data:`MAX_FINAL_RETRAINS` retrainings. The final
    ``summary.json`` always gets torch and ONNX Runtime latencies at batch 1 and 32.
    """
    import shutil

    import torch

    from nasforge.reporting import run_constraints

    space, est = setup.space, setup.estimator
    cfg = est.config()
    search_epochs = int(cfg.get("epochs") or 1)
    epochs = int(final_epochs) if final_epochs else max(3, 3 * search_epochs)
    seed = int(setup.config["seed"])
    kw = {k: cfg[k] for k in ("batch_size", "optimizer", "lr", "weight_decay",
                              "label_smoothing", "device", "augment", "warmup")
          if cfg.get(k) is not None}
    t_final = time.monotonic()
    device = kw.get("device", "cpu")
    constraints = run_constraints(setup.config)
    onnx_bound = any("onnx" in c.metric or c.metric.endswith("_b32") for c in constraints)
    rejected: list[str] = []
    retrains = 0
    for rec in cands[:MAX_FINAL_CANDIDATES]:
        if retrains >= MAX_FINAL_RETRAINS:
            break
        arch = space.parse(rec.arch)
        torch.manual_seed(seed)
        model = data.build_network(space, arch)
        if constraints:
            pre = {**rec.metrics, **_cost_metrics(model, data.input_shape, onnx=onnx_bound)}
            bad = _broken(pre, constraints)
            if bad:
                rejected.append(f"trial {rec.id}: {'; '.join(bad)} (re-measured before training)")
                display.print(f"[yellow]skipping trial {rec.id}[/]: {rejected[-1]}")
                continue
        retrains += 1
        n_all = len(data.y_train) + len(data.y_val)
        secs = None
        n_epochs = epochs
        if final_seconds is not None:  # a retry after a rejected model gets what is left
            secs = max(1.0, final_seconds - (time.monotonic() - t_final))
            what = f"for {secs:.0f} s (the time left, less the reserve)"
            cap = _epoch_cap(space, rec, secs)
            if cap is not None:
                secs, n_epochs = None, cap
                what = (f"for {cap} epochs ({space.final_epochs_factor:g} x the trial's; "
                        "the space's cap, within the time left)")
        else:
            what = f"for {epochs} epochs"
        display.log(f"final training of trial {rec.id} ({arch.text}) {what} on all {n_all} "
                    "training and validation examples")
        store.set_meta(status="final_training")
        search_metrics = dict(rec.metrics)
        final, model_dir = finish_model(
            model, arch, space, data, store.run_dir / "best",
            train={**kw, "epochs": n_epochs if secs is None else 10**6, "data_fraction": 1.0,
                   "resolution": None, "seed": seed, "seconds": secs, "include_val": True},
            tta=served_tta(kw.get("augment"), data),
            extra={"trial_id": rec.id, "search_metrics": rec.metrics,
                   "run_dir": str(store.run_dir)},
            summary={"constraints": [str(c) for c in constraints]},
            review=lambda m, got=search_metrics: not _broken({**got, **m}, constraints),
            onnx=True, device=device, say=display.log,
        )  # fmt: skip
        if model_dir is None:
            bad = _broken({**search_metrics, **final}, constraints)
            rejected.append(f"trial {rec.id}: {'; '.join(bad)} (re-measured after retraining)")
            display.print(f"[yellow]not exporting trial {rec.id}[/]: {rejected[-1]}")
            continue
        store.set_meta(final={
            "arch": arch.text, "trial_id": rec.id, "metrics": final, "feasible": True,
            "model_dir": str(model_dir.resolve()), "first_choice": cands[0].arch,
            "rejected": rejected,
        })
        return rec, final, model_dir, None
    why = (f"no feasible model: every candidate tried broke a constraint when measured "
           f"again ({' | '.join(rejected)})")
    shutil.rmtree(store.run_dir / "best", ignore_errors=True)  # never leave an older answer
    store.set_meta(final={"arch": None, "trial_id": None, "metrics": {}, "feasible": False,
                          "model_dir": None, "first_choice": cands[0].arch if cands else None,
                          "rejected": rejected, "message": why})
    return None, {}, None, why


def _candidates(store: RunStore, setup: _Setup,
                trials: list[TrialRecord]) -> tuple[list[TrialRecord], str | None]:
    """The ranked feasible candidates for the returned model, and why there are none.

    Feasible trials only, the highest fidelity of the run first, then the first objective
    (see :func:`nasforge.reporting.ranked_candidates`). Multi-objective or constrained runs
    also get their Pareto front (trial ids) stored under the ``pareto`` meta key.
    """
    from nasforge import reporting as R

    objs, cons = R.run_objectives(setup.config), R.run_constraints(setup.config)
    resource = R.fidelity_resource(trials, setup.strategy.resource)
    cands = R.ranked_candidates(trials, objs[0], cons, resource)
    if len(objs) > 1 or cons:
        axes = R.report_objectives(objs, cons)
        store.set_meta(pareto={"objectives": [str(o) for o in axes],
                               "constraints": [str(c) for c in cons], "resource": resource,
                               "trial_ids": R.pareto_ids(trials, axes, cons, resource)})
    why = R.infeasible_message(trials, cons, objs[0]) if cons and not cands else None
    return cands, why


def _final(store: RunStore, setup: _Setup, data: Dataset | None, cands: list[TrialRecord],
           final_train: bool, final_epochs: int | None, display: _Display,
           final_seconds: float | None = None
           ) -> tuple[TrialRecord | None, dict[str, Any], Path | None, str | None]:
    """The returned trial, its test metrics and model dir (retrained now, or in an earlier
    session), and why no model is returned when every candidate broke a constraint."""
    if not cands:
        return None, {}, None, None
    best = cands[0]
    if not setup.estimator.needs_data:
        return best, dict(best.report), None, None  # e.g. a benchmark table's test accuracy
    if not final_train or data is None:
        return best, {}, None, None
    done = store.get_meta("final")
    model_dir = store.run_dir / "best"
    if done and done.get("first_choice", done.get("arch")) == best.arch and (
        done.get("model_dir") is None or (model_dir / "summary.json").is_file()
    ):  # retrained in an earlier session (the store may have moved: look beside it)
        if done.get("feasible") is False:
            return None, {}, None, done.get("message") or "no feasible model"
        chosen = next((t for t in cands if t.id == done.get("trial_id")), best)
        return (chosen, dict(done["metrics"]),
                None if done.get("model_dir") is None else model_dir, None)
    return _final_train(store, setup, data, cands, final_epochs, display, final_seconds)


def _write_reports(store: RunStore, setup: _Setup, trials: list[TrialRecord],
                   chosen: TrialRecord | None, test_metrics: Mapping[str, Any],
                   message: str | None, display: _Display) -> None:
    """``RUN_DIR/pareto.md`` and ``pareto.png`` for multi-objective or constrained runs."""
    from nasforge import reporting as R

    objs, cons = R.run_objectives(setup.config), R.run_constraints(setup.config)
    if len(objs) < 2 and not cons:
        return
    resource = R.fidelity_resource(trials, setup.strategy.resource)
    final: dict[str, Any] = {}
    if chosen is not None:
        final["trial"] = f"{chosen.id} (`{chosen.arch}`)"
        final.update({k: _fmt(v) for k, v in test_metrics.items()
                      if k in ("test_accuracy", "val_accuracy", "test_rmse", "val_rmse",
                               "params", "flops",
                               "latency_ms", "latency_ms_b32", "onnx_latency_ms",
                               "onnx_latency_ms_b32", "latency_threads", "peak_memory_mb")})
    else:
        final["none"] = message or "no trial succeeded"
    try:
        R.write_pareto_report(store.run_dir, trials, objs, cons, resource, final)
    except Exception as e:  # noqa: BLE001 - a plotting problem must not lose a finished run
        display.print(f"[yellow]could not write the Pareto report: {type(e).__name__}: {e}[/]")
