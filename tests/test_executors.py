"""Executors: process pool (context shipped once, threads per worker, retries, time-outs,
memory errors), the in-process time-out, executor selection, and a real Ray search.

The fakes here are module-level so that spawned workers (and Ray workers) can import
them; ``tests/test_fault_tolerance.py`` reuses them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import ToySpaceBase, register_toys

from nasforge.errors import NasforgeError
from nasforge.estimators.base import Estimator, Result
from nasforge.executors import (
    ATTEMPTS_ATTR,
    ExecutorError,
    InProcessExecutor,
    PoolExecutor,
    TrialTimeoutError,
    cpu_count,
    default_threads,
    make_executor,
    run_trial,
)
from nasforge.experiment import resume, search
from nasforge.store import RunStore

SPACE = "toy-exec"
EST = "probe-exec"


class BigToySpace(ToySpaceBase):
    """8 choices of 6 options: random archs practically never repeat (1.7M of them)."""

    name = SPACE
    n_choices = 8
    n_options = 6


def arch_hash(text: str) -> int:
    return zlib.crc32(text.encode())


def _append(path: str, line: str) -> None:
    """One O_APPEND write per line: lines of concurrent processes never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class Probe(Estimator):
    """A deterministic score per arch, logging ``start|end pid arch`` to ``log``.

    Misbehaviour chosen by arch hash: ``hang_mod`` sleeps far past any time-out,
    ``kill_mod`` SIGKILLs its own process (every attempt), ``oom_mod`` really runs out of
    memory (address-space limit, then a too-big allocation), ``rt_oom_mod`` raises
    torch's "out of memory" RuntimeError.
    """

    name = EST
    needs_data = False

    def __init__(self, sleep: float = 0.0, log: str = "", hang_mod: int = 0, kill_mod: int = 0,
                 oom_mod: int = 0, rt_oom_mod: int = 0, seed: int = 0) -> None:
        self.sleep, self.log = sleep, log
        self.hang_mod, self.kill_mod = hang_mod, kill_mod
        self.oom_mod, self.rt_oom_mod, self.seed = oom_mod, rt_oom_mod, seed

    def config(self) -> dict[str, Any]:
        return {"sleep": self.sleep, "log": self.log, "hang_mod": self.hang_mod,
                "kill_mod": self.kill_mod, "oom_mod": self.oom_mod,
                "rt_oom_mod": self.rt_oom_mod, "seed": self.seed}

    def _evaluate(self, arch, space, data, fidelity) -> Result:
        import torch

        h = arch_hash(arch.text)
        if self.log:
            _append(self.log, f"start {os.getpid()} {arch.text} {time.time():.4f}")
        if self.kill_mod and h % self.kill_mod == 0:
            os.kill(os.getpid(), signal.SIGKILL)
        if self.hang_mod and h % self.hang_mod == 0:
            time.sleep(120)
        if self.oom_mod and h % self.oom_mod == 0:
            _real_memory_error()
        if self.rt_oom_mod and h % self.rt_oom_mod == 0:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        if self.sleep:
            time.sleep(self.sleep)
        if self.log:
            _append(self.log, f"end {os.getpid()} {arch.text} {time.time():.4f}")
        return Result({"val_accuracy": (h % 1000) / 1000,
                       "threads": float(torch.get_num_threads()), "pid": float(os.getpid())})


