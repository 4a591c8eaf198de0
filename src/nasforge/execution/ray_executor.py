"""Trials as Ray tasks: :class:`RayExecutor`.

Named ``ray_executor`` so it can never be mistaken for the ``ray`` package, which is
imported lazily (in :class:`RayExecutor`) so that nasforge works without Ray.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from nasforge.execution.base import (
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
    run_trial,
)

if TYPE_CHECKING:
    from nasforge.data import Dataset
    from nasforge.estimators.base import Estimator
    from nasforge.spaces.base import Arch, SearchSpace


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
