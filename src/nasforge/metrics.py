"""Model cost metrics, all measured on the model itself: params, FLOPs, latency, memory.

Search objectives such as "accurate under 5 ms" are only as good as these numbers,
so nothing here is estimated from layer shapes by hand: FLOPs come from torch's own
``FlopCounterMode``, latency from timed forwards, memory from tracking the tensors a
forward really allocates.
"""

from __future__ import annotations

import os
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def _device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (cpu for a stateless model)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _dtype(model: nn.Module) -> torch.dtype:
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _input(model: nn.Module, input_shape: Sequence[int], batch_size: int) -> torch.Tensor:
    """A random batch of ``input_shape`` (C, H, W) on the model's device and dtype."""
    g = torch.Generator().manual_seed(0)  # fixed data: no effect on the global RNG
    x = torch.randn((batch_size, *[int(s) for s in input_shape]), generator=g)
    return x.to(device=_device(model), dtype=_dtype(model))


@contextmanager
def _eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and no_grad for the duration, then the model's own mode back."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (shared parameters counted once)."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only))


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs of one forward of one sample of ``input_shape`` (C, H, W), eval mode.

    Counted by ``torch.utils.flop_counter.FlopCounterMode``: matmuls and convolutions
    as 2 x multiply-accumulates (so ``Linear(10, 20)`` is 400); element-wise ops,
    normalization, pooling and activations are not counted, as is usual for NAS papers.
    """
    from torch.utils.flop_counter import FlopCounterMode

    x = _input(model, input_shape, 1)
    with _eval(model), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


@contextmanager
def _threads(n: int | None) -> Iterator[int]:
    """Run with ``n`` intra-op threads (None: leave as is), restoring torch's setting after."""
    before = torch.get_num_threads()
    if n is not None:
        if n < 1:
            raise ValueError(f"threads must be >= 1, got {n}")
        torch.set_num_threads(int(n))
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _timeit(
    fn: Callable[[], Any], warmup: int, repeats: int, sync: Callable[[], None]
) -> np.ndarray:
    """Milliseconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        fn()
    sync()
    times = np.empty(repeats)
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times[i] = (time.perf_counter() - t0) * 1e3
    return times


def _summary(times: np.ndarray, threads: int, batch_size: int) -> dict[str, float]:
    return {
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "mean_ms": float(times.mean()),
        "min_ms": float(times.min()),
        "threads": int(threads),
        "batch_size": int(batch_size),
        "repeats": len(times),
    }


def measure_latency(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    threads: int | None = None,
) -> dict[str, float]:
    """Wall-clock time of one inference forward on the model's device (eval, no_grad).

    Returns ``median_ms`` (the robust number to report), ``p90_ms``, ``mean_ms``,
    ``min_ms`` and the ``threads`` used. ``threads`` sets torch's intra-op thread count
    for the measurement only (None: the caller's current setting); it is restored after.
    On CUDA each call is synchronized so the time is the kernels', not the launch's.
    """
    dev = _device(model)
    x = _input(model, input_shape, batch_size)
    with _threads(threads) as n, _eval(model):
        times = _timeit(lambda: model(x), warmup, repeats, lambda: _sync(dev))
    return _summary(times, n, batch_size)


def measure_onnx_latency(
    onnx_path: str | os.PathLike[str],
    input_shape: Sequence[int],
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    threads: int | None = None,
) -> dict[str, float]:
    """Wall-clock time of one forward of an exported ONNX model with onnxruntime on CPU.

    ``threads`` becomes ``intra_op_num_threads`` (None: torch's current thread count,
    so the number is comparable to :func:`measure_latency`). Same keys as
    :func:`measure_latency`. The model's first input gets a float32 batch.
    """
    import onnxruntime as ort

    n = int(threads) if threads is not None else torch.get_num_threads()
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = n
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch_size, *[int(s) for s in input_shape])).astype(np.float32)
    times = _timeit(lambda: sess.run(None, {name: x}), warmup, repeats, lambda: None)
    return _summary(times, n, batch_size)


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of tensor storages alive while it is active, and their peak.

    Every op's outputs are seen here; a storage not seen before is added and a
    weakref finalizer subtracts it when Python frees it (storage objects are preserved
    by torch, so the finalizer fires when the last tensor viewing it dies).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    def track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        if st in self._seen:
            return
        nbytes = int(st.nbytes())
        self._seen[st] = nbytes
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(st, self._free, nbytes)

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if (
                isinstance(t, torch.Tensor)
                and t.layout == torch.strided
                and t.device.type != "meta"
            ):
                self.track(t)
        return out


def peak_memory_mb(model: nn.Module, input_shape: Sequence[int], batch_size: int = 1) -> float:
    """Measured peak tensor memory (MiB) of one inference forward, weights included.

    Counts the storages of the parameters and buffers, the input batch, and every
    tensor an op of the forward allocates, while it is alive (freed activations are
    subtracted), and returns the highest total reached. On CUDA the allocator's own
    peak counter is used instead. Not counted: allocator caching/fragmentation,
    library-internal scratch buffers that are not torch tensors, and Python overhead.
    """
    dev = _device(model)
    x = _input(model, input_shape, batch_size)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        with _eval(model):
            model(x)
        torch.cuda.synchronize(dev)
        return torch.cuda.max_memory_allocated(dev) / 2**20
    mode = _LiveTensorBytes()
    for t in [*model.parameters(), *model.buffers(), x]:
        mode.track(t)
    with _eval(model), mode:
        out = model(x)
    peak = mode.peak
    del out
    return peak / 2**20