def _real_memory_error() -> None:
    """Allocate far more than an address-space limit allows (the limit is lifted after)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), hard))
    try:
        np.ones((1 << 30,), dtype=np.float64)  # 8 GiB: MemoryError, nothing is touched
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class CountingBlob:
    """Counts how often it is pickled (in the driver) and unpickled (in workers)."""

    def __init__(self, log: str) -> None:
        self.log = log

    def __reduce__(self):
        _append(self.log, f"pickle {os.getpid()}")
        return (_unpickle_blob, (self.log,))


def _unpickle_blob(log: str) -> CountingBlob:
    _append(log, f"unpickle {os.getpid()}")
    return CountingBlob(log)


class BlobProbe(Probe):
    """A Probe that carries a :class:`CountingBlob`, standing in for a big dataset."""

    def __init__(self, blob: CountingBlob | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.blob = blob


register_toys(BigToySpace, Probe)

_user_set_omp = os.environ.get("OMP_WAIT_POLICY") == "PASSIVE"
COMMON = dict(space=SPACE, strategy="random", progress=False, final_train=False)


def log_lines(path: Path) -> list[list[str]]:
    return [ln.split() for ln in path.read_text().splitlines()] if path.exists() else []


def pid_alive(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may linger where nobody reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


# ------------------------------------------------------------------------ in-process
def test_in_process_timeout_interrupts_the_trial():
    sp = BigToySpace()
    arch = next(a for a in (sp.sample(np.random.default_rng(i)) for i in range(500))
                if arch_hash(a.text) % 7 == 0)
    ex = InProcessExecutor(trial_timeout=0.3)
    ex.bind(Probe(hang_mod=7), sp, None)
    t0 = time.monotonic()
    res = ex.submit_trial(arch, None).result()
    assert time.monotonic() - t0 < 5
    assert res.status == "failed" and "TrialTimeoutError" in res.error
    assert "timed out after 0.3 s" in res.error
    # the alarm is disarmed afterwards: a normal trial runs to its end
    ok = ex.submit_trial(sp.sample(np.random.default_rng(999)), None).result()
    assert ok.ok or "TrialTimeoutError" not in (ok.error or "")


def test_executor_options_are_checked():
    assert default_threads(1) == cpu_count() and default_threads(10**6) == 1
    for bad in (dict(workers=0), dict(workers=True), dict(kind="warp"),
                dict(kind="inprocess", workers=2), dict(trial_timeout=-1),
                dict(trial_timeout=float("nan")), dict(retries=-1),
                dict(kind="process", ray_address="localhost:6379"),
                dict(kind="thread", trial_timeout=5.0)):
        with pytest.raises(NasforgeError):
            make_executor(**bad)
    assert isinstance(make_executor("auto", 1), InProcessExecutor)


def test_unpicklable_context_is_a_clear_error(tmp_path):
    class Local(Probe):  # defined in a function: cannot be sent to a worker process
        pass

    with pytest.raises(ExecutorError, match="workers=1"):
        search("digits", estimator=Local(), trials=2, out=tmp_path / "r", workers=2, **COMMON)


# ---------------------------------------------------------------------- process pool
def test_pool_ships_context_once_per_worker_and_splits_threads(tmp_path):
    """Six trials on two workers: the 'dataset' is pickled once and unpickled once per
    worker (not per trial); trials overlap; each worker has cores // 2 torch threads."""
    blob_log, log = tmp_path / "blob.log", tmp_path / "trials.log"
    est = BlobProbe(CountingBlob(str(blob_log)), sleep=0.4, log=str(log))
    sp = BigToySpace()
    with PoolExecutor(max_workers=2) as ex:
        ex.bind(est, sp, None)  # what search() binds: the same objects, so no second send
        assert ex.wait_ready(timeout=120)  # both workers up: both get trials
        res = search("digits", estimator=est, trials=6, out=tmp_path / "r", executor=ex,
                     **{**COMMON, "space": sp})
        pids = set(ex.worker_pids())
    assert len(res.trials) == 6 and all(t.ok for t in res.trials)
    assert all(t.attempt == 1 for t in res.trials)
    used = {int(t.metrics["pid"]) for t in res.trials}
    assert used <= pids and len(used) == 2 and os.getpid() not in used
    assert {t.metrics["threads"] for t in res.trials} == {float(default_threads(2))}
    events = [ln[0] for ln in log_lines(blob_log)]
    assert events.count("pickle") == 1
    unpicklers = [int(ln[1]) for ln in log_lines(blob_log) if ln[0] == "unpickle"]
    assert len(unpicklers) == 2 and set(unpicklers) == pids
    # two at a time: some trial started before another ended
    spans = {}
    for kind, _pid, arch, ts in log_lines(log):
        spans.setdefault(arch, {})[kind] = float(ts)
    iv = sorted((s["start"], s["end"]) for s in spans.values())
    assert any(b[0] < a[1] for a, b in zip(iv, iv[1:], strict=False))


