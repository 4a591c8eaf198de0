"""Never lose work: real process kills (a worker mid-trial, the driver with two workers),
two writers racing for one run, and a damaged database refused on open."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import assert_kept, sigkill_after_trials, stored_after_kill, wait_for_trials
from test_executors import COMMON, Probe, log_lines, pid_alive

from nasforge.cli import main as cli_main
from nasforge.errors import RunDirError
from nasforge.estimators.base import Result
from nasforge.experiment import resume, search
from nasforge.store import DB_NAME, LOCK_NAME, RunStore

TESTS_DIR = Path(__file__).resolve().parent


def _kill_nth_start(log: Path, n: int, out: dict[str, Any], timeout: float = 60.0) -> None:
    """SIGKILL the worker that logs the ``n``-th trial start (runs in a thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not out.get("stop"):
        starts = [ln for ln in log_lines(log) if ln[0] == "start"]
        if len(starts) >= n:
            out["pid"], out["arch"] = int(starts[n - 1][1]), starts[n - 1][2]
            with contextlib.suppress(ProcessLookupError):
                os.kill(out["pid"], signal.SIGKILL)
            return
        time.sleep(0.01)


@pytest.mark.parametrize("retries", [1, 0])
def test_worker_killed_mid_trial_is_retried_or_failed(tmp_path, retries):
    log = tmp_path / "w.log"
    killed: dict[str, Any] = {}
    th = threading.Thread(target=_kill_nth_start, args=(log, 3, killed), daemon=True)
    th.start()
    try:
        res = search("digits", estimator=Probe(sleep=0.5, log=str(log)), trials=6,
                     out=tmp_path / "r", workers=2, retries=retries, seed=7, **COMMON)
    finally:
        killed["stop"] = True
        th.join(timeout=5)
    assert "arch" in killed
    assert len(res.trials) == 6 and len({t.id for t in res.trials}) == 6
    victim = next(t for t in res.trials if t.arch == killed["arch"])
    others = [t for t in res.trials if t is not victim]
    assert all(t.ok and t.attempt == 1 for t in others)
    starts = [ln for ln in log_lines(log) if ln[0] == "start" and ln[2] == victim.arch]
    if retries:
        assert victim.ok and victim.attempt == 2
        assert len(starts) == 2 and int(starts[1][1]) != killed["pid"]  # on a new worker
    else:
        assert victim.status == "failed" and victim.attempt == 1
        assert "SIGKILL" in victim.error and len(starts) == 1
    assert not pid_alive(killed["pid"])


# ------------------------------------------------------------------- kill -9 of the driver
N = 12


def child_search(out: str, log: str, trials: int) -> None:
    """The driver killed by the test below: random search, two process workers."""
    search("digits", estimator=Probe(sleep=0.4, log=log), trials=trials, out=out, workers=2,
           seed=11, **COMMON)


def test_sigkill_of_driver_with_two_workers_then_resume(tmp_path):
    out, log = tmp_path / "run", tmp_path / "trials.log"
    code = (f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); "
            f"import test_fault_tolerance as t; t.child_search({str(out)!r}, {str(log)!r}, {N})")
    sigkill_after_trials(code, out, 4, poll=0.02)
    # the orphaned workers notice that their driver is gone and exit
    workers = {int(ln[1]) for ln in log_lines(log) if ln[0] == "start"}
    assert len(workers) == 2
    deadline = time.monotonic() + 10
    while any(pid_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in workers)
    before, running = stored_after_kill(out)
    assert 4 <= len(before) < N and 1 <= len(running) <= 2
    assert (out / LOCK_NAME).exists()
    before_starts = Counter(ln[2] for ln in log_lines(log) if ln[0] == "start")

    res = resume(out, progress=False, final_train=False)  # workers=2 from the stored run
    assert len(res.trials) == N and all(t.done for t in res.trials)
    assert len({t.id for t in res.trials}) == N
    after = {t.id: t for t in res.trials}
    assert_kept(before, after)  # kept exactly as stored, and never evaluated again
    starts = Counter(ln[2] for ln in log_lines(log) if ln[0] == "start")
    for t in before.values():
        assert starts[t.arch] == 1
    for t in running:  # cut off by the kill: evaluated again, same id, attempt counted
        assert after[t.id].arch == t.arch and after[t.id].attempt == 2 and after[t.id].ok
        assert starts[t.arch] == before_starts[t.arch] + 1
    new = [t for t in res.trials if t.id not in before and t.id not in {r.id for r in running}]
    assert all(starts[t.arch] == 1 for t in new)
    with RunStore.open(out) as s:
        assert s.get_meta("config")["execution"]["workers"] == 2
        assert s.get_meta("status") == "finished"
    assert not (out / LOCK_NAME).exists()


