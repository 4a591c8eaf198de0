"""Where trials run: a tiny executor interface between the search loop and the workers.

The loop only ever calls :meth:`Executor.submit` and waits on the returned
``concurrent.futures.Future`` objects, so running trials in this process, in a local
process pool, or on a Ray cluster is a choice of executor, not a change to the loop.
What is submitted is :func:`run_trial`, a top-level (hence picklable) function.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result

if TYPE_CHECKING:
    from nasforge.data import Dataset
    from nasforge.estimators.base import Estimator
    from nasforge.spaces.base import Arch, SearchSpace


def run_trial(
    estimator: Estimator,
    space: SearchSpace,
    data: Dataset | None,
    arch: Arch,
    fidelity: Mapping[str, Any] | None,
) -> Result:
    """Evaluate one architecture; any exception becomes a failed :class:`Result`.

    ``Estimator.evaluate`` already catches, but a custom estimator may override it, and a
    failure must never reach the loop as an exception (the search goes on).
    """
    try:
        res = estimator.evaluate(arch, space, data, fidelity)
    except KeyboardInterrupt:
        raise
    except Exception as e:
        return Result.failed(f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}")
    if not isinstance(res, Result):
        return Result.failed(f"estimator returned {type(res).__name__}, not a Result")
    return res


class Executor(ABC):
    """Runs submitted calls; ``max_workers`` calls may be in flight at once."""

    max_workers: int = 1

    @abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        """Start ``fn(*args)`` and return a Future of its result."""

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Release the workers (no-op for executors that hold none)."""
        return None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


class InProcessExecutor(Executor):
    """Runs the call right away, in this process and thread: simplest and most debuggable.

    ``KeyboardInterrupt`` is not captured in the Future but propagates from
    :meth:`submit`, so Ctrl-C stops the search at once.
    """

    max_workers = 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        fut: cf.Future = cf.Future()
        fut.set_running_or_notify_cancel()
        try:
            fut.set_result(fn(*args))
        except Exception as e:
            fut.set_exception(e)
        return fut


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class PoolExecutor(Executor):
    """A local ``concurrent.futures`` pool of processes (default, ``spawn``) or threads.

    Each process worker runs torch with ``threads_per_worker`` threads so that
    ``max_workers`` workers share the cores instead of oversubscribing them.
    """

    def __init__(self, max_workers: int = 2, kind: str = "process", threads_per_worker: int = 1):
        if max_workers < 1:
            raise NasforgeError("max_workers must be at least 1")
        if kind not in ("process", "thread"):
            raise NasforgeError(f"kind must be 'process' or 'thread', not {kind!r}")
        self.max_workers = int(max_workers)
        self.kind = kind
        self._pool: cf.Executor
        if kind == "process":
            self._pool = cf.ProcessPoolExecutor(
                max_workers=self.max_workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(threads_per_worker,),
            )
        else:
            self._pool = cf.ThreadPoolExecutor(max_workers=self.max_workers,
                                               thread_name_prefix="nasforge-trial")

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        return self._pool.submit(fn, *args)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)
