"""Where trials run: a tiny executor interface between the search loop and the workers.

The loop gives an executor the trial *context* once (:meth:`Executor.bind`: estimator,
space, dataset) and then submits only ``(arch, fidelity)`` pairs
(:meth:`Executor.submit_trial`), waiting on the returned ``concurrent.futures.Future``
objects. So running trials in this process, in a local process pool or on a Ray
cluster is a choice of executor, not a change to the loop, and the dataset crosses a
process boundary once per worker (or once into Ray's object store), never per trial.

The process pool and Ray executors are fault tolerant: a worker that dies during a trial
(``kill -9``, the OOM killer, a segfault) is replaced and the trial retried up to
``retries`` times before it is reported as failed; a trial that runs past
``trial_timeout`` has its worker killed by the driver (not just asked nicely by the
training loop) and fails. Only the driver ever writes the run's store.

Layout: :mod:`~nasforge.execution.base` (the interface, errors, shared plumbing),
:mod:`~nasforge.execution.local` (in-process), :mod:`~nasforge.execution.pool` (process
and thread pools), :mod:`~nasforge.execution.ray_executor` (Ray, imported lazily); the
factory is here.
"""

from __future__ import annotations

from nasforge.errors import NasforgeError
from nasforge.execution.base import (
    ATTEMPTS_ATTR,
    EXECUTOR_KINDS,
    Executor,
    ExecutorError,
    ExecutorLostError,
    TrialTimeoutError,
    WorkerDiedError,
    _check_retries,
    _check_timeout,
    _check_workers,
    cpu_count,
    default_threads,
    run_trial,
)
from nasforge.execution.local import InProcessExecutor
from nasforge.execution.pool import WORKER_ENV, PoolExecutor
from nasforge.execution.ray_executor import RAY_CONNECT_TIMEOUT, RayExecutor

__all__ = [
    "ATTEMPTS_ATTR",
    "EXECUTOR_KINDS",
    "RAY_CONNECT_TIMEOUT",
    "WORKER_ENV",
    "Executor",
    "ExecutorError",
    "ExecutorLostError",
    "InProcessExecutor",
    "PoolExecutor",
    "RayExecutor",
    "TrialTimeoutError",
    "WorkerDiedError",
    "cpu_count",
    "default_threads",
    "make_executor",
    "run_trial",
    "validate_execution",
]


def make_executor(kind: str = "auto", workers: int = 1, *, ray_address: str | None = None,
                  trial_timeout: float | None = None, retries: int = 1) -> Executor:
    """The executor for ``--executor KIND --workers N`` (see :data:`EXECUTOR_KINDS`).

    ``auto``: in this process for one worker, a process pool for more (so that training
    trials really run in parallel, each with its share of the cores); ``ray`` when a
    ``ray_address`` is given.
    """
    kind = validate_execution(kind, workers, ray_address, trial_timeout, retries)
    if kind == "auto":
        kind = "ray" if ray_address else ("inprocess" if workers == 1 else "process")
    if kind == "inprocess":
        return InProcessExecutor(trial_timeout=trial_timeout)
    if kind in ("process", "thread"):
        return PoolExecutor(workers, kind=kind, trial_timeout=trial_timeout, retries=retries)
    return RayExecutor(workers, address=ray_address, trial_timeout=trial_timeout,
                       retries=retries)


def validate_execution(kind: str, workers: int, ray_address: str | None,
                       trial_timeout: float | None, retries: int) -> str:
    """Check execution options without starting anything; returns the normalized kind."""
    if not isinstance(kind, str) or kind.strip().lower() not in EXECUTOR_KINDS:
        raise NasforgeError(f"unknown executor {kind!r}; valid executors: "
                            f"{', '.join(EXECUTOR_KINDS)}")
    kind = kind.strip().lower()
    _check_workers(workers)
    _check_timeout(trial_timeout)
    _check_retries(retries)
    if kind == "inprocess" and workers != 1:
        raise NasforgeError(f"the inprocess executor runs one trial at a time; got workers="
                            f"{workers} (use --executor process)")
    if ray_address is not None and (not isinstance(ray_address, str) or not ray_address.strip()):
        raise NasforgeError(f"ray_address must be a non-empty address, got {ray_address!r}")
    if ray_address and kind not in ("auto", "ray"):
        raise NasforgeError(f"ray_address only applies to the ray executor, not {kind!r}")
    if kind == "thread" and trial_timeout is not None:
        raise NasforgeError("trial_timeout needs process or ray workers (threads cannot be "
                            "stopped)")
    return kind