def test_pool_rebind_keeps_workers_warm(tmp_path):
    with PoolExecutor(max_workers=2) as ex:
        first = search("digits", estimator=Probe(), trials=3, out=tmp_path / "a", executor=ex,
                       **COMMON)
        pids = set(ex.worker_pids())
        second = search("digits", estimator=Probe(seed=1), trials=3, out=tmp_path / "b",
                        executor=ex, **COMMON)
        assert set(ex.worker_pids()) == pids  # same processes, new context
    assert all(t.ok for t in first.trials + second.trials)
    assert {int(t.metrics["pid"]) for t in second.trials} <= pids
    assert not any(pid_alive(p) for p in pids)  # shut down with the executor


def test_timeout_kills_the_worker_and_the_search_goes_on(tmp_path):
    log = tmp_path / "t.log"
    t0 = time.monotonic()
    res = search("digits", estimator=Probe(hang_mod=3, log=str(log)), trials=8,
                 out=tmp_path / "r", workers=2, trial_timeout=1.0, seed=1, **COMMON)
    wall = time.monotonic() - t0
    hung = [t for t in res.trials if arch_hash(t.arch) % 3 == 0]
    fine = [t for t in res.trials if arch_hash(t.arch) % 3 != 0]
    assert hung and fine and len(res.trials) == 8
    for t in hung:
        assert t.status == "failed" and "timed out after 1.0 s" in t.error and t.attempt == 1
    assert all(t.ok for t in fine)
    # each hung worker was killed, not waited for (a hang is 120 s)
    hung_pids = {int(p) for k, p, a, _ in log_lines(log) if k == "start"
                 and arch_hash(a) % 3 == 0}
    assert not any(pid_alive(p) for p in hung_pids)
    assert wall < 60
    with RunStore.open(tmp_path / "r") as s:
        assert s.get_meta("config")["execution"]["trial_timeout"] == 1.0


def test_worker_that_dies_every_time_fails_alone(tmp_path):
    """A trial whose worker is SIGKILLed on every attempt (like the OOM killer would) is
    tried 1 + retries times and marked failed; every other trial is fine."""
    log = tmp_path / "k.log"
    res = search("digits", estimator=Probe(kill_mod=4, log=str(log)), trials=8,
                 out=tmp_path / "r", workers=2, retries=1, seed=2, **COMMON)
    dead = [t for t in res.trials if arch_hash(t.arch) % 4 == 0]
    assert dead and len(res.trials) == 8
    for t in dead:
        assert t.status == "failed" and "SIGKILL" in t.error and t.attempt == 2
        starts = [ln for ln in log_lines(log) if ln[0] == "start" and ln[2] == t.arch]
        assert len(starts) == 2 and starts[0][1] != starts[1][1]  # retried on a fresh worker
    assert all(t.ok and t.attempt == 1 for t in res.trials if t not in dead)


def test_out_of_memory_fails_only_that_trial(tmp_path):
    res = search("digits", estimator=Probe(oom_mod=3, rt_oom_mod=5), trials=10,
                 out=tmp_path / "r", workers=2, seed=4, **COMMON)
    oom = [t for t in res.trials if arch_hash(t.arch) % 3 == 0]
    rt = [t for t in res.trials if arch_hash(t.arch) % 3 and arch_hash(t.arch) % 5 == 0]
    assert oom and len(res.trials) == 10
    for t in oom:
        assert t.status == "failed" and "MemoryError" in t.error and t.attempt == 1
    for t in rt:
        assert t.status == "failed" and "out of memory" in t.error
    rest = [t for t in res.trials if t not in oom and t not in rt]
    assert rest and all(t.ok for t in rest)
    # the workers survived their out-of-memory trials: only two processes ever ran
    assert len({t.metrics["pid"] for t in rest}) <= 2


def test_plain_submit_runs_in_a_worker_and_returns_exceptions():
    with PoolExecutor(max_workers=1, retries=0) as ex:
        f = ex.submit(os.getpid)
        assert f.result(timeout=60) != os.getpid() and getattr(f, ATTEMPTS_ATTR) == 1
        g = ex.submit(int, "not a number")
        assert isinstance(g.exception(timeout=60), ValueError)
        # workers wait passively (spinning OpenMP threads starve the other workers) ...
        assert ex.submit(os.getenv, "OMP_WAIT_POLICY").result(timeout=60) == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in os.environ or os.environ["OMP_WAIT_POLICY"] != "PASSIVE" \
        or _user_set_omp  # ... without changing the driver's environment
    sp = BigToySpace()
    assert run_trial(Probe(), sp, None, sp.sample(np.random.default_rng(0)), None).ok


