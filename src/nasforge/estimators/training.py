"""Train-and-validate estimator, and the latency figures it reports per trial.

The training loop it is built on lives in :mod:`nasforge.training` (shared with the
final training and the one-shot methods); its names are re-exported here, so
``nasforge.estimators.training.train_model`` and the rest keep working.
"""

from __future__ import annotations

import math
import tempfile
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from nasforge.errors import NasforgeError
from nasforge.estimators import register
from nasforge.estimators.base import Estimator, Result
from nasforge.training import (
    AUGMENTS,
    DEFAULT_LR,
    DEFAULT_WEIGHT_DECAY,
    OPTIMIZERS,
    EpochCallback,
    evaluate_model,
    model_outputs,
    score_model,
    train_model,
)
from nasforge.training import _as_tensor as _as_tensor
from nasforge.training import _augment as _augment
from nasforge.training import _layout as _layout
from nasforge.training import _optimizer as _optimizer
from nasforge.training import _resize as _resize
from nasforge.training import _resize_all as _resize_all

if TYPE_CHECKING:
    from nasforge.data import Dataset
    from nasforge.early_stopping import LearningCurveStopper
    from nasforge.spaces.base import Arch, SearchSpace
    from nasforge.store import TrialRecord

#: public names, the training loop's (from :mod:`nasforge.training`) included
__all__ = [
    "AUGMENTS", "CURVE_PREFIX", "DEFAULT_LR", "DEFAULT_WEIGHT_DECAY", "FIDELITY_KEYS",
    "LARGE_BATCH", "LATENCY_MODES", "OPTIMIZERS", "SECONDS_EPOCH_CAP", "EpochCallback",
    "TrainingEstimator", "evaluate_model", "latency_metrics", "model_outputs", "quick_onnx",
    "runtime_names", "score_model", "train_model",
]  # fmt: skip

FIDELITY_KEYS = ("epochs", "data_fraction", "resolution", "batch_size", "seconds")
#: epochs cap when a trial's budget is ``seconds`` of training (the time decides)
SECONDS_EPOCH_CAP = 10_000
#: what the train estimator times per trial: torch only (cheap), or also ONNX Runtime
LATENCY_MODES = ("torch", "torch+onnx")
#: the "throughput" batch size of ``latency_ms_b32`` / ``onnx_latency_ms_b32``
LARGE_BATCH = 32
#: report keys holding an early-stopping trial's curve: ``curve_<metric>_<epoch>``
CURVE_PREFIX = "curve_"


# ----------------------------------------------------------------------------- latency
def quick_onnx(model: nn.Module, input_shape: Sequence[int], path: str | Path) -> Path:
    """Export ``model`` to ONNX for timing: TorchScript exporter first (~0.2-1 s against
    5-10 s for the dynamo one on a busy CPU), the checked :func:`export_onnx` if it fails."""
    from nasforge.export import _export_once, export_onnx

    path = Path(path)
    was_training = model.training
    model.cpu().eval()
    example = torch.randn(2, *[int(s) for s in input_shape],
                          generator=torch.Generator().manual_seed(0))
    try:
        _export_once(model, example, path, None, dynamo=False)
    except Exception:  # noqa: BLE001 - the slower exporter may still work
        export_onnx(model, input_shape, path, check=False)
    finally:
        model.train(was_training)
    return path


def runtime_names() -> dict[str, str]:
    """Which runtimes the latencies come from (versions matter: kernels change)."""
    names = {"torch": f"torch {torch.__version__} (eager, cpu)"}
    try:
        import onnxruntime as ort

        names["onnx"] = f"onnxruntime {ort.__version__} (CPUExecutionProvider)"
    except ImportError:  # pragma: no cover - onnxruntime is a dependency
        names["onnx"] = "onnxruntime (not installed)"
    return names


