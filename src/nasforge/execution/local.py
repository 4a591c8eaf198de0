"""Executors that run trials in the driver process itself.

No worker, no pickling: the simplest and most debuggable way to run a search.
The thread pool lives with the process pool in :mod:`nasforge.execution.pool`, as
both are kinds of :class:`~nasforge.execution.pool.PoolExecutor`.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable
from typing import Any

from nasforge.execution.base import Executor, _alarm, _check_timeout


class InProcessExecutor(Executor):
    """Runs the call right away, in this process and thread: simplest and most debuggable.

    ``KeyboardInterrupt`` is not captured in the Future but propagates from
    :meth:`submit`, so Ctrl-C stops the search at once. A ``trial_timeout`` is enforced
    with ``SIGALRM`` (main thread, POSIX): the trial is interrupted where it stands.
    """

    max_workers = 1

    def __init__(self, trial_timeout: float | None = None) -> None:
        self.trial_timeout = _check_timeout(trial_timeout)

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        fut: cf.Future = cf.Future()
        fut.set_running_or_notify_cancel()
        try:
            with _alarm(self.trial_timeout):
                out = fn(*args)
            fut.set_result(out)
        except Exception as e:
            fut.set_exception(e)
        return fut
