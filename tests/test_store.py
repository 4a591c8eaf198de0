"""RunStore: round trips, atomic steps, the writer lock, and refusing what it cannot read."""

from __future__ import annotations

import json
import math
import os
import socket
import sqlite3
import subprocess
import sys

import pytest

from nasforge.errors import RunDirError
from nasforge.estimators.base import Result
from nasforge.store import DB_NAME, FORMAT_VERSION, LOCK_NAME, RunStore, TrialRecord

CONFIG = {"dataset": {"name": "digits"}, "space": {"name": "toy", "options": {"n": 3}},
          "seed": 7, "budget": {"trials": 5, "time_budget": None}}


def _start(store: RunStore, arch: str, n_told: int = 0, fidelity=None) -> int:
    return store.start_trial(arch, {"space": "toy", "arch": arch}, fidelity,
                             {"asked": arch}, n_told)


def test_create_open_round_trip(tmp_path):
    run = tmp_path / "run"
    with RunStore.create(run, CONFIG) as s:
        assert (run / DB_NAME).is_file()
        assert s.writable
        t1 = _start(s, "a=1", fidelity={"epochs": 2})
        t2 = _start(s, "a=2", n_told=0)
        s.finish_trial(t1, Result({"val_accuracy": 0.5, "params": 10}, cost=1.5,
                                  report={"test_accuracy": 0.4}), {"told": 1}, 1)
        s.finish_trial(t2, Result.failed("boom", cost=0.25), {"told": 2}, 2)
        t3 = _start(s, "a=3", n_told=2)
        s.set_meta(status="running", elapsed_s=12.5)
    # the lock is released on close; open again and read everything back
    with RunStore.open(run) as s:
        assert not s.writable
        meta = s.meta()
        assert meta["format_version"] == FORMAT_VERSION
        assert meta["config"] == CONFIG
        assert meta["status"] == "running" and meta["elapsed_s"] == 12.5
        recs = s.trials()
        assert [r.id for r in recs] == [t1, t2, t3]
        a, b, c = recs
        assert isinstance(a, TrialRecord)
        assert (a.arch, a.status, a.fidelity, a.metrics, a.report, a.cost) == (
            "a=1", "ok", {"epochs": 2}, {"val_accuracy": 0.5, "params": 10},
            {"test_accuracy": 0.4}, 1.5)
        assert a.finished_at is not None and a.started_at <= a.finished_at
        assert a.arch_json == {"space": "toy", "arch": "a=1"}
        assert (b.status, b.error, b.metrics) == ("failed", "boom", {})
        assert (c.status, c.finished_at, c.fidelity) == ("running", None, None)
        assert [r.id for r in s.trials("running")] == [t3]
        assert s.counts() == {"running": 1, "ok": 1, "failed": 1}
        assert s.n_completed() == 2
        # state saved by the last start (after ask), not by the last finish
        assert s.strategy_state() == ({"asked": "a=3"}, 2)


def test_read_only_store_refuses_writes(tmp_path):
    RunStore.create(tmp_path, CONFIG).close()
    with RunStore.open(tmp_path) as s, pytest.raises(RunDirError, match="read-only"):
        s.set_meta(status="x")


def test_best_and_dataframe(tmp_path):
    with RunStore.create(tmp_path, CONFIG) as s:
        vals = [0.3, 0.9, float("nan"), 0.9, 0.1]
        for i, v in enumerate(vals):
            tid = _start(s, f"a={i}", n_told=i)
            s.finish_trial(tid, Result({"val_accuracy": v, "val_loss": 1 - v}, cost=i,
                                       report={"test_accuracy": v / 2}), {}, i + 1)
        tid = _start(s, "a=fail", n_told=5)
        s.finish_trial(tid, Result.failed("x"), {}, 6)
        best = s.best()
        assert best is not None and best.arch == "a=1"  # earliest of the tie, NaN ignored
        assert s.best("val_loss", mode="min").arch == "a=1"
        assert s.best("val_accuracy", mode="min").arch == "a=4"
        assert s.best("nope") is None
        with pytest.raises(ValueError):
            s.best(mode="up")
        df = s.to_dataframe()
    assert len(df) == 6
    assert list(df["arch"])[:2] == ["a=0", "a=1"]
    assert df.loc[df["arch"] == "a=1", "val_accuracy"].item() == 0.9
    assert df.loc[df["arch"] == "a=1", "report_test_accuracy"].item() == 0.45
    assert list(df["status"]).count("failed") == 1
    assert math.isnan(df.loc[df["arch"] == "a=fail", "val_accuracy"].item())


def test_empty_store_dataframe_and_best(tmp_path):
    with RunStore.create(tmp_path, CONFIG) as s:
        assert s.best() is None
        df = s.to_dataframe()
    assert len(df) == 0 and "arch" in df.columns


