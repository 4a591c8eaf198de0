"""Train-and-validate estimator, plus the training loop it is built on.

``train_model`` / ``evaluate_model`` are plain functions so other estimators
(multi-fidelity, early stopping, the final retraining in export) reuse the exact same
loop. The loop keeps whole splits as tensors and slices batches itself: a DataLoader's
per-sample Python overhead would dominate the small networks NAS trains by the hundred.
"""

from __future__ import annotations

import math
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nasforge.errors import NasforgeError
from nasforge.estimators import register
from nasforge.estimators.base import Estimator, Result

if TYPE_CHECKING:
    from nasforge.data import Dataset
    from nasforge.early_stopping import LearningCurveStopper
    from nasforge.spaces.base import Arch, SearchSpace
    from nasforge.store import TrialRecord

OPTIMIZERS = ("sgd", "adamw")
AUGMENTS = ("none", "flip", "flip+shift")
DEFAULT_LR = {"sgd": 0.05, "adamw": 1e-3}
DEFAULT_WEIGHT_DECAY = {"sgd": 5e-4, "adamw": 0.05}
FIDELITY_KEYS = ("epochs", "data_fraction", "resolution", "batch_size", "seconds")
#: epochs cap when a trial's budget is ``seconds`` of training (the time decides)
SECONDS_EPOCH_CAP = 10_000
#: what the train estimator times per trial: torch only (cheap), or also ONNX Runtime
LATENCY_MODES = ("torch", "torch+onnx")
#: the "throughput" batch size of ``latency_ms_b32`` / ``onnx_latency_ms_b32``
LARGE_BATCH = 32
#: report keys holding an early-stopping trial's curve: ``curve_<metric>_<epoch>``
CURVE_PREFIX = "curve_"

EpochCallback = Callable[[int, dict[str, float]], "bool | None"]