def test_thread_pool_refuses_timeouts():
    with pytest.raises(NasforgeError, match="process"):
        PoolExecutor(2, kind="thread", trial_timeout=1.0)
    assert not issubclass(TrialTimeoutError, NasforgeError)  # a failed trial, not a set-up error


def test_resume_takes_stored_execution_options_unless_given(tmp_path):
    out = tmp_path / "r"
    search("digits", estimator=Probe(), trials=2, out=out, workers=2, trial_timeout="30s",
           retries=3, **COMMON)
    res = resume(out, trials=3, progress=False, final_train=False)
    assert len(res.trials) == 3
    with RunStore.open(out) as s:
        ex = s.get_meta("config")["execution"]
    assert (ex["workers"], ex["trial_timeout"], ex["retries"]) == (2, 30.0, 3)
    resume(out, trials=4, progress=False, final_train=False, workers=1, retries=0)
    with RunStore.open(out) as s:
        ex = s.get_meta("config")["execution"]
        assert s.n_completed() == 4
    assert (ex["workers"], ex["trial_timeout"], ex["retries"]) == (1, 30.0, 0)


# -------------------------------------------------------------------------------- Ray
def test_ray_search_with_timeout_and_killed_worker(tmp_path):
    """The same search on a local Ray instance (2 CPUs): trials run as remote tasks, two at
    a time; a hung trial is stopped by the driver; a killed Ray worker's trial is retried."""
    ray = pytest.importorskip("ray")
    from nasforge.executors import RayExecutor

    log = tmp_path / "ray.log"
    killed: dict[str, Any] = {}

    def killer() -> None:  # SIGKILL the Ray worker of the first non-hanging trial from the 3rd
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not killed.get("stop"):
            starts = [ln for ln in log_lines(log) if ln[0] == "start"]
            # under load two workers may log their starts in either order: take the first
            # trial from the 3rd start on that would not hang anyway
            fine = [st for st in starts[2:] if arch_hash(st[2]) % 5 != 0]
            if fine:
                killed["pid"], killed["arch"] = int(fine[0][1]), fine[0][2]
                with contextlib.suppress(ProcessLookupError):
                    os.kill(killed["pid"], signal.SIGKILL)
                return
            time.sleep(0.02)

    # a time-out well above a trial's 0.5 s: a loaded machine must not time out fine trials
    ex = RayExecutor(max_workers=2, trial_timeout=10.0, retries=1,
                     init_options={"runtime_env": {"env_vars": {
                         "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                                        os.environ.get("PYTHONPATH", "")])}}})
    th = threading.Thread(target=killer, daemon=True)
    th.start()
    try:
        est = Probe(sleep=0.5, hang_mod=5, log=str(log))
        res = search("digits", estimator=est, trials=8, out=tmp_path / "r", executor=ex,
                     seed=5, **COMMON)
    finally:
        killed["stop"] = True
        ex.shutdown()
        th.join(timeout=5)
    assert not ray.is_initialized()
    assert len(res.trials) == 8 and len({t.id for t in res.trials}) == 8
    hung = [t for t in res.trials if arch_hash(t.arch) % 5 == 0]
    for t in hung:
        assert t.status == "failed" and "timed out" in t.error
    fine = [t for t in res.trials if t not in hung]
    assert fine and all(t.ok for t in fine)
    assert os.getpid() not in {int(t.metrics["pid"]) for t in fine}  # remote, not here
    assert {t.metrics["threads"] for t in fine} == {1.0}  # 2 CPUs / 2 workers
    assert "arch" in killed, "no trial after the 2nd was killed: pick another seed"
    t = next(t for t in res.trials if t.arch == killed["arch"])
    assert t.ok and t.attempt == 2
    # ran two at a time: some trial started while another was running (a hung trial runs
    # until its 10 s time-out; the killed attempt is left out, its end is unknown)
    spans: dict[str, dict[str, float]] = {}
    for kind, _, arch, ts in log_lines(log):
        if arch != killed["arch"]:
            spans.setdefault(arch, {})[kind] = float(ts)
    iv = sorted((s["start"], s.get("end", s["start"] + 10.0)) for s in spans.values())
    assert any(b[0] < a[1] for a, b in zip(iv, iv[1:], strict=False))