def test_failed_step_is_rolled_back_whole(tmp_path):
    """A start whose state cannot be stored must not leave a running row behind."""
    with RunStore.create(tmp_path, CONFIG) as s:
        with pytest.raises(TypeError):
            s.start_trial("a=1", {}, None, {"bad": object()}, 0)
        assert s.trials() == []
        assert s.strategy_state() == (None, 0)
        tid = _start(s, "a=1")
        with pytest.raises(TypeError):
            s.finish_trial(tid, Result({"val_accuracy": 0.5}), {"bad": object()}, 1)
        rec = s.trial(tid)
        assert rec.status == "running" and rec.metrics == {}
        assert s.strategy_state() == ({"asked": "a=1"}, 0)
        with pytest.raises(RunDirError, match="not running"):
            s.finish_trial(tid + 100, Result(), {}, 1)


def test_restart_trial_counts_attempts(tmp_path):
    with RunStore.create(tmp_path, CONFIG) as s:
        tid = _start(s, "a=1")
        s.restart_trial(tid)
        assert s.trial(tid).attempt == 2
        s.finish_trial(tid, Result({"val_accuracy": 1.0}), {}, 1)
        with pytest.raises(RunDirError):
            s.restart_trial(tid)


def test_create_refuses_existing_run(tmp_path):
    RunStore.create(tmp_path, CONFIG).close()
    with pytest.raises(RunDirError, match="resume") as e:
        RunStore.create(tmp_path, CONFIG)
    assert "--out" in str(e.value)


def test_open_missing_and_not_a_run(tmp_path):
    with pytest.raises(RunDirError, match="does not exist"):
        RunStore.open(tmp_path / "nope")
    with pytest.raises(RunDirError, match="not a nasforge run"):
        RunStore.open(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunDirError):
        RunStore.open(tmp_path / "f")


def test_open_garbage_file(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RunDirError, match="corrupt or not a nasforge run"):
        RunStore.open(tmp_path)
    # a write open must not leave the lock behind after refusing
    with pytest.raises(RunDirError):
        RunStore.open(tmp_path, write=True)
    assert not (tmp_path / LOCK_NAME).exists()


def test_open_foreign_sqlite(tmp_path):
    c = sqlite3.connect(tmp_path / DB_NAME)
    c.execute("CREATE TABLE x (a)")
    c.commit()
    c.close()
    with pytest.raises(RunDirError, match="not a nasforge run database"):
        RunStore.open(tmp_path)


@pytest.mark.parametrize("version", [FORMAT_VERSION + 1, "one", None])
def test_open_newer_or_unknown_format(tmp_path, version):
    RunStore.create(tmp_path, CONFIG).close()
    c = sqlite3.connect(tmp_path / DB_NAME)
    if version is None:
        c.execute("DELETE FROM meta WHERE key='format_version'")
    else:
        c.execute("UPDATE meta SET value=? WHERE key='format_version'", (json.dumps(version),))
    c.commit()
    c.close()
    expect = "newer nasforge" if isinstance(version, int) else "unknown run format"
    with pytest.raises(RunDirError, match=expect):
        RunStore.open(tmp_path)


def test_lock_refuses_second_writer(tmp_path):
    s = RunStore.create(tmp_path, CONFIG)
    try:
        with pytest.raises(RunDirError) as e:
            RunStore.open(tmp_path, write=True)
        assert f"pid {os.getpid()}" in str(e.value)
        # readers are fine while the writer works
        with RunStore.open(tmp_path) as r:
            assert r.config == CONFIG
    finally:
        s.close()
    with RunStore.open(tmp_path, write=True) as s2:  # released on close
        assert s2.writable


def test_lock_refuses_writer_in_other_process(tmp_path):
    """A live writer in another process keeps the lock; its pid is named."""
    code = (
        "import sys, time\n"
        "from nasforge.store import RunStore\n"
        f"s = RunStore.create({str(tmp_path)!r}, {{}})\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "s.close()\n"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        with pytest.raises(RunDirError, match=f"pid {p.pid}"):
            RunStore.open(tmp_path, write=True)
    finally:
        p.communicate("\n", timeout=30)
    assert p.returncode == 0
    assert not (tmp_path / LOCK_NAME).exists()
    RunStore.open(tmp_path, write=True).close()


def test_stale_lock_of_dead_pid_is_taken_over(tmp_path):
    RunStore.create(tmp_path, CONFIG).close()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    with RunStore.open(tmp_path, write=True) as s:
        assert s.writable
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    # a lock from another host cannot be checked: refused, naming host and pid
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(RunDirError, match="elsewhere.example"):
        RunStore.open(tmp_path, write=True)
