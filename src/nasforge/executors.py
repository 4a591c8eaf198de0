"""Old import path of :mod:`nasforge.execution`, kept for one release (issue 11).

Re-exports every name this module used to define, private ones included, so code that
imports from here keeps working. Rebinding a name here (e.g. ``monkeypatch.setattr``)
does not reach the code, which looks names up in its ``nasforge.execution`` module.
"""

from nasforge.execution import make_executor, validate_execution
from nasforge.execution.base import (
    ATTEMPTS_ATTR,
    EXECUTOR_KINDS,
    Executor,
    ExecutorError,
    ExecutorLostError,
    TrialTimeoutError,
    WorkerDiedError,
    _alarm,
    _check_retries,
    _check_timeout,
    _check_workers,
    _same_context,
    _settle,
    _Task,
    _timeout_text,
    cpu_count,
    default_threads,
    run_trial,
)
from nasforge.execution.local import InProcessExecutor
from nasforge.execution.pool import (
    FORKSERVER_PRELOAD,
    WORKER_ENV,
    PoolExecutor,
    _death_text,
    _mp_context,
    _pickle_context,
    _ProcessPool,
    _watch_parent,
    _Worker,
    _worker_env,
    _worker_main,
)
from nasforge.execution.ray_executor import (
    _RAY_CRASHES,
    RAY_CONNECT_TIMEOUT,
    RayExecutor,
    _probe_ray_address,
    _ray_task,
)

__all__ = [
    "ATTEMPTS_ATTR",
    "EXECUTOR_KINDS",
    "FORKSERVER_PRELOAD",
    "RAY_CONNECT_TIMEOUT",
    "WORKER_ENV",
    "_RAY_CRASHES",
    "Executor",
    "ExecutorError",
    "ExecutorLostError",
    "InProcessExecutor",
    "PoolExecutor",
    "RayExecutor",
    "TrialTimeoutError",
    "WorkerDiedError",
    "_ProcessPool",
    "_Task",
    "_Worker",
    "_alarm",
    "_check_retries",
    "_check_timeout",
    "_check_workers",
    "_death_text",
    "_mp_context",
    "_pickle_context",
    "_probe_ray_address",
    "_ray_task",
    "_same_context",
    "_settle",
    "_timeout_text",
    "_watch_parent",
    "_worker_env",
    "_worker_main",
    "cpu_count",
    "default_threads",
    "make_executor",
    "run_trial",
    "validate_execution",
]