def latency_metrics(model: nn.Module, input_shape: Sequence[int], *, onnx: bool = False,
                    repeats: int = 20, onnx_path: str | Path | None = None,
                    large_batch: int = LARGE_BATCH) -> dict[str, float]:
    """CPU latency medians (ms) of ``model``, measured where the search runs.

    Always ``latency_ms`` (torch, batch 1). With ``onnx``: also ``latency_threads``
    (torch's intra-op threads, also given to ONNX Runtime so both are comparable),
    ``latency_ms_b32`` (torch, batch ``large_batch``), ``onnx_latency_ms`` and
    ``onnx_latency_ms_b32`` from ONNX Runtime, on ``onnx_path`` if given (the file that is
    shipped) else on a temporary export. An ONNX export failure leaves the ONNX keys out
    (a constraint on them then counts as violated) instead of failing the trial.
    """
    from nasforge import metrics

    model.to("cpu")
    lat = metrics.measure_latency(model, input_shape, repeats=repeats)
    out: dict[str, float] = {"latency_ms": lat["median_ms"]}
    if not onnx:
        return out
    out["latency_threads"] = lat["threads"]
    big_repeats = max(3, repeats // 4)  # a batch of 32 takes ~32x longer: fewer repeats
    out["latency_ms_b32"] = metrics.measure_latency(
        model, input_shape, batch_size=large_batch, repeats=big_repeats, warmup=2)["median_ms"]
    threads = int(lat["threads"])
    with tempfile.TemporaryDirectory(prefix="nasforge-onnx-") as tmp:
        try:
            path = Path(onnx_path) if onnx_path is not None else quick_onnx(
                model, input_shape, Path(tmp) / "model.onnx")
            out["onnx_latency_ms"] = metrics.measure_onnx_latency(
                path, input_shape, repeats=repeats, threads=threads)["median_ms"]
            out["onnx_latency_ms_b32"] = metrics.measure_onnx_latency(
                path, input_shape, batch_size=large_batch, repeats=big_repeats, warmup=2,
                threads=threads)["median_ms"]
        except Exception:  # noqa: BLE001 - see docstring: missing, not a failed trial
            out.pop("onnx_latency_ms", None)
    return out


# ------------------------------------------------------------------------------ checks
def _int(name: str, v: Any, lo: int, allow_none: bool = False) -> int | None:
    """An integer option >= ``lo``; integral floats (2.0, from budget arithmetic) accepted."""
    if v is None and allow_none:
        return None
    ok = isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer()
    if not ok or int(v) < lo:
        none = " or None" if allow_none else ""
        raise NasforgeError(f"{name} must be an integer >= {lo}{none}, got {v!r}")
    return int(v)


def _fraction(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 < float(v) <= 1.0:
        raise NasforgeError(f"{name} must be a number in (0, 1], got {v!r}")
    return float(v)


def _positive(name: str, v: Any, zero_ok: bool = False) -> float | None:
    if v is None:
        return None
    bad = isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)
    if bad or v < 0 or (v == 0 and not zero_ok):
        what = ">= 0" if zero_ok else "> 0"
        raise NasforgeError(f"{name} must be a number {what} or None, got {v!r}")
    return float(v)


def _check_device(device: str) -> str:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise NasforgeError(
            f"device {device!r} is not a torch device; use e.g. 'cpu' or 'cuda'"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NasforgeError(f"device {device!r} asked for but CUDA is not available; use 'cpu'")
    return str(device)


def _task_metrics() -> frozenset[str]:
    """``val_<metric>`` of every registered task (detection's ``val_map50_95`` ...)."""
    from nasforge import tasks

    return frozenset(f"val_{m}" for n in tasks.names()
                     for m in getattr(tasks.registry.factory(n), "metric_names", ()))


@register("train")
class TrainingEstimator(Estimator):
    """Train each candidate for a few epochs and score it on the validation split.

    ``latency``: ``"torch"`` times each trained candidate with PyTorch (CPU, batch 1);
    ``"torch+onnx"`` adds batch-32 and ONNX Runtime latencies (a quick ONNX export per
    trial, ~1 s). ``early_stopping``: stop hopeless trials by the median stopping rule
    (:class:`~nasforge.early_stopping.LearningCurveStopper`, ``early_stopping_options``
    go to it). Its reference curves live in this estimator object: shared by all trials
    with the in-process (or thread) executor and rebuilt from the store on resume; with
    process or Ray workers every worker holds its own copy, bound once, and learns only
    from the trials it ran itself (so stopping starts later and differs between workers).
    """

    time_fidelity = "seconds"
    restores_state = True  # the early-stopping references, see restore()
    # the metrics of every task (val_accuracy for classification, val_rmse ... regression)
    reported_metrics = frozenset({
        "val_accuracy", "val_loss", "val_rmse", "val_mae", "val_r2",
        "params", "flops", "peak_memory_mb", "train_time_s",
        "epochs", "data_fraction", "latency_ms", "latency_threads", "latency_ms_b32",
        "onnx_latency_ms", "onnx_latency_ms_b32", "early_stopped",
    } | _task_metrics())

    def __init__(
        self,
        epochs: int = 1,
        data_fraction: float = 1.0,
        resolution: int | None = None,
        batch_size: int = 128,
        optimizer: str = "sgd",
        lr: float | None = None,
        weight_decay: float | None = None,
        timeout: float | None = None,
        seed: int = 0,
        device: str = "cpu",
        measure_latency: bool = True,
        latency_repeats: int = 20,
        label_smoothing: float = 0.0,
        latency: str = "torch",
        early_stopping: bool = False,
        early_stopping_options: Mapping[str, Any] | None = None,
        augment: str = "none",
        warmup: float = 0.0,
        max_val: int | None = None,
        seconds: float | None = None,
    ) -> None:
        """``augment``/``warmup``: see :func:`train_model`; ``max_val``: score trials on a
        fixed stratified part of the validation split (cheaper, noisier); ``seconds``:
        train each trial for that much wall time instead of ``epochs`` (also a fidelity)."""
        if augment not in AUGMENTS:
            raise NasforgeError(f"augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
        self.augment = augment
        wu = _positive("warmup", warmup, zero_ok=True)
        if wu is None or wu >= 1:
            raise NasforgeError(f"warmup must be in [0, 1), got {warmup!r}")
        self.warmup = wu
        self.max_val = _int("max_val", max_val, 10, allow_none=True)
        self.seconds = _positive("seconds", seconds)
        self.epochs = _int("epochs", epochs, 1)
        self.data_fraction = _fraction("data_fraction", data_fraction)
        self.resolution = _int("resolution", resolution, 8, allow_none=True)
        self.batch_size = _int("batch_size", batch_size, 1)
        if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
            raise NasforgeError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}"
            )
        self.optimizer = optimizer.lower()
        self.lr = _positive("lr", lr)
        self.weight_decay = _positive("weight_decay", weight_decay, zero_ok=True)
        self.timeout = _positive("timeout", timeout)
        self.seed = _int("seed", seed, 0)
        self.device = _check_device(device)
        self.measure_latency = bool(measure_latency)
        self.latency_repeats = _int("latency_repeats", latency_repeats, 1)
        ls = _positive("label_smoothing", label_smoothing, zero_ok=True)
        if ls is None or ls >= 1:
            raise NasforgeError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
        self.label_smoothing = ls
        if latency not in LATENCY_MODES:
            raise NasforgeError(
                f"latency must be one of {', '.join(LATENCY_MODES)}, got {latency!r}"
            )
        self.latency = latency
        self.early_stopping = bool(early_stopping)
        self.early_stopping_options = dict(early_stopping_options or {})
        self._stopper: LearningCurveStopper | None = None
        if self.early_stopping:
            self.stopper  # noqa: B018 - bad stopper options fail now, not in trial 1

    @property
    def stopper(self) -> LearningCurveStopper:
        """The early-stopping rule and its reference curves (made on first use)."""
        if self._stopper is None:
            from nasforge.early_stopping import LearningCurveStopper

            try:
                self._stopper = LearningCurveStopper(**self.early_stopping_options)
            except TypeError as e:
                raise NasforgeError(f"bad early_stopping_options: {e}") from None
        return self._stopper

    @staticmethod
    def _group(s: Mapping[str, Any]) -> str:
        """Curves are comparable only under the same budget (the cosine schedule differs)."""
        return (f"epochs={s['epochs']},data_fraction={s['data_fraction']},"
                f"resolution={s['resolution']},batch_size={s['batch_size']}"
                + (f",seconds={s['seconds']}" if s.get("seconds") is not None else ""))

    def restore(self, trials: Iterable[TrialRecord]) -> None:
        """Rebuild the early-stopping references from stored trials (called on resume).

        Curves were stored in each trial's report (``curve_<metric>_<epoch>``), so a
        resumed search stops exactly the trials the uninterrupted one would have.
        """
        if not self.early_stopping:
            return
        stopper = self.stopper
        stopper.curves = []
        prefix = f"{CURVE_PREFIX}{stopper.metric}_"
        done = [t for t in trials if t.ok]
        done.sort(key=lambda t: (t.finished_at or 0.0, t.id))
        for t in done:
            pts = sorted((float(k[len(prefix):]), float(v)) for k, v in t.report.items()
                         if k.startswith(prefix))
            if pts:
                try:
                    group = self._group(self.settings(t.fidelity))
                except NasforgeError:
                    continue
                stopper.add_curve(pts, stopped=bool(t.metrics.get("early_stopped")),
                                  group=group)

    def config(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}  # new options only when set: older runs' configs still match
        if self.latency != "torch":
            extra["latency"] = self.latency
        if self.early_stopping:
            extra["early_stopping"] = True
            extra["early_stopping_options"] = dict(self.early_stopping_options)
        for key, default in (("augment", "none"), ("warmup", 0.0), ("max_val", None),
                             ("seconds", None)):
            if getattr(self, key) != default:
                extra[key] = getattr(self, key)
        return {
            **extra,
            "epochs": self.epochs,
            "data_fraction": self.data_fraction,
            "resolution": self.resolution,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "timeout": self.timeout,
            "seed": self.seed,
            "device": self.device,
            "measure_latency": self.measure_latency,
            "latency_repeats": self.latency_repeats,
            "label_smoothing": self.label_smoothing,
        }

    def settings(self, fidelity: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The epochs/data_fraction/resolution/batch_size in force, ``fidelity`` applied.

        Raises :class:`NasforgeError` for an unknown key or a bad value: a mistake in
        the search set-up, not a property of one candidate.
        """
        fidelity = dict(fidelity or {})
        unknown = sorted(set(fidelity) - set(FIDELITY_KEYS))
        if unknown:
            raise NasforgeError(
                f"the train estimator has no fidelity {unknown}; "
                f"valid keys: {', '.join(FIDELITY_KEYS)}"
            )
        s = {
            "epochs": self.epochs,
            "data_fraction": self.data_fraction,
            "resolution": self.resolution,
            "batch_size": self.batch_size,
            "seconds": self.seconds,
        }
        if "seconds" in fidelity:
            s["seconds"] = _positive("fidelity seconds", fidelity["seconds"])
        if s["seconds"] is not None and "epochs" not in fidelity:
            s["epochs"] = SECONDS_EPOCH_CAP  # the time decides; a fidelity's epochs caps it
        if "epochs" in fidelity:
            s["epochs"] = _int("fidelity epochs", fidelity["epochs"], 1)
        if "data_fraction" in fidelity:
            s["data_fraction"] = _fraction("fidelity data_fraction", fidelity["data_fraction"])
        if "resolution" in fidelity:
            s["resolution"] = _int(
                "fidelity resolution", fidelity["resolution"], 8, allow_none=True
            )
        if "batch_size" in fidelity:
            s["batch_size"] = _int("fidelity batch_size", fidelity["batch_size"], 1)
        return s

    def evaluate(
        self,
        arch: Arch,
        space: SearchSpace,
        data: Dataset | None = None,
        fidelity: Mapping[str, Any] | None = None,
    ) -> Result:
        """As :meth:`Estimator.evaluate`, but a missing dataset or a bad fidelity raises."""
        if data is None:
            raise NasforgeError(
                "the train estimator needs a dataset (e.g. nasforge.load_dataset('digits'))"
            )
        self.settings(fidelity)
        return super().evaluate(arch, space, data, fidelity)

    def _evaluate(
        self, arch: Arch, space: SearchSpace, data: Dataset | None, fidelity: dict[str, Any]
    ) -> Result:
        from nasforge import metrics

        if data is None:
            raise NasforgeError("the train estimator needs a dataset")
        s = self.settings(fidelity)
        t0 = time.perf_counter()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        if self.deadline is not None:  # the job's search time ends: stop there
            end = time.monotonic() + (self.deadline - time.time())
            deadline = end if deadline is None else min(deadline, end)
        seed = zlib.crc32(f"{self.seed}:{arch.text}".encode())
        r = s["resolution"]
        shape = data.input_shape
        if r is not None:
            if len(shape) != 3:
                raise NasforgeError(f"resolution applies to images; these {data.input_kind} "
                                    f"data have input shape {shape}")
            shape = (shape[0], r, r)
        torch.manual_seed(seed)
        model = data.build_network(space, arch, shape)
        if self.early_stopping and "metric" not in self.early_stopping_options and \
                data.task != "classification" and not self.stopper.curves:
            # the curve to watch is the task's primary metric (val_rmse falls), unless
            # the user chose one; set before the first curve is recorded
            task = data.make_task()
            self.stopper.metric, self.stopper.mode = task.objective, task.mode
        monitor = (self.stopper.trial(group=self._group(s), max_epochs=s["epochs"])
                   if self.early_stopping else None)
        try:
            hist = train_model(
                model,
                data,
                epochs=s["epochs"],
                data_fraction=s["data_fraction"],
                resolution=r,
                batch_size=s["batch_size"],
                optimizer=self.optimizer,
                lr=self.lr,
                weight_decay=self.weight_decay,
                label_smoothing=self.label_smoothing,
                seed=seed,
                device=self.device,
                deadline=deadline,
                on_epoch=monitor,
                seconds=s["seconds"],
                augment=self.augment,
                warmup=self.warmup,
                max_val=self.max_val,
            )
        except TimeoutError:
            if self.deadline is not None and time.time() >= self.deadline:
                return Result.failed("stopped at the end of the search time (the job's "
                                     "time budget)", time.perf_counter() - t0)
            if self.timeout is None:
                raise
            t = self.timeout
            secs = f"{t:.1f}" if t >= 0.1 else f"{t:.3g}"
            return Result.failed(
                f"timed out after {secs} s (timeout per trial; "
                "raise it or lower epochs/data_fraction)",
                time.perf_counter() - t0,
            )
        except FloatingPointError as e:
            return Result.failed(f"FloatingPointError: {e}", time.perf_counter() - t0)
        train_time = time.perf_counter() - t0
        model.to("cpu")  # cost metrics are CPU numbers (see CONTRIBUTING)
        m: dict[str, float] = {
            **{k: v for k, v in hist.items() if k.startswith("val_")},
            "params": metrics.count_params(model),
            "flops": metrics.count_flops(model, shape),
            "peak_memory_mb": metrics.peak_memory_mb(model, shape),
            "train_time_s": train_time,
            "epochs": hist["epochs"],
            "data_fraction": s["data_fraction"],
        }
        if self.measure_latency:
            m.update(latency_metrics(model, shape, onnx=self.latency == "torch+onnx",
                                     repeats=self.latency_repeats))
        report: dict[str, float] = {"train_loss": hist["train_loss"]}
        if monitor is not None:
            m = monitor.finalize(m, stopped=hist["stopped_early"])
            key = self.stopper.metric
            report.update({f"{CURVE_PREFIX}{key}_{int(rec['epoch'])}": float(rec[key])
                           for rec in hist["curve"] if key in rec})
        return Result(metrics=m, cost=time.perf_counter() - t0, report=report)
