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
from abc import ABC, abstractmethod
from collections import deque
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


# --------------------------------------------------------------------------- in-process
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


# ------------------------------------------------------------------------ process pool
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


@dataclass
class _Task:
    id: int
    future: cf.Future
    kind: str  # "trial" or "call"
    payload: tuple[Any, ...]
    attempts: int = 0
    deadline: float | None = None
    timed_out: bool = False


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
FORKSERVER_PRELOAD = ["torch", "numpy", "nasforge.executors", "nasforge.estimators",
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


# -------------------------------------------------------------------------------- Ray
def _ray_task(ctx: tuple[Any, ...], kind: str, payload: tuple[Any, ...], threads: int,
              timeout: float | None = None) -> Any:
    """What a Ray worker runs: a trial with the context from the object store, or a call.

    The time-out starts here, when the trial really starts (the driver cannot see that:
    a fresh Ray worker may take seconds to start); the driver's kill is the backstop.
    """
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if kind == "trial":
        with _alarm(timeout):
            return run_trial(*ctx, *payload)
    fn, args = payload
    return fn(*args)


#: Ray errors that mean the worker (or its node) died under the task, not the task failed
_RAY_CRASHES = ("WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError",
                "ObjectLostError", "OutOfMemoryError")


class RayExecutor(Executor):
    """Trials as Ray tasks: on a local Ray instance, or a cluster given by ``address``.

    The context is put into Ray's object store once (``ray.put``); each task gets a
    reference, so the dataset is not re-sent per trial (numpy arrays are read
    zero-copy from shared memory on each node). Ray's own task retries are off: dead
    workers are handled like in :class:`PoolExecutor`, so that retries are counted in
    the trial's ``attempt``. ``trial_timeout`` is enforced inside the task from its real
    start, and by the driver, which kills the worker of a task still running
    ``kill_grace`` seconds later (worker start-up time is invisible to it).
    """

    def __init__(self, max_workers: int | None = None, address: str | None = None,
                 trial_timeout: float | None = None, retries: int = 1,
                 threads_per_worker: int | None = None,
                 init_options: Mapping[str, Any] | None = None, kill_grace: float = 30.0) -> None:
        try:
            import ray
        except ImportError:
            raise ExecutorError(
                "the ray executor needs Ray: pip install 'nasforge[ray]' (or 'ray[default]')"
            ) from None
        self._ray = ray
        self.trial_timeout = _check_timeout(trial_timeout)
        self.retries = _check_retries(retries)
        self.kill_grace = float(kill_grace)
        if max_workers is not None:
            _check_workers(max_workers)
        self._owns_ray = False
        if not ray.is_initialized():
            opts: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                    "logging_level": "ERROR", "configure_logging": True}
            if address:
                opts["address"] = address
                _probe_ray_address(address)  # ray.init would retry an absent head forever
            else:
                opts["num_cpus"] = max_workers or cpu_count()
            opts.update(dict(init_options or {}))
            try:
                ray.init(**opts)
            except Exception as e:  # noqa: BLE001 - ConnectionError, ValueError, RuntimeError
                where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
                raise ExecutorError(f"cannot start or reach {where}: {type(e).__name__}: "
                                    f"{str(e).strip()[:500]}") from None
            self._owns_ray = True
        cpus = int(ray.cluster_resources().get("CPU", 1) or 1)
        self.max_workers = int(max_workers or cpus)
        self.threads = int(threads_per_worker) if threads_per_worker else \
            max(1, cpus // self.max_workers)
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
        self._ctx_ref: Any = None
        self._context: tuple[Any, ...] | None = None
        self._lock = threading.Lock()
        self._running: dict[int, tuple[_Task, Any, float]] = {}  # task id -> (task, ref, start)
        self._ids = itertools.count()
        self._closed = False
        self._none_ref = ray.put((None, None, None))
        #: set (with the reason) once the cluster stopped answering: every trial fails fast
        self._lost: str | None = None
        try:
            self._gcs = str(ray.get_runtime_context().gcs_address or "")
        except Exception:  # noqa: BLE001 - no liveness check without the address
            self._gcs = ""
        self._watch = threading.Thread(target=self._watchdog, daemon=True,
                                       name="nasforge-ray-timeouts")
        self._watch.start()

    def bind(self, estimator: Estimator, space: SearchSpace, data: Dataset | None) -> None:
        ctx = (estimator, space, data)
        if _same_context(self._context, ctx):
            return
        try:
            self._ctx_ref = self._ray.put(ctx)
        except Exception as e:  # noqa: BLE001 - unserializable component
            raise ExecutorError(f"cannot put the estimator, space and dataset into Ray's object "
                                f"store: {e}") from None
        self._context = ctx

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future:
        return self._start(_Task(next(self._ids), cf.Future(), "call", (fn, args)))

    def submit_trial(self, arch: Arch, fidelity: Mapping[str, Any] | None) -> cf.Future:
        if self._ctx_ref is None:
            raise RuntimeError("Executor.bind() must be called before submit_trial()")
        return self._start(_Task(next(self._ids), cf.Future(), "trial", (arch, fidelity)))

    def _start(self, t: _Task) -> cf.Future:
        if t.attempts == 0:
            t.future.set_running_or_notify_cancel()
        if self._lost is not None:
            _settle(t.future, exc=ExecutorLostError(self._lost), attempts=max(1, t.attempts))
            return t.future
        t.attempts += 1
        ctx = self._ctx_ref if t.kind == "trial" else self._none_ref
        ref = self._remote.remote(ctx, t.kind, t.payload, self.threads, self.trial_timeout)
        with self._lock:
            self._running[t.id] = (t, ref, time.monotonic())
        ref.future().add_done_callback(lambda f, t=t: self._done(t, f))
        return t.future

    def _done(self, t: _Task, f: cf.Future) -> None:
        ray = self._ray
        with self._lock:
            self._running.pop(t.id, None)
            closed = self._closed
        try:
            _settle(t.future, result=f.result(), attempts=t.attempts)
            return
        except BaseException as e:  # noqa: BLE001 - sorted out below
            err = e
        crashed = tuple(getattr(ray.exceptions, n) for n in _RAY_CRASHES
                        if isinstance(getattr(ray.exceptions, n, None), type))
        if t.timed_out:
            _settle(t.future, exc=TrialTimeoutError(
                f"trial timed out after {_timeout_text(self.trial_timeout or 0.0)} s "
                "(trial_timeout); its Ray worker was killed"), attempts=t.attempts)
        elif isinstance(err, crashed) and not closed:
            if t.attempts <= self.retries:
                self._start(t)
            else:
                _settle(t.future, exc=WorkerDiedError(
                    f"the Ray worker running this trial died ({type(err).__name__}); attempts: "
                    f"{t.attempts} (retries={self.retries})"), attempts=t.attempts)
        elif isinstance(err, ray.exceptions.RaySystemError):  # e.g. cannot unpickle the context
            _settle(t.future, exc=ExecutorError(
                f"Ray workers cannot run the trial: {str(err).strip().splitlines()[0][:300]}; "
                "custom estimators/spaces must be importable on the workers (install their "
                "module there, or pass a runtime_env in init_options)"), attempts=t.attempts)
        elif isinstance(err, ray.exceptions.RayTaskError):
            cause = getattr(err, "cause", None)
            _settle(t.future, exc=cause if isinstance(cause, BaseException) else err,
                    attempts=t.attempts)
        else:
            _settle(t.future, exc=err, attempts=t.attempts)

    def _alive(self) -> bool:
        """Whether the cluster's GCS still accepts a connection (True if unknown)."""
        import socket

        host, _, port = self._gcs.rpartition(":")
        if not host or not port.isdigit():
            return True
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2.0):
                return True
        except OSError:
            return False

    def _check_alive(self, state: dict[str, float]) -> None:
        """Every 2 s: a cluster unreachable for ``NASFORGE_RAY_LOST_S`` (10 s) is lost, and
        every running trial fails with :class:`ExecutorLostError` (Ray itself would kill
        this process after a minute, leaving the run marked running and locked)."""
        now = time.monotonic()
        if self._lost is not None or now - state.get("checked", 0.0) < 2.0:
            return
        state["checked"] = now
        if self._alive():
            state.pop("down_since", None)
            return
        since = state.setdefault("down_since", now)
        try:
            patience = float(os.environ.get("NASFORGE_RAY_LOST_S", 10.0))
        except ValueError:
            patience = 10.0
        if now - since < patience:
            return
        self._lost = (f"the Ray cluster ({self._gcs}) stopped answering {now - since:.0f} s "
                      "ago; completed trials are stored. Start the cluster again and resume "
                      "the run (nasforge resume RUN_DIR)")
        with self._lock:
            running = list(self._running.values())
            self._running.clear()
        for t, ref, _ in running:
            _settle(t.future, exc=ExecutorLostError(self._lost), attempts=t.attempts)
            with contextlib.suppress(Exception):
                self._ray.cancel(ref, force=True)

    def _watchdog(self) -> None:
        state: dict[str, float] = {}
        while True:
            time.sleep(0.1)
            with self._lock:
                if self._closed:
                    return
            self._check_alive(state)
            with self._lock:
                if self._closed:
                    return
                if self.trial_timeout is None:
                    continue
                now = time.monotonic()
                limit = self.trial_timeout + self.kill_grace
                late = [(t, ref) for t, ref, t0 in self._running.values()
                        if t.kind == "trial" and not t.timed_out and now - t0 >= limit]
                for t, _ in late:
                    t.timed_out = True
            for _, ref in late:
                with contextlib.suppress(Exception):
                    self._ray.cancel(ref, force=True)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        with self._lock:
            if self._closed:
                return
            running = list(self._running.values())
        if wait and not cancel_futures:
            cf.wait([t.future for t, _, _ in running], timeout=None)
        else:
            for _t, ref, _ in running:
                with contextlib.suppress(Exception):
                    self._ray.cancel(ref, force=True)
        with self._lock:
            self._closed = True
        self._watch.join(timeout=5.0)
        self._ctx_ref = None
        self._context = None
        if self._owns_ray and self._lost is None:  # a lost cluster cannot be shut down
            with contextlib.suppress(Exception):
                self._ray.shutdown()


