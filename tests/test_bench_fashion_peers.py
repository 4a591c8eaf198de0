"""The pure parts of ``benchmarks/fashion_mnist.py`` (the peer benchmark's runner):
job order, journal resume, the summary and the markdown report -- nothing is trained."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "fashion_mnist.py"


@pytest.fixture(scope="module")
def fm():
    spec = importlib.util.spec_from_file_location("bench_fashion_mnist", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def rec(system, seed, acc, wall=100.0, status="ok", **kw):
    return {"id": f"{system}-s{seed}", "system": system, "seed": seed, "status": status,
            "test_accuracy": acc, "params": 1000 * (seed + 1), "trials": 10 + seed,
            "wall_s": wall, "core": 1, "load_start": [1.0, 1.0, 1.0],
            "load_end": [1.5, 1.0, 1.0], "notes": "fake", **kw}


META = {"budget": 100.0, "cores": [1], "quick": False, "date": "today", "work": "w",
        "journal": "j", "seeds_note": "3 and 1", "load_start": [1.0], "load_end": [2.0],
        "machine": {"cpu": "Fake CPU", "cpus": 2, "python": "3.11", "torch": "2.x",
                    "platform": "Linux"}}


def test_budget_parsing(fm):
    assert fm.parse_budget("900") == 900
    assert fm.parse_budget("900s") == 900
    assert fm.parse_budget("15m") == 900
    assert fm.parse_budget("1m30s") == 90
    assert fm.parse_budget(42.5) == 42.5
    for bad in ("", "15 minutes", "-3", "0", "m"):
        with pytest.raises(ValueError):
            fm.parse_budget(bad)


def test_jobs_are_interleaved(fm):
    jobs = fm.job_order(fm.SYSTEMS, seeds=3, seeds_other=1)
    assert [j["id"] for j in jobs] == [
        "nasforge-s0", "hand-s0", "optuna-s0", "autokeras-s0",
        "nasforge-s1", "hand-s1", "nasforge-s2", "hand-s2"]
    two = fm.job_order(["optuna", "hand"], seeds=1, seeds_other=2)
    assert [j["id"] for j in two] == ["optuna-s0", "hand-s0", "optuna-s1"]
    assert fm.job_order([], 3, 1) == []


def test_resume_skips_only_successful_jobs(fm, tmp_path):
    jobs = fm.job_order(fm.SYSTEMS, seeds=2, seeds_other=1)
    path = tmp_path / "journal.json"
    journal = fm.load_journal(path, 100.0, "w", resume=True)  # none yet: a new one
    journal["jobs"]["nasforge-s0"] = rec("nasforge", 0, 0.9)
    journal["jobs"]["hand-s0"] = rec("hand", 0, None, status="failed")
    fm.save_journal(path, journal)
    again = fm.load_journal(path, 100.0, "w", resume=True)
    left = [j["id"] for j in fm.pending(jobs, again)]
    assert left == ["hand-s0", "optuna-s0", "autokeras-s0", "nasforge-s1", "hand-s1"]
    # a fresh start keeps the old journal aside and begins empty
    fresh = fm.load_journal(path, 100.0, "w", resume=False)
    assert fresh["jobs"] == {} and path.with_suffix(".prev.json").is_file()
    with pytest.raises(SystemExit):  # another budget cannot continue this journal
        fm.load_journal(path, 50.0, "w", resume=True)


def test_run_all_calls_back_in_order(fm, tmp_path):
    seen = []

    def fake(job, budget, core, work):
        return {**job, "core": core, "wall_s": 1.0, "status": "ok"}

    jobs = fm.job_order(fm.SYSTEMS, seeds=2, seeds_other=1)
    fm.run_all(jobs, [1], 10.0, tmp_path, seen.append, runner=fake)
    assert [r["id"] for r in seen] == [j["id"] for j in jobs]
    assert {r["core"] for r in seen} == {1}


def test_run_all_in_parallel_uses_every_core_once_at_a_time(fm, tmp_path):
    import threading
    import time

    busy: dict[int, int] = {0: 0, 1: 0}
    worst = {0: 0, 1: 0}
    lock = threading.Lock()
    seen = []

    def fake(job, budget, core, work):
        with lock:
            busy[core] += 1
            worst[core] = max(worst[core], busy[core])
        time.sleep(0.05)  # long enough for the second worker to start
        with lock:
            busy[core] -= 1
        return {**job, "core": core, "wall_s": 0.01, "status": "ok"}

    jobs = fm.job_order(fm.SYSTEMS, seeds=3, seeds_other=1)
    fm.run_all(jobs, [0, 1], 10.0, tmp_path, seen.append, runner=fake, stagger=0.0)
    assert sorted(r["id"] for r in seen) == sorted(j["id"] for j in jobs)
    assert {r["core"] for r in seen} == {0, 1} and worst == {0: 1, 1: 1}


def test_summary_medians_and_flags(fm):
    recs = [rec("nasforge", 0, 0.90), rec("nasforge", 1, 0.92, wall=103.0),
            rec("nasforge", 2, 0.91), rec("hand", 0, 0.89), rec("hand", 1, 0.88),
            rec("hand", 2, None, status="failed"), rec("optuna", 0, 0.87, wall=101.9)]
    rows = {r["system"]: r for r in fm.summarize(recs, fm.SYSTEMS, budget=100.0)}
    nf = rows["nasforge"]
    assert (nf["median"], nf["min"], nf["max"]) == (0.91, 0.90, 0.92)
    assert nf["ok"] == 3 and nf["params"] == 2000 and nf["trials"] == 11
    assert nf["overruns"] == ["nasforge-s1"]  # 3 % over; optuna's 1.9 % is within 2 %
    assert rows["optuna"]["overruns"] == []
    assert rows["hand"]["ok"] == 2 and rows["hand"]["median"] == pytest.approx(0.885)
    assert rows["hand"]["failed"] == ["hand-s2"]
    assert rows["autokeras"]["runs"] == 0 and rows["autokeras"]["median"] is None


def test_markdown_report(fm):
    recs = [rec("nasforge", 0, 0.91, test_accuracy_no_tta=0.905),
            rec("nasforge", 1, 0.92, wall=110.0), rec("hand", 0, 0.89),
            rec("autokeras", 0, None, status="failed", error_tail="ImportError: no keras")]
    rows = fm.summarize(recs, fm.SYSTEMS, budget=100.0)
    md = fm.render(rows, recs, META)
    assert md.startswith("# Fashion-MNIST")
    assert "| nasforge (default planned search) | 2/2 | 91.50 % | 91.00 % | 92.00 % |" in md
    assert "| hand-designed CNN | +2.50 points | 0.77 |" in md  # 8.5 % vs 11 % error
    assert "| AutoKeras 3, max_trials=1 | no result | - |" in md
    assert "**nasforge-s1**" in md and "+10.0 % OVER" in md
    assert "ImportError: no keras" in md and "**FAILED**" in md
    assert "91.00 % (90.50 % no TTA)" in md
    assert "Fake CPU" in md and "one after another" in md
    par = fm.render(rows, recs, {**META, "cores": [0, 1], "quick": True})
    assert "2 at a time, one per core" in par and "--quick" in par


def test_nasforge_result_is_read_from_summary(fm, tmp_path):
    best = tmp_path / "runs" / "nasforge-s0" / "best"
    best.mkdir(parents=True)
    (best / "summary.json").write_text(json.dumps({"arch": "a|b", "metrics": {
        "test_accuracy": 0.9, "test_accuracy_no_tta": 0.89, "params": 123, "epochs": 2.0,
        "train_time_s": 50.0}}))
    got = fm.collect({"id": "nasforge-s0", "system": "nasforge", "seed": 0}, tmp_path)
    assert got["status"] == "ok" and got["test_accuracy"] == 0.9 and got["params"] == 123
    assert got["trials"] is None and "trials unknown" in got["notes"]  # no run store here
    peer = tmp_path / "json"
    peer.mkdir()
    (peer / "autokeras-s0.json").write_text(json.dumps({
        "system": "autokeras", "test_accuracy": None, "notes": "failed: x", "error": "tb"}))
    got = fm.collect({"id": "autokeras-s0", "system": "autokeras", "seed": 0}, tmp_path)
    assert got["status"] == "failed" and got["error_tail"] == "tb"
