"""The local pool of worker processes (or threads): :class:`PoolExecutor`.

Worker processes are started by ``forkserver`` (else ``spawn``) with
:func:`_worker_main` as target, so this module must stay importable by its own path.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import multiprocessing
import multiprocessing.connection as mpc
import os
import pickle
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from nasforge.errors import NasforgeError
from nasforge.execution.base import (
    Executor,
    ExecutorError,
    TrialTimeoutError,
    WorkerDiedError,
    _check_retries,
    _check_timeout,
    _same_context,
    _settle,
    _Task,
    _timeout_text,
    default_threads,
    run_trial,
)

if TYPE_CHECKING:
    from nasforge.data import Dataset
    from nasforge.estimators.base import Estimator
    from nasforge.spaces.base import Arch, SearchSpace


def _watch_parent(driver: int) -> None:
    """Exit when the driver is gone (kill -9): no orphan keeps computing a dead search.

    The parent is the driver (spawn) or the fork server, which exits with the driver;
    either way the parent changes when it dies, and the driver's pid disappears.
    """
    parent = os.getppid()
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(3)
        try:
            os.kill(driver, 0)
        except ProcessLookupError:
            os._exit(3)
        except OSError:
            pass


def _worker_main(conn: mpc.Connection, threads: int, parent: int) -> None:
    """A pool worker: receive the context once, then run tasks until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import torch

        torch.set_num_threads(threads)
        ctx = pickle.loads(conn.recv_bytes())
    except BaseException:  # noqa: BLE001 - reported to the driver, which stops the search
        with contextlib.suppress(Exception):
            conn.send(("init_error", None, traceback.format_exc(limit=6)))
        return
    conn.send(("ready", None, os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        tid, kind, payload = msg
        if kind == "bind":  # the pool was re-bound to a new context: stay warm, swap it
            try:
                ctx = pickle.loads(payload)
            except BaseException:  # noqa: BLE001 - reported like a start-up failure
                with contextlib.suppress(Exception):
                    conn.send(("init_error", None, traceback.format_exc(limit=6)))
                return
            continue
        try:
            if kind == "trial":
                out: Any = run_trial(*ctx, *payload)
            else:
                fn, args = payload
                out = fn(*args)
            reply: tuple[str, int, Any] = ("ok", tid, out)
        except BaseException as e:  # noqa: BLE001 - shipped to the driver's Future
            reply = ("exc", tid, e)
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as e:  # noqa: BLE001 - an unpicklable result or exception
            conn.send(("exc", tid, RuntimeError(f"cannot send the result to the driver: {e!r}")))


#: environment of worker processes (and of the fork server they are forked from); values
#: the user set in the environment win. OpenMP threads that spin while they wait burn the
#: cores other workers need: on a busy 2-core machine, 2 spinning torch threads made a
#: trial 10-15x slower than 1 thread, passive ones cost ~10 %.
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


@contextlib.contextmanager
def _worker_env() -> Any:
    """Set :data:`WORKER_ENV` while a worker (or the fork server) is started."""
    added = {k: v for k, v in WORKER_ENV.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


class _Worker:
    """One worker process and the driver's end of its pipe."""

    def __init__(self, ctx: Any, blob: bytes, threads: int) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, threads, os.getpid()),
                                daemon=True, name="nasforge-worker")
        with _worker_env():
            self.proc.start()
        child.close()
        self.ready = False
        self.retired = False  # killed on purpose (re-bind): not a start-up failure
        self.task: _Task | None = None
        self.pid = self.proc.pid
        # a big context blocks until the worker has imported torch: send it off-thread
        self._sender = threading.Thread(target=self._send, args=(blob,), daemon=True)
        self._sender.start()

    def _send(self, blob: bytes) -> None:
        # TypeError/AttributeError: the pipe was closed under this thread (a pool shut
        # down while a worker still starts); the worker is going away, nothing to report
        with contextlib.suppress(OSError, EOFError, ValueError, TypeError, AttributeError):
            self.conn.send_bytes(blob)

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.kill()

    def close(self) -> None:
        if self._sender.is_alive():  # still sending the context: stop the reader first,
            self.kill()  # so the pipe is not closed under the sender thread
            self._sender.join(timeout=2.0)
        with contextlib.suppress(Exception):
            self.conn.close()
        with contextlib.suppress(Exception):
            self.proc.join(timeout=1.0)
        if self.proc.is_alive():
            self.kill()
            with contextlib.suppress(Exception):
                self.proc.join(timeout=1.0)


def _death_text(exitcode: int | None) -> str:
    if exitcode is None:
        return "is gone"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (kill -9, or the out-of-memory killer)" if -exitcode == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {exitcode}"


class _ProcessPool:
    """Long-lived worker processes, one task each, supervised by a monitor thread.

    Unlike ``concurrent.futures.ProcessPoolExecutor`` (where one dead worker breaks the
    whole pool and every pending future), the driver knows which worker runs which
    trial: it can kill just that worker on a time-out, replace a dead one, and retry
    only the trial that was on it.
    """

    #: workers that die before ever becoming ready, in a row, before giving up
    MAX_START_FAILURES = 3

    def __init__(self, n: int, threads: int, context: tuple[Any, ...], trial_timeout: float | None,
                 retries: int) -> None:
        self._blob = _pickle_context(context)
        self._ctx = _mp_context()
        self.n, self.threads = n, threads
        self.trial_timeout, self.retries = trial_timeout, retries
        self._lock = threading.Lock()
        self._pending: deque[_Task] = deque()
        self._ids = itertools.count()
        self._closed = False
        self._fatal: str | None = None
        self._start_failures = 0
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self._workers = [_Worker(self._ctx, self._blob, threads) for _ in range(n)]
        self._thread = threading.Thread(target=self._monitor, daemon=True,
                                        name="nasforge-pool-monitor")
        self._thread.start()

    # -- called from the driver ----------------------------------------------------------
    def submit(self, kind: str, payload: tuple[Any, ...]) -> cf.Future:
        fut: cf.Future = cf.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the process pool is shut down")
            if self._fatal is not None:
                fut.set_exception(ExecutorError(self._fatal))
                return fut
            self._pending.append(_Task(next(self._ids), fut, kind, payload))
        self._wake()
        return fut

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until every worker has its context (or ``timeout`` s); False on time-out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                if self._fatal is not None:
                    raise ExecutorError(self._fatal)
                if self._workers and all(w.ready for w in self._workers):
                    return True
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests and diagnostics)."""
        with self._lock:
            return [w.pid for w in self._workers if w.proc.is_alive()]

    def running(self) -> dict[int, int]:
        """``{worker pid: task id}`` of the tasks now running."""
        with self._lock:
            return {w.pid: w.task.id for w in self._workers if w.task is not None}

    def rebind(self, context: tuple[Any, ...]) -> None:
        """Swap the context of the warm workers (no new processes, torch stays imported).

        Work still queued or running belongs to the old context: it is cancelled.
        """
        blob = _pickle_context(context)
        stale = RuntimeError("the executor was re-bound to another search")
        with self._lock:
            self._blob = blob
            while self._pending:
                t = self._pending.popleft()
                _settle(t.future, exc=stale, attempts=t.attempts)
            for w in self._workers:
                if w.task is None and not w.retired:
                    # a worker still starting gets its first context before the new one:
                    # messages on a pipe stay in order, so it swaps before any trial
                    if not w.ready:
                        w._sender.join(timeout=120)
                    if not w._sender.is_alive():
                        try:
                            w.conn.send((None, "bind", blob))
                            continue
                        except Exception:  # noqa: BLE001 - dead: replaced by the monitor
                            pass
                if w.task is not None:
                    t, w.task = w.task, None
                    _settle(t.future, exc=stale, attempts=t.attempts)
                w.retired = True
                w.kill()  # still starting with the old context, or busy: start afresh
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._wake_w.send_bytes(b"x")

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        with self._lock:
            if self._closed:
                return
            if cancel_futures:
                while self._pending:
                    self._pending.popleft().future.cancel()
        if wait:
            while True:
                with self._lock:
                    busy = [t.future for t in self._pending] + [
                        w.task.future for w in self._workers if w.task is not None]
                    if not busy or self._fatal is not None:
                        break
                cf.wait(busy, timeout=0.5)
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
            left = list(self._pending) + [w.task for w in workers if w.task is not None]
            self._pending.clear()
        self._wake()
        self._thread.join(timeout=5.0)
        for w in workers:
            if wait and w.ready:
                with contextlib.suppress(Exception):
                    w.conn.send(None)
            else:
                w.kill()
        for w in workers:
            w.close()
        for t in left:
            if not t.future.done() and not t.future.cancel():
                _settle(t.future, exc=RuntimeError("the executor was shut down"))
        for c in (self._wake_r, self._wake_w):
            with contextlib.suppress(Exception):
                c.close()

    # -- the monitor thread ----------------------------------------------------------------
    def _monitor(self) -> None:
        try:
            self._monitor_loop()
        except BaseException as e:  # noqa: BLE001 - a bug here must not hang the search
            with self._lock:
                if not self._closed:
                    self._fail_all(f"the process pool's monitor thread failed: {e!r}\n"
                                   f"{traceback.format_exc(limit=6)}")

    def _monitor_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                self._dispatch()
                now = time.monotonic()
                deadlines = [w.task.deadline for w in self._workers
                             if w.task is not None and w.task.deadline is not None]
                for w in self._workers:
                    t = w.task
                    if t is not None and t.deadline is not None and now >= t.deadline \
                            and not t.timed_out:
                        t.timed_out = True
                        w.kill()  # the death is handled below, as a time-out
                waitables: list[Any] = [self._wake_r]
                by_obj: dict[Any, tuple[str, _Worker]] = {}
                for w in self._workers:
                    waitables += [w.conn, w.proc.sentinel]
                    by_obj[w.conn] = ("conn", w)
                    by_obj[w.proc.sentinel] = ("dead", w)
            timeout = 1.0
            if deadlines:
                timeout = min(timeout, max(0.01, min(deadlines) - now))
            try:
                ready = mpc.wait(waitables, timeout=timeout)
            except (OSError, ValueError):
                ready = []
                time.sleep(0.01)
            with self._lock:
                if self._closed:
                    return
                for obj in ready:
                    if obj is self._wake_r:
                        with contextlib.suppress(OSError, EOFError):
                            while self._wake_r.poll():
                                self._wake_r.recv_bytes()
                        continue
                    what, w = by_obj[obj]
                    if w not in self._workers:
                        continue  # already replaced in this round
                    if what == "conn":
                        self._receive(w)
                    else:
                        self._drain(w)
                        self._replace(w)

    def _dispatch(self) -> None:
        for w in self._workers:
            while self._pending and w.ready and w.task is None:
                t = self._pending.popleft()
                if t.future.cancelled():
                    continue
                if t.attempts == 0 and not t.future.set_running_or_notify_cancel():
                    continue
                t.attempts += 1
                if self.trial_timeout is not None and t.kind == "trial":
                    t.deadline = time.monotonic() + self.trial_timeout
                try:
                    w.conn.send((t.id, t.kind, t.payload))
                except (OSError, EOFError, ValueError):  # died meanwhile: its death retries it
                    w.task = t
                    break
                except Exception as e:  # noqa: BLE001 - an unpicklable call
                    _settle(t.future, exc=e, attempts=t.attempts)
                    continue
                w.task = t

    def _drain(self, w: _Worker) -> None:
        """Read whatever a dead worker managed to send before it died."""
        with contextlib.suppress(Exception):
            while w.conn.poll():
                if not self._receive(w):
                    break

    def _receive(self, w: _Worker) -> bool:
        try:
            status, tid, value = w.conn.recv()
        except (EOFError, OSError):
            return False  # the process is dying: its sentinel is (or will be) ready
        except Exception as e:  # noqa: BLE001 - a result the driver cannot unpickle
            t, w.task = w.task, None
            if t is not None:
                _settle(t.future, exc=RuntimeError(f"cannot read the trial's result: {e!r}"),
                        attempts=t.attempts)
            return True
        if status == "ready":
            w.ready = True
            self._start_failures = 0
        elif status == "init_error":
            self._fail_all(f"a worker process could not start:\n{value}")
        elif w.task is not None and w.task.id == tid:
            t, w.task = w.task, None
            if status == "ok":
                _settle(t.future, result=value, attempts=t.attempts)
            else:
                _settle(t.future, exc=value, attempts=t.attempts)
        return True

    def _replace(self, w: _Worker) -> None:
        """``w`` died: settle or requeue its task, and start a fresh worker in its place."""
        w.proc.join(timeout=1.0)
        code = w.proc.exitcode
        t, w.task = w.task, None
        self._workers.remove(w)
        w.close()
        if t is not None and not t.future.done():
            if t.timed_out:
                _settle(t.future, exc=TrialTimeoutError(
                    f"trial timed out after {_timeout_text(self.trial_timeout or 0.0)} s "
                    f"(trial_timeout); its worker process (pid {w.pid}) was killed"),
                    attempts=t.attempts)
            elif t.attempts <= self.retries:
                t.deadline = None
                self._pending.appendleft(t)  # retried first, on a fresh worker
            else:
                _settle(t.future, exc=WorkerDiedError(
                    f"the worker process (pid {w.pid}) running this trial {_death_text(code)}; "
                    f"attempts: {t.attempts} (retries={self.retries})"), attempts=t.attempts)
        if not w.ready and not w.retired:
            self._start_failures += 1
            if self._start_failures >= self.MAX_START_FAILURES and self._fatal is None:
                self._fail_all(f"worker processes keep dying before they are ready (the last "
                               f"{_death_text(code)}); check memory and the error output above")
        if self._fatal is None and not self._closed:
            self._workers.append(_Worker(self._ctx, self._blob, self.threads))

    def _fail_all(self, message: str) -> None:
        self._fatal = message
        for t in list(self._pending) + [w.task for w in self._workers if w.task is not None]:
            _settle(t.future, exc=ExecutorError(message), attempts=t.attempts)
        self._pending.clear()
        for w in self._workers:
            w.task = None


#: imported once by the fork server, so a new (or replacement) worker starts in milliseconds
FORKSERVER_PRELOAD = ["torch", "numpy", "nasforge.execution", "nasforge.estimators",
                      "nasforge.spaces", "nasforge.strategies"]


def _mp_context() -> Any:
    """``forkserver`` (a clean single-threaded parent with torch preloaded) where there is
    one, else ``spawn``; never plain ``fork`` of the driver, whose threads could deadlock it."""
    try:
        ctx = multiprocessing.get_context("forkserver")
    except ValueError:
        return multiprocessing.get_context("spawn")
    ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
    return ctx


def _pickle_context(context: tuple[Any, ...]) -> bytes:
    """The context, pickled once for all workers (and for every replacement worker)."""
    try:
        return pickle.dumps(context, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # noqa: BLE001 - lambdas, locks, open files, ...
        raise ExecutorError(
            f"cannot send the estimator, space and dataset to worker processes ({e}); "
            "define custom components at module level of an importable module, or run "
            "with one worker (workers=1)"
        ) from None


class PoolExecutor(Executor):
    """A local pool of worker processes (``forkserver``, else ``spawn``) or threads.

    Process workers receive the trial context once (when started) and then only
    ``(arch, fidelity)`` per trial; each runs torch with ``threads_per_worker`` threads
    (default: cores // workers) so that the workers share the cores instead of
    oversubscribing them. A dead worker is replaced and its trial retried up to
    ``retries`` times; ``trial_timeout`` is enforced by killing the worker. Thread
    workers share memory with the driver and cannot be stopped, so they take no
    time-out.
    """

    def __init__(self, max_workers: int = 2, kind: str = "process",
                 threads_per_worker: int | None = None, trial_timeout: float | None = None,
                 retries: int = 1):
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise NasforgeError(f"max_workers must be at least 1, got {max_workers!r}")
        if kind not in ("process", "thread"):
            raise NasforgeError(f"kind must be 'process' or 'thread', not {kind!r}")
        self.max_workers = int(max_workers)
        self.kind = kind
        self.trial_timeout = _check_timeout(trial_timeout)
        self.retries = _check_retries(retries)
        if kind == "thread" and self.trial_timeout is not None:
            raise NasforgeError("trial_timeout needs process workers (threads cannot be stopped)")
        self.threads = int(threads_per_worker) if threads_per_worker else \
            default_threads(self.max_workers)
        if self.threads < 1:
            raise NasforgeError(f"threads_per_worker must be at least 1, got {threads_per_worker}")
        self._context: tuple[Any, ...] | None = None
        self._procs: _ProcessPool | None = None
        self._threads: cf.ThreadPoolExecutor | None = None
        if kind == "thread":
            self._threads = cf.ThreadPoolExecutor(max_workers=self.max_workers,
                                                  thread_name_prefix="nasforge-trial")

    def bind(self, estimator: Estimator, space: SearchSpace, data: Dataset | None) -> None:
        ctx = (estimator, space, data)
        if _same_context(self._context, ctx) and (self._procs is not None or self.kind == "thread"):
            return  # already running with this context (e.g. warmed up by the caller)
        if self.kind == "process":
            if self._procs is not None:
                self._procs.rebind(ctx)  # warm workers keep running, with the new context
            else:
                self._procs = _ProcessPool(self.max_workers, self.threads, ctx,
                                           self.trial_timeout, self.retries)
        self._context = ctx

    def _pool(self) -> _ProcessPool:
        if self._procs is None:  # a plain submit() before any bind(): no context needed
            self._procs = _ProcessPool(self.max_workers, self.threads, (None, None, None),
                                       self.trial_timeout, self.retries)
        return self._procs

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        if self._threads is not None:
            return self._threads.submit(fn, *args)
        return self._pool().submit("call", (fn, args))

    def submit_trial(self, arch: Arch, fidelity: Mapping[str, Any] | None) -> cf.Future:
        if self._context is None:
            raise RuntimeError("Executor.bind() must be called before submit_trial()")
        if self._threads is not None:
            return self._threads.submit(run_trial, *self._context, arch, fidelity)
        return self._pool().submit("trial", (arch, fidelity))

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until every process worker is started and holds the bound context (e.g. to
        time trials without start-up); False when ``timeout`` s pass first."""
        return True if self._procs is None else self._procs.wait_ready(timeout)

    def worker_pids(self) -> list[int]:
        """Process ids of the live worker processes ([] for threads)."""
        return [] if self._procs is None else self._procs.pids()

    def running(self) -> dict[int, int]:
        """``{worker pid: task id}`` of the trials now running (process workers)."""
        return {} if self._procs is None else self._procs.running()

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=wait, cancel_futures=cancel_futures)
        if self._procs is not None:
            procs, self._procs = self._procs, None
            procs.shutdown(wait=wait, cancel_futures=cancel_futures)
        self._context = None