def _as_tensor(a: np.ndarray | torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return t.to(dtype)


def _augment(x: torch.Tensor, gen: torch.Generator, flip: bool, shift: int) -> torch.Tensor:
    """Random horizontal flips (per example) and one random shift of up to ``shift``
    pixels (per batch, zero padded): cheap on CPU, and what small image sets need."""
    if flip:
        f = torch.rand(len(x), generator=gen) < 0.5
        x = torch.where(f.to(x.device)[:, None, None, None], x.flip(3), x)
    if shift:
        h, w = x.shape[-2:]
        dy, dx = torch.randint(0, 2 * shift + 1, (2,), generator=gen).tolist()
        x = F.pad(x, (shift, shift, shift, shift))[:, :, dy : dy + h, dx : dx + w]
    return x


def _resize(x: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """Bilinear resize of a (N, C, H, W) batch to ``resolution`` squared (no-op if None/same)."""
    if resolution is None or tuple(x.shape[-2:]) == (resolution, resolution):
        return x
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False)


def _resize_all(x: torch.Tensor, resolution: int | None, chunk: int = 4096) -> torch.Tensor:
    """Resize a whole split once, in chunks, instead of every batch of every epoch."""
    if resolution is None or tuple(x.shape[-2:]) == (resolution, resolution):
        return x
    return torch.cat([_resize(x[i : i + chunk], resolution) for i in range(0, len(x), chunk)])


def evaluate_model(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    batch_size: int = 512,
    resolution: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[float, float]:
    """``(accuracy in [0, 1], mean cross-entropy)`` of a classifier on ``x, y``."""
    from nasforge.tasks import Classification

    m = score_model(model, x, y, Classification(), batch_size=batch_size,
                    resolution=resolution, device=device)
    return m["accuracy"], m["loss"]


def model_outputs(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    batch_size: int = 512,
    resolution: int | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """The raw outputs of ``model`` on all of ``x`` (eval, no_grad), on the CPU as float32.

    The model is moved to ``device``; inputs are resized to ``resolution`` like in
    training. The model's train/eval mode and memory layout are restored afterwards.
    """
    n = len(x)
    if n == 0:
        raise ValueError("evaluating a model needs at least one example")
    dev = torch.device(device)
    xt = _as_tensor(x, torch.float32)
    # channels_last: ~25 % faster CPU inference too (see train_model); a model that came
    # in the default layout leaves in it (safetensors and ONNX want contiguous weights)
    fmt = torch.channels_last if xt.dim() == 4 else torch.contiguous_format
    restore = _layout(model)
    model.to(dev, memory_format=fmt)
    was_training = model.training
    model.eval()
    outs = []
    try:
        with torch.no_grad():
            for i in range(0, n, batch_size):
                xb = _resize(xt[i : i + batch_size].to(dev, non_blocking=True), resolution)
                outs.append(model(xb.contiguous(memory_format=fmt)).float().cpu())
    finally:
        model.train(was_training)
        model.to(memory_format=restore)
    return torch.cat(outs)


def score_model(
    model: nn.Module,
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    task: Any,
    batch_size: int = 512,
    resolution: int | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """The task's metrics (unprefixed: ``accuracy``, ``rmse`` ...) of ``model`` on ``x, y``."""
    if len(y) == 0:
        raise ValueError("evaluating a model needs at least one example")
    out = model_outputs(model, x, batch_size, resolution, device)
    return task.metrics(out, task.encode(y))


def _layout(model: nn.Module) -> torch.memory_format:
    """The memory format of ``model``'s 4-d weights: of the first whose two layouts differ
    (a 1-channel or 1x1 kernel reads as both), the default if none does."""
    for p in model.parameters():
        if p.dim() == 4:
            cl = p.is_contiguous(memory_format=torch.channels_last)
            if cl != p.is_contiguous():
                return torch.channels_last if cl else torch.contiguous_format
    return torch.contiguous_format


def _optimizer(
    model: nn.Module, name: str, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=momentum > 0
        )
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise NasforgeError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")


def train_model(
    model: nn.Module,
    data: Dataset,
    *,
    epochs: int,
    data_fraction: float = 1.0,
    resolution: int | None = None,
    batch_size: int = 128,
    optimizer: str = "sgd",
    lr: float | None = None,
    momentum: float = 0.9,
    weight_decay: float | None = None,
    label_smoothing: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    deadline: float | None = None,
    on_epoch: EpochCallback | None = None,
    eval_every_epoch: bool | None = None,
    seconds: float | None = None,
    augment: str = "none",
    warmup: float = 0.0,
    include_val: bool = False,
    max_val: int | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place on ``data``'s training split; return its history.

    SGD (Nesterov momentum, default lr 0.05, weight decay 5e-4) or AdamW (lr 1e-3,
    weight decay 0.05) with a per-step cosine schedule to zero over all epochs.
    ``data_fraction`` trains on a seeded stratified subset of the training split;
    ``resolution`` resizes inputs (bilinear) to a square, in training and validation.
    ``deadline`` is a ``time.monotonic()`` time: past it, :class:`TimeoutError` is raised
    (checked between steps). A non-finite training loss raises :class:`FloatingPointError`.

    The validation split is scored after every epoch when ``on_epoch`` is given (or
    ``eval_every_epoch``), else only after the last. ``on_epoch(epoch, record)`` gets
    ``{"epoch", "train_loss", "val_<metric>"...}`` (the data's task's metrics: accuracy
    and loss for classification); returning ``False`` stops.

    ``seconds`` makes the budget wall-clock time instead of epochs: training stops when
    that much time has passed (``epochs`` is then only a cap) and the learning-rate
    schedule runs over the time, so a network uses exactly its share whatever its speed
    (a bigger one sees fewer examples: the trade-off a time budget is about). ``warmup``
    is the share of the schedule with a linear warm-up. ``augment``: ``"flip"`` (random
    horizontal flips) or ``"flip+shift"`` (and random shifts of up to 2 pixels), for
    images. ``include_val`` trains on the training *and* validation splits (the final
    model: nothing is left to validate on, so the validation figures are not computed and
    are NaN); ``max_val`` scores on a fixed stratified part of
    the validation split.

    Returns ``{"epochs" (run, fractional with ``seconds``), "train_loss",
    "val_accuracy", "val_loss", "curve" (one record per epoch), "stopped_early",
    "num_train", "train_time_s", "lr", "weight_decay", "steps"}``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not 0.0 < data_fraction <= 1.0:
        raise ValueError(f"data_fraction must be in (0, 1], got {data_fraction}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds must be a positive number, got {seconds}")
    if augment not in AUGMENTS:
        raise NasforgeError(f"augment must be one of {', '.join(AUGMENTS)}, got {augment!r}")
    if not 0.0 <= warmup < 1.0:
        raise ValueError(f"warmup must be in [0, 1), got {warmup}")
    optimizer = optimizer.lower()
    lr = DEFAULT_LR.get(optimizer, 0.0) if lr is None else float(lr)
    wd = DEFAULT_WEIGHT_DECAY.get(optimizer, 0.0) if weight_decay is None else float(weight_decay)
    if eval_every_epoch is None:
        eval_every_epoch = on_epoch is not None
    t_start = time.perf_counter()
    dev = torch.device(device)

    def check_deadline() -> None:
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError("training passed its deadline")

    torch.manual_seed(seed)  # dropout and other stochastic layers
    gen = torch.Generator().manual_seed(seed)  # batch order, independent of the global RNG
    task = data.make_task()
    x_all, y_all = data.x_train, data.y_train
    if include_val and len(data.y_val):
        x_all = np.concatenate([x_all, data.x_val])
        y_all = np.concatenate([y_all, data.y_val])
    idx = data.subset(y_all, data_fraction, seed)
    x = _as_tensor(x_all[idx], torch.float32)
    y = task.encode(y_all[idx])
    x_val, y_val = data.x_val, data.y_val
    if include_val:  # it trains on them: scoring them would cost time and say nothing
        x_val, y_val = x_val[:0], y_val[:0]
    if max_val is not None and 0 < max_val < len(y_val):
        keep = data.subset(y_val, max_val / len(y_val), 0)
        x_val, y_val = x_val[keep], y_val[keep]

    def validate() -> dict[str, float]:
        if not len(y_val):
            return {f"val_{k}": math.nan for k in task.metric_names}
        m = score_model(model, x_val, y_val, task, resolution=resolution, device=dev)
        return {f"val_{k}": v for k, v in m.items()}

    x = _resize_all(x, resolution)
    if dev.type != "cpu":  # the whole (small) split on the device: no per-step copies
        x, y = x.to(dev), y.to(dev)
    n = len(y)
    if n == 0:
        raise ValueError("no training examples")
    bs = min(batch_size, n)
    # a last batch of one breaks BatchNorm in train mode: drop that single example
    n_used = n - 1 if n % bs == 1 and n > 1 else n
    steps_per_epoch = math.ceil(n_used / bs)
    total_steps = epochs * steps_per_epoch
    flip = augment.startswith("flip") and x.dim() == 4
    shift = 2 if augment == "flip+shift" and x.dim() == 4 and min(x.shape[-2:]) > 8 else 0
    t_sched = time.monotonic()

    def progress(step: int) -> float:
        """Share of the schedule done: by steps, or by time under a ``seconds`` budget
        (counted from the first step, so at least one step is always taken)."""
        nonlocal t_sched
        if seconds is None:
            return step / total_steps
        if step == 0:
            t_sched = time.monotonic()
        return (time.monotonic() - t_sched) / seconds

    def lr_at(p: float) -> float:
        if p < warmup:
            return lr * (p + 1.0 / total_steps) / warmup
        return 0.5 * lr * (1.0 + math.cos(math.pi * min(1.0, (p - warmup) / (1.0 - warmup))))

    # channels_last makes oneDNN's CPU convolutions (depthwise ones above all) 1.5-2.7x
    # faster here; weights go back to the default layout afterwards (safetensors, ONNX).
    fmt = torch.channels_last if x.dim() == 4 else torch.contiguous_format
    model.to(dev, memory_format=fmt)
    opt = _optimizer(model, optimizer, lr, momentum, wd)
    loss_fn = task.loss(label_smoothing)
    curve: list[dict[str, float]] = []
    step = 0
    stopped = False
    check_deadline()
    out_of_time = False
    for epoch in range(1, epochs + 1):
        model.train()
        perm = torch.randperm(n, generator=gen)[:n_used]
        if dev.type != "cpu":
            perm = perm.to(dev)
        loss_sum = torch.zeros((), device=dev)
        seen = 0
        for i in range(0, n_used, bs):
            check_deadline()
            p = progress(step)
            if seconds is not None and p >= 1.0:
                out_of_time = True
                break
            for g in opt.param_groups:
                g["lr"] = lr_at(p)
            b = perm[i : i + bs]
            xb, yb = x[b], y[b]
            if flip or shift:
                xb = _augment(xb, gen, flip, shift)
            xb = xb.contiguous(memory_format=fmt)
            loss = loss_fn(model(xb), yb)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"non-finite training loss ({loss.item()}) at epoch {epoch}, step "
                    f"{i // bs + 1}; the network diverged (try a lower lr, now {lr:g})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(b)
            seen += len(b)
            step += 1
        if seen == 0 and curve:  # the time ran out right at an epoch boundary
            break
        rec: dict[str, float] = {"epoch": epoch if not out_of_time else
                                 epoch - 1 + seen / n_used,
                                 "train_loss": float(loss_sum) / max(seen, 1)}
        last = epoch == epochs or out_of_time
        if eval_every_epoch or last:
            check_deadline()
            rec.update(validate())
        curve.append(rec)
        if out_of_time:
            break
        if on_epoch is not None and on_epoch(epoch, dict(rec)) is False and not last:
            stopped = True
            break
    if "val_loss" not in curve[-1]:  # stopped at an epoch boundary: score it now
        curve[-1].update(validate())
    model.to(memory_format=torch.contiguous_format)
    final = curve[-1]
    return {
        "epochs": float(final["epoch"]) if seconds is not None else len(curve),
        "steps": step,
        "train_loss": final["train_loss"],
        **{k: v for k, v in final.items() if k.startswith("val_")},
        "curve": curve,
        "stopped_early": stopped,
        "num_train": n,
        "train_time_s": time.perf_counter() - t_start,
        "lr": lr,
        "weight_decay": wd,
    }


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
    })

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
        c, h, w = data.input_shape
        r = s["resolution"]
        shape = (c, r, r) if r is not None else (c, h, w)
        torch.manual_seed(seed)
        model = space.build(arch, shape, data.n_outputs)
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