# --------------------------------------------------------------- two writers at once
_RACER = r"""
import sys, time
from pathlib import Path
from nasforge.errors import RunDirError
from nasforge.store import RunStore
run, go, release = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
print("waiting", flush=True)
while not go.exists():
    time.sleep(0.001)
try:
    s = RunStore.open(run, write=True)
except RunDirError as e:
    print("REFUSED", e, flush=True)
    sys.exit(0)
s.set_meta(holder="me")
print("OPENED", flush=True)
while not release.exists():
    time.sleep(0.01)
s.close()
"""


def test_two_processes_racing_to_write_one_run(tmp_path):
    RunStore.create(tmp_path / "run", {"seed": 0}).close()
    go, release = tmp_path / "go", tmp_path / "release"
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path / "run"), str(go),
                               str(release)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "waiting"
        go.touch()  # both start polling for this file: they open within milliseconds
        lines = {p.pid: p.stdout.readline().strip() for p in procs}
    finally:
        release.touch()
        for p in procs:
            p.communicate(timeout=60)
    opened = [pid for pid, ln in lines.items() if ln == "OPENED"]
    refused = [ln for ln in lines.values() if ln.startswith("REFUSED")]
    assert len(opened) == 1 and len(refused) == 1, lines
    assert f"being written by another process (pid {opened[0]}" in refused[0]
    assert all(p.returncode == 0 for p in procs)
    with RunStore.open(tmp_path / "run", write=True) as s:  # the winner released the lock
        assert s.get_meta("holder") == "me"


# ------------------------------------------------------------------ damaged database
def _store_with_trials(run: Path, n: int = 300) -> None:
    with RunStore.create(run, {"seed": 0}) as s:
        for i in range(n):
            tid = s.start_trial(f"a={i}", {"arch": f"a={i}", "pad": "x" * 200}, None, {}, i)
            s.finish_trial(tid, Result({"val_accuracy": i / n}), {}, i + 1)


def test_corrupt_pages_are_refused_on_open(tmp_path, capsys):
    run = tmp_path / "run"
    _store_with_trials(run)
    db = run / DB_NAME
    c = sqlite3.connect(db)
    page = c.execute("PRAGMA page_size").fetchone()[0]
    pages = c.execute("PRAGMA page_count").fetchone()[0]
    c.close()
    assert pages > 10
    with open(db, "r+b") as f:  # scribble over a page in the middle of the trials table
        f.seek(page * (pages // 2) + 16)
        f.write(os.urandom(page - 32))
    with pytest.raises(RunDirError, match="corrupt"):
        RunStore.open(run)
    with pytest.raises(RunDirError, match="corrupt"):
        RunStore.open(run, write=True)
    assert not (run / LOCK_NAME).exists()
    with pytest.raises(SystemExit) as e:
        cli_main(["show", str(run)])
    assert e.value.code == 2 and "corrupt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli_main(["resume", str(run), "--no-progress"])
    assert e.value.code == 2


def test_truncated_database_is_refused(tmp_path):
    run = tmp_path / "run"
    _store_with_trials(run, 100)
    db = run / DB_NAME
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(RunDirError, match="corrupt|not a nasforge"):
        with RunStore.open(run) as s:
            s.trials()


# ------------------------------------------------------------------ Ctrl-C with workers
def test_ctrl_c_with_two_workers_stops_cleanly_and_resumes(tmp_path):
    out, log = tmp_path / "run", tmp_path / "trials.log"
    argv = ["search", "--space", "toy-exec", "--estimator", "probe-exec", "--strategy",
            "random", "--dataset", "digits", "--no-final-train", "--no-progress",
            "--trials", "30", "--workers", "2", "--out", str(out),  # ~6 s: time to interrupt
            "--estimator-opt", "sleep=0.4", "--estimator-opt", f"log={json.dumps(str(log))}"]
    # a background job starts with SIGINT ignored (POSIX shells do that when job control is
    # off): restore Python's own handler, as an interactive terminal would have it
    code = (f"import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"sys.path.insert(0, {str(TESTS_DIR)!r}); import test_executors; "
            f"from nasforge.cli import main; main({argv!r})")
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        wait_for_trials(child, out, 3, poll=0.02)
        child.send_signal(signal.SIGINT)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 130, err
    assert f"nasforge resume {out}" in err and "Traceback" not in err
    workers = {int(ln[1]) for ln in log_lines(log) if ln[0] == "start"}
    assert workers and not any(pid_alive(p) for p in workers)  # stopped with the driver
    with RunStore.open(out) as s:
        assert s.get_meta("status") == "interrupted"
        done_before = s.n_completed()
    assert not (out / LOCK_NAME).exists()
    res = resume(out, progress=False, final_train=False)
    assert len(res.trials) == 30 and all(t.ok for t in res.trials) and done_before >= 3
