"""The executor interface, its errors, and the plumbing every executor shares.

Kept apart from the concrete executors so that the in-process, pool and Ray modules
depend on one small module, not on each other.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import signal
import threading
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result

if TYPE_CHECKING:
    from nasforge.data import Dataset
    from nasforge.estimators.base import Estimator
    from nasforge.spaces.base import Arch, SearchSpace

#: attribute set on a trial's Future: how many times the trial was started (retries + 1)
ATTEMPTS_ATTR = "nasforge_attempts"
#: executor names accepted by :func:`make_executor` (and ``--executor``)
EXECUTOR_KINDS = ("auto", "inprocess", "process", "thread", "ray")


class TrialTimeoutError(Exception):
    """A trial ran past its time-out and was stopped (its worker killed, for pools)."""


class WorkerDiedError(Exception):
    """The worker process running a trial died (killed, OOM killer, crash) too often."""


class ExecutorError(NasforgeError):
    """Workers cannot be started or reached: a set-up problem that stops the search."""


class ExecutorLostError(ExecutorError):
    """The executor's cluster went away mid-search (a Ray head stopped): the run is
    interrupted, not failed, and resumes once the cluster is back."""



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


def cpu_count() -> int:
    """CPUs this process may use (the affinity mask, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads(workers: int) -> int:
    """Torch threads per worker so that ``workers`` workers share the cores, not fight."""
    return max(1, cpu_count() // max(1, int(workers)))


def _check_timeout(trial_timeout: float | None) -> float | None:
    if trial_timeout is None:
        return None
    if isinstance(trial_timeout, bool) or not isinstance(trial_timeout, int | float) \
            or not trial_timeout > 0 or trial_timeout == float("inf"):
        raise NasforgeError(f"trial_timeout must be a positive number of seconds, "
                            f"got {trial_timeout!r}")
    return float(trial_timeout)


def _check_retries(retries: int) -> int:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise NasforgeError(f"retries must be a non-negative integer, got {retries!r}")
    return retries


def _check_workers(workers: int) -> int:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise NasforgeError(f"workers must be a positive integer, got {workers!r}")
    return workers


def _timeout_text(t: float) -> str:
    return f"{t:.1f}" if t >= 0.1 else f"{t:.3g}"


class Executor(ABC):
    """Runs submitted calls; ``max_workers`` calls may be in flight at once.

    Subclasses implement :meth:`submit`; :meth:`bind` / :meth:`submit_trial` default to
    submitting :func:`run_trial` with the whole context, which is right for executors
    that share memory with the driver (in-process, threads).
    """

    max_workers: int = 1
    trial_timeout: float | None = None
    retries: int = 0

    @abstractmethod
    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        """Start ``fn(*args)`` and return a Future of its result."""

    def bind(self, estimator: Estimator, space: SearchSpace, data: Dataset | None) -> None:
        """Give the executor what every trial needs, once, before the first trial."""
        self._context = (estimator, space, data)

    def submit_trial(self, arch: Arch, fidelity: Mapping[str, Any] | None) -> cf.Future:
        """Evaluate ``arch`` with the bound context; the Future holds a :class:`Result`."""
        ctx = getattr(self, "_context", None)
        if ctx is None:
            raise RuntimeError("Executor.bind() must be called before submit_trial()")
        return self.submit(run_trial, *ctx, arch, fidelity)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """Release the workers (no-op for executors that hold none)."""
        return None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _same_context(a: tuple[Any, ...] | None, b: tuple[Any, ...]) -> bool:
    return a is not None and len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


@contextlib.contextmanager
def _alarm(t: float | None) -> Any:
    """Interrupt the code inside with :class:`TrialTimeoutError` after ``t`` seconds.

    ``SIGALRM``: main thread, POSIX; a no-op elsewhere. The trial is interrupted at its
    next Python bytecode (a sleep is cut short), so it cannot stop a hang inside C code:
    for that, pool and Ray executors also kill the worker from the driver.
    """
    if t is None or threading.current_thread() is not threading.main_thread() \
            or not hasattr(signal, "setitimer"):
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise TrialTimeoutError(f"trial timed out after {_timeout_text(t)} s (trial_timeout)")

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, t)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class _Task:
    id: int
    future: cf.Future
    kind: str  # "trial" or "call"
    payload: tuple[Any, ...]
    attempts: int = 0
    deadline: float | None = None
    timed_out: bool = False


def _settle(fut: cf.Future, *, result: Any = None, exc: BaseException | None = None,
            attempts: int | None = None) -> None:
    """Complete ``fut`` (once; a cancelled or completed future is left alone)."""
    if attempts is not None:
        setattr(fut, ATTEMPTS_ATTR, attempts)
    if fut.done():
        return
    if not fut.running() and not fut.set_running_or_notify_cancel():
        return
    with contextlib.suppress(cf.InvalidStateError):
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)