# ------------------------------------------------------------------------------ factory
#: seconds to wait for a Ray head to accept a connection (NASFORGE_RAY_CONNECT_TIMEOUT)
RAY_CONNECT_TIMEOUT = 30.0


def _probe_ray_address(address: str) -> None:
    """Fail fast, with what to check, when nothing listens at a Ray ``host:port``
    (``ray.init`` itself keeps retrying "Failed to get cluster ID from GCS server")."""
    import socket

    target = address.strip()
    for prefix in ("ray://", "http://", "https://"):
        if target.startswith(prefix):
            target = target[len(prefix):]
    if target in ("auto", "local") or ":" not in target:
        return
    host, _, port_s = target.rpartition(":")
    try:
        port = int(port_s)
    except ValueError:
        raise ExecutorError(f"ray address {address!r} is not host:port") from None
    try:
        timeout = float(os.environ.get("NASFORGE_RAY_CONNECT_TIMEOUT", RAY_CONNECT_TIMEOUT))
    except ValueError:
        timeout = RAY_CONNECT_TIMEOUT
    deadline = time.monotonic() + max(0.1, timeout)
    last: OSError | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host.strip("[]"), port),
                                          timeout=max(0.1, min(5.0, deadline - time.monotonic()))):
                return
        except OSError as e:
            last = e
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
    raise ExecutorError(
        f"no Ray head answers at {address!r} after {timeout:.0f} s "
        f"({last.strerror if last and last.strerror else last}); check that the cluster is "
        f"up (`ray status`) and the address and port, or run without --ray-address"
    )


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
