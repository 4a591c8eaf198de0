"""Fashion-MNIST peer benchmark: nasforge against a hand design, Optuna and AutoKeras.

Every system gets the same wall-clock budget (``--budget``, default 900 s = 15 min) on
ONE pinned core with one torch thread, search and final training included, counted from
its process start; the score is the accuracy on Fashion-MNIST's official 10k test set.
Each job is its own subprocess, ``taskset -c CORE`` with OMP/MKL_NUM_THREADS=1:

- ``nasforge``: ``nasforge search --dataset fashion-mnist --time-budget <budget>s --seed S
  --out RUN --no-progress`` (the planned default job), scored from ``RUN/best/summary.json``;
- ``hand``: ``peers/hand_cnn.py``, the hand-designed CNN (468,010 parameters) trained for
  the whole budget on all 60k training images with the same recipe as nasforge;
- ``optuna``: ``peers/optuna_tpe.py``, TPE + median pruning on a CNN space for 40 % of the
  budget, then the best configuration retrained on all 60k for the rest;
- ``autokeras``: ``peers/autokeras_peer.py``, AutoKeras 3 ``ImageClassifier(max_trials=1)``
  on Keras 3's torch backend, stopped by a wall-clock callback.

nasforge and hand run ``--seeds`` seeds (default 3, the median is reported), optuna and
autokeras ``--seeds-other`` (default 1). Jobs are interleaved (nasforge s0, hand s0, optuna
s0, autokeras s0, nasforge s1, ...) so that every system sees similar machine conditions;
with ``--cores 0,1`` two jobs run at once, one per core (half the wall time; the report
says so). A journal in ``--out`` records every finished job: ``--resume`` skips those that
succeeded. Writes ``fashion_mnist.md`` and ``fashion_mnist.png`` to ``--out`` (default
``benchmarks/results``); ``--quick`` (60 s budget, one seed each) writes
``fashion_mnist_quick.*`` instead and never touches the real report.

    python3 benchmarks/fashion_mnist.py                       # 8 jobs x 15 min, ~2 h
    python3 benchmarks/fashion_mnist.py --cores 0,1           # two at a time, ~1 h
    python3 benchmarks/fashion_mnist.py --resume              # continue after a stop
    python3 benchmarks/fashion_mnist.py --quick               # smoke test, ~4 min
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # _common sits next to this script
    sys.path.insert(0, str(HERE))

RESULTS = HERE / "results"
PEERS = HERE / "peers"
SYSTEMS = ("nasforge", "hand", "optuna", "autokeras")
LABELS = {"nasforge": "nasforge (default planned search)", "hand": "hand-designed CNN",
          "optuna": "Optuna TPE + retrain", "autokeras": "AutoKeras 3, max_trials=1"}
PEER_SCRIPTS = {"hand": "hand_cnn.py", "optuna": "optuna_tpe.py",
                "autokeras": "autokeras_peer.py"}
#: a run whose wall time exceeds the budget by more than this share is flagged
OVERRUN = 0.02
JOURNAL_VERSION = 1
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


# ------------------------------------------------------------------------- pure parts
def kill_after(budget: float) -> float:
    """A job still running this long after it started is killed (and recorded as failed)."""
    return 1.5 * budget + 180.0


def parse_budget(text: str | float) -> float:
    """Seconds from ``900``, ``900s``, ``15m``, ``1h``, ``1m30s``."""
    if isinstance(text, int | float):
        secs = float(text)
    else:
        s = str(text).strip().lower()
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms]?)", s)
        if not s or "".join(n + u for n, u in parts) != s.replace(" ", ""):
            raise ValueError(f"not a duration: {text!r} (use 900, 900s, 15m, 1h30m)")
        secs = sum(float(n) * {"h": 3600, "m": 60, "s": 1, "": 1}[u] for n, u in parts)
    if not secs > 0:
        raise ValueError(f"the budget must be positive, got {text!r}")
    return secs


def job_order(systems: Iterable[str], seeds: int, seeds_other: int) -> list[dict[str, Any]]:
    """Interleaved jobs: round r runs seed r of every system that has one."""
    systems = list(systems)
    n = {s: seeds if s in ("nasforge", "hand") else seeds_other for s in systems}
    return [{"id": f"{s}-s{r}", "system": s, "seed": r}
            for r in range(max(n.values(), default=0)) for s in systems if r < n[s]]


def pending(jobs: list[dict[str, Any]], journal: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The jobs still to run: all but those the journal has as ``ok`` (failed ones rerun)."""
    done = journal.get("jobs", {})
    return [j for j in jobs if done.get(j["id"], {}).get("status") != "ok"]


def new_journal(budget: float, work: str) -> dict[str, Any]:
    return {"version": JOURNAL_VERSION, "budget": budget, "work": work, "jobs": {}}


def load_journal(path: Path, budget: float, work: str, resume: bool) -> dict[str, Any]:
    """The journal to continue (``resume``) or a new one; an old journal is kept as
    ``*.prev.json`` rather than overwritten. Resuming with another budget is an error."""
    if path.is_file():
        old = json.loads(path.read_text())
        if resume:
            if abs(float(old.get("budget", -1)) - budget) > 1e-6:
                raise SystemExit(f"{path} is for a {old.get('budget')} s budget, not {budget:g} s;"
                                 " rerun without --resume or with that --budget")
            return old
        shutil.copyfile(path, path.with_suffix(".prev.json"))
    return new_journal(budget, work)


def save_journal(path: Path, journal: Mapping[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(journal, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def _median(xs: list[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def summarize(records: Iterable[Mapping[str, Any]], systems: Iterable[str],
              budget: float) -> list[dict[str, Any]]:
    """One row per system: over its successful runs, median / min / max test accuracy,
    median params and trials, median and max wall time, the runs over budget."""
    records = list(records)
    rows = []
    for s in systems:
        runs = sorted((r for r in records if r["system"] == s), key=lambda r: r["seed"])
        ok = [r for r in runs if r.get("status") == "ok" and r.get("test_accuracy") is not None]
        accs = [float(r["test_accuracy"]) for r in ok]
        walls = [float(r["wall_s"]) for r in runs if r.get("wall_s") is not None]
        rows.append({
            "system": s, "runs": len(runs), "ok": len(ok),
            "median": _median(accs), "min": min(accs, default=None),
            "max": max(accs, default=None),
            "params": _median([float(r["params"]) for r in ok if r.get("params") is not None]),
            "trials": _median([float(r["trials"]) for r in ok if r.get("trials") is not None]),
            "wall_median": _median(walls), "wall_max": max(walls, default=None),
            "overruns": [r["id"] for r in runs if overran(r, budget)],
            "failed": [r["id"] for r in runs if r.get("status") != "ok"],
        })
    return rows


def overran(rec: Mapping[str, Any], budget: float) -> bool:
    w = rec.get("wall_s")
    return w is not None and float(w) > budget * (1 + OVERRUN)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f} %"


def _num(x: float | None, fmt: str = ",.0f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def parallel_note(cores: list[int]) -> str:
    if len(cores) == 1:
        return (f"Jobs ran one after another, each pinned to core {cores[0]} "
                "(`taskset -c`), one torch thread.")
    return (f"**Jobs ran {len(cores)} at a time, one per core (cores "
            f"{','.join(map(str, cores))}), to cut the benchmark's wall time by "
            f"{len(cores)}x.** Each job still had one pinned core and one torch thread, "
            "but it shared the memory bandwidth and caches with the job on the other core, "
            "so it may have run somewhat slower than it would alone.")


def render(rows: list[dict[str, Any]], records: list[dict[str, Any]],
           meta: Mapping[str, Any]) -> str:
    """The markdown report: per-system table, differences, per-run rows, set-up notes."""
    budget = float(meta["budget"])
    title = "Fashion-MNIST: nasforge against its peers at equal wall time"
    if meta.get("quick"):
        title += " (--quick smoke test, not a result)"
    lines = [f"# {title}", "",
             f"Budget {budget:g} s ({budget / 60:.3g} min) per run, search and final training "
             "included, on one pinned CPU core with one torch thread; test accuracy on the "
             "official 10k test set. " + parallel_note(meta["cores"]), "",
             "| system | runs ok | median test acc | min | max | params (median) | "
             "trials (median) | wall s median / max | over budget |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        over = ", ".join(f"**{i}**" for i in r["overruns"]) or "no"
        lines.append(
            f"| {LABELS.get(r['system'], r['system'])} | {r['ok']}/{r['runs']} | "
            f"{_pct(r['median'])} | {_pct(r['min'])} | {_pct(r['max'])} | "
            f"{_num(r['params'])} | {_num(r['trials'], '.0f')} | "
            f"{_num(r['wall_median'], '.0f')} / {_num(r['wall_max'], '.0f')} | {over} |")
    nf = next((r for r in rows if r["system"] == "nasforge"), None)
    if nf is not None and nf["median"] is not None:
        lines += ["", "nasforge against each peer (median test accuracy; the error ratio is "
                  "nasforge's test error over the peer's):", "",
                  "| peer | nasforge - peer | error ratio |", "|---|---:|---:|"]
        for r in rows:
            if r["system"] == "nasforge":
                continue
            if r["median"] is None:
                lines.append(f"| {LABELS.get(r['system'], r['system'])} | no result | - |")
                continue
            diff = 100 * (nf["median"] - r["median"])
            ratio = (1 - nf["median"]) / (1 - r["median"]) if r["median"] < 1 else math.nan
            lines.append(f"| {LABELS.get(r['system'], r['system'])} | {diff:+.2f} points | "
                         f"{ratio:.2f} |")
    elif nf is not None:
        lines += ["", "nasforge has no successful run, so there is no comparison."]
    lines += ["", "## Every run", "",
              "| run | test acc | params | trials | wall s | vs budget | core | "
              "load start / end | notes |",
              "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for rec in sorted(records, key=lambda r: (list(LABELS).index(r["system"])
                                              if r["system"] in LABELS else 9, r["seed"])):
        wall = rec.get("wall_s")
        vs = "-" if wall is None else f"{100 * (wall / budget - 1):+.1f} %"
        if overran(rec, budget):
            vs = f"**{vs} OVER**"
        ls, le = rec.get("load_start"), rec.get("load_end")
        load = "-" if not ls or not le else f"{ls[0]:.2f} / {le[0]:.2f}"
        if rec.get("status") == "ok":
            notes = rec.get("notes") or ""
        else:
            notes = f"**FAILED**: {rec.get('notes') or ''} {rec.get('error_tail') or ''}"
        acc = _pct(rec.get("test_accuracy"))
        if rec.get("test_accuracy_no_tta") is not None:
            acc += f" ({_pct(rec['test_accuracy_no_tta'])} no TTA)"
        lines.append(
            f"| {rec['id']} | {acc} | {_num(rec.get('params'))} | "
            f"{_num(rec.get('trials'), '.0f')} | {_num(wall, '.1f')} | {vs} | "
            f"{rec.get('core', '-')} | {load} | {_cell(notes)[:600]} |")
    m = meta.get("machine", {})
    lines += [
        "", "## Set-up", "",
        f"- Machine: {m.get('cpu', '?')}, {m.get('cpus', '?')} logical CPUs, Python "
        f"{m.get('python', '?')}, torch {m.get('torch', '?')}, {m.get('platform', '?')}. "
        f"Load average (1 min) at the start {meta.get('load_start', ['?'])[0]} and at the "
        f"end {meta.get('load_end', ['?'])[0]}; per run in the table: other jobs on the "
        "machine slow every system, which is why the runs are interleaved.",
        f"- Seeds: {meta.get('seeds_note', '?')}. Each run is a subprocess "
        "`taskset -c CORE ...` with OMP_NUM_THREADS=MKL_NUM_THREADS=1; wall time is measured "
        "by this runner around the subprocess (start-up and imports included) and a run is "
        f"flagged when it exceeds the budget by more than {100 * OVERRUN:.0f} %.",
        "- nasforge: `nasforge search --dataset fashion-mnist --time-budget <budget>s --seed S "
        "--out RUN --no-progress`, its planned default job (search, then the best network "
        "retrained on all 60k training images for the time left); score and params from "
        "`RUN/best/summary.json`, trials from the run store. nasforge serves a model trained "
        "with flips with flip test-time augmentation: its score includes it, the plain "
        "accuracy is in brackets; the peers' scores are plain.",
        "- hand: 2 x [(conv3x3-BN-ReLU) x 2, max-pool, dropout 0.1 / 0.2], 32 / 64 channels, "
        "FC-128, dropout 0.3 (468,010 params); AdamW 2e-3, weight decay 5e-4, batch 128, "
        "label smoothing 0.1, flips, cosine over the wall-clock training time, all 60k "
        "images, channels_last (`peers/hand_cnn.py`).",
        "- optuna: TPESampler(seed) + MedianPruner, 2-5 blocks of width 16-96, kernel 3/5, "
        "optional BN, double conv and max-pool, dropout, GAP or FC head; each trial 1 epoch "
        "on a stratified 20 % of the training split, pruned on validation accuracy at each "
        "half epoch; 40 % of the budget, then the winner retrained like the hand CNN "
        "(`peers/optuna_tpe.py`).",
        "- autokeras: `ImageClassifier(max_trials=1)` (AutoKeras's first image candidate), "
        "Keras 3 torch backend, batch 128, fitted on all 60k with a callback that stops at "
        "the budget less the test time, no refit (`peers/autokeras_peer.py`).",
        f"- Date: {meta.get('date', '?')}. Logs, peer JSONs and nasforge runs in "
        f"`{meta.get('work', '?')}`; journal `{meta.get('journal', '?')}`.",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ running jobs
def machine_info() -> dict[str, Any]:
    import torch
    from _common import cpu_name

    return {"cpu": cpu_name(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "platform": f"{platform.system()} {platform.release()}"}


def _nasforge_exe() -> list[str]:
    exe = shutil.which("nasforge")
    return [exe] if exe else [sys.executable, "-m", "nasforge.cli"]


def command(job: Mapping[str, Any], budget: float, core: int, work: Path) -> list[str]:
    pin = ["taskset", "-c", str(core)]
    if job["system"] == "nasforge":
        return pin + _nasforge_exe() + [
            "search", "--dataset", "fashion-mnist", "--time-budget", f"{budget:g}s",
            "--seed", str(job["seed"]), "--out", str(work / "runs" / job["id"]),
            "--no-progress"]
    return pin + [sys.executable, str(PEERS / PEER_SCRIPTS[job["system"]]),
                  "--budget", f"{budget:g}", "--seed", str(job["seed"]),
                  "--out", str(work / "json" / f"{job['id']}.json")]


def _tail(path: Path, n: int = 12) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines()
                 if ln.strip() and not set(ln) & set("┏┃┡└━─┳╇┩┴")]  # no rich tables
    except OSError:
        return ""
    return " / ".join(lines[-n:])[-1500:]


def _nasforge_trials(run: Path) -> tuple[list[Any] | None, str]:
    """The run's trial records from its store, or (None, why not)."""
    try:
        from nasforge.store import RunStore

        store = RunStore.open(run)
        try:
            return store.trials(), ""
        finally:
            store.close()
    except Exception as e:  # noqa: BLE001 - reported, not fatal
        return None, f"{type(e).__name__}: {e}"


def collect(job: Mapping[str, Any], work: Path) -> dict[str, Any]:
    """What the finished job left: score, params, trials, notes (status ``ok`` or
    ``failed`` with the reason)."""
    if job["system"] == "nasforge":
        run = work / "runs" / job["id"]
        summ = run / "best" / "summary.json"
        trials, why = _nasforge_trials(run)
        if not summ.is_file():
            errs = sorted({(t.error or "?").strip().splitlines()[0][:200]
                           for t in trials or [] if t.status == "failed"})
            told = (f"; {len(trials)} trials, {sum(t.ok for t in trials)} ok; trial errors: "
                    f"{' | '.join(errs) or '-'}") if trials is not None else f"; {why}"
            return {"status": "failed", "trials": None if trials is None else len(trials),
                    "notes": f"no best/summary.json{told}"}
        doc = json.loads(summ.read_text())
        mt = doc.get("metrics", {})
        out = {"status": "ok" if mt.get("test_accuracy") is not None else "failed",
               "test_accuracy": mt.get("test_accuracy"),
               "test_accuracy_no_tta": mt.get("test_accuracy_no_tta"),
               "params": mt.get("params"), "trials": None,
               "notes": f"`{doc.get('arch', '?')}`, {_num(mt.get('epochs'), '.2f')} final "
                        f"epochs in {_num(mt.get('train_time_s'), '.0f')} s"}
        if trials is not None:
            out["trials"] = sum(t.done for t in trials)
            out["notes"] += f", {sum(t.ok for t in trials)} ok trials of {len(trials)}"
        else:
            out["notes"] += f" (trials unknown: {why})"
        return out
    path = work / "json" / f"{job['id']}.json"
    if not path.is_file():
        return {"status": "failed", "notes": f"no {path.name}"}
    doc = json.loads(path.read_text())
    ok = doc.get("test_accuracy") is not None
    return {"status": "ok" if ok else "failed", "test_accuracy": doc.get("test_accuracy"),
            "params": doc.get("params"), "trials": doc.get("trials"),
            "peer_wall_s": doc.get("wall_s"), "notes": doc.get("notes", ""),
            **({} if ok else {"error_tail": (doc.get("error") or "")[-800:]})}


def run_job(job: Mapping[str, Any], budget: float, core: int, work: Path) -> dict[str, Any]:
    """Run one job pinned to ``core``; its record (runner-measured wall time, load)."""
    cmd = command(job, budget, core, work)
    log = work / "logs" / f"{job['id']}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    if job["system"] == "nasforge":
        shutil.rmtree(work / "runs" / job["id"], ignore_errors=True)  # a failed earlier try
    else:
        (work / "json" / f"{job['id']}.json").unlink(missing_ok=True)
    env = {**os.environ, **THREAD_ENV, "PYTHONUNBUFFERED": "1"}
    rec: dict[str, Any] = {**job, "core": core, "cmd": " ".join(cmd), "log": str(log),
                           "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                           "load_start": list(os.getloadavg())}
    t0 = time.monotonic()
    rc: int | str
    with open(log, "w") as f:
        try:
            proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                    cwd=HERE.parent)
        except OSError as e:
            proc, rc = None, f"could not start: {e}"
        if proc is not None:
            try:
                rc = proc.wait(timeout=kill_after(budget))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                rc = f"killed after {kill_after(budget):.0f} s"
    rec["wall_s"] = time.monotonic() - t0
    rec["load_end"] = list(os.getloadavg())
    rec["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    rec["returncode"] = rc
    try:
        rec.update(collect(job, work))
    except Exception as e:  # noqa: BLE001 - an unreadable result is a failed run
        rec.update(status="failed", notes=f"result unreadable: {type(e).__name__}: {e}")
    if rc != 0:
        rec["status"] = "failed"
        rec["notes"] = f"exit {rc}; {rec.get('notes', '')}"
    if rec["status"] != "ok" and not rec.get("error_tail"):
        rec["error_tail"] = _tail(log)
    return rec


def run_all(todo: list[dict[str, Any]], cores: list[int], budget: float, work: Path,
            done: Callable[[dict[str, Any]], None],
            runner: Callable[..., dict[str, Any]] = run_job, stagger: float = 2.0) -> None:
    """Run ``todo`` in order, ``len(cores)`` at a time (one job per core); ``done(record)``
    is called (under a lock) as each job finishes. Parallel workers start ``stagger``
    seconds apart, so that their imports and data loading do not all collide."""
    q: queue.Queue[dict[str, Any]] = queue.Queue()
    for j in todo:
        q.put(j)
    lock = threading.Lock()

    def worker(core: int) -> None:
        while True:
            try:
                job = q.get_nowait()
            except queue.Empty:
                return
            with lock:
                print(f"[{time.strftime('%H:%M:%S')}] {job['id']} on core {core} "
                      f"({budget:g} s)", flush=True)
            rec = runner(job, budget, core, work)
            with lock:
                done(rec)

    if len(cores) == 1:
        worker(cores[0])
        return
    threads = [threading.Thread(target=worker, args=(c,)) for c in cores]
    for i, t in enumerate(threads):
        t.start()
        if i + 1 < len(threads):
            time.sleep(stagger)
    for t in threads:
        t.join()


def chart(rows: list[dict[str, Any]], records: list[dict[str, Any]], path: Path,
          budget: float, parallel: bool) -> None:
    """Bar chart: median test accuracy per system, min-max bars, one dot per run; a
    hatched bar has a run over budget, a system without a result says so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    meds = [100 * r["median"] for r in rows if r["median"] is not None]
    lo = max(0.0, min(100 * r["min"] for r in rows if r["min"] is not None) - 3) if meds else 0
    hi = min(100.0, max(100 * r["max"] for r in rows if r["max"] is not None) + 2) if meds \
        else 100
    for i, r in enumerate(rows):
        if r["median"] is None:
            ax.text(i, lo + 0.05 * (hi - lo), "no result", ha="center", color="red")
            continue
        med = 100 * r["median"]
        ax.bar(i, med - lo, bottom=lo,
               color="tab:orange" if r["system"] == "nasforge" else "tab:blue",
               hatch="//" if r["overruns"] else None,
               yerr=[[med - 100 * r["min"]], [100 * r["max"] - med]], capsize=5)
        pts = [100 * x["test_accuracy"] for x in records
               if x["system"] == r["system"] and x.get("status") == "ok"]
        ax.plot([i] * len(pts), pts, "k.", ms=6)
        ax.text(i + 0.08, med, f"{med:.2f}", ha="left", va="bottom", fontsize=9)
    ax.set_ylim(lo, hi)
    ax.set_xticks(range(len(rows)),
                  [LABELS.get(r["system"], r["system"]).replace(" (", "\n(").replace(", ", "\n")
                   for r in rows], fontsize=8)
    ax.set_ylabel("test accuracy, %")
    ax.set_title(f"Fashion-MNIST, {budget:g} s per run on one core "
                 + ("(2 runs at a time) " if parallel else "")
                 + "- median, min-max, runs; hatched: over budget", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", default=",".join(SYSTEMS),
                    help=f"comma list of {', '.join(SYSTEMS)} (default all)")
    ap.add_argument("--budget", default="900",
                    help="wall-clock budget per run: 900, 900s, 15m (default 900 s)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of nasforge and hand")
    ap.add_argument("--seeds-other", type=int, default=1, help="seeds of optuna, autokeras")
    ap.add_argument("--cores", default="1",
                    help="comma list of cores; several run that many jobs at once, one each")
    ap.add_argument("--out", default=str(RESULTS), help="report, chart and journal folder")
    ap.add_argument("--work", default=None,
                    help="logs, peer JSONs and nasforge runs (default <repo>/runs/"
                         "bench-fashion-peers, gitignored)")
    ap.add_argument("--resume", action="store_true", help="skip the jobs the journal has done")
    ap.add_argument("--quick", action="store_true",
                    help="60 s budget, one seed each, *_quick report (smoke test)")
    args = ap.parse_args(argv)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if bad := [s for s in systems if s not in SYSTEMS]:
        ap.error(f"unknown systems {bad}; choose from {', '.join(SYSTEMS)}")
    try:
        budget = parse_budget(args.budget)
        cores = [int(c) for c in args.cores.split(",") if c.strip()]
    except ValueError as e:
        ap.error(str(e))
    if not cores or len(set(cores)) != len(cores):
        ap.error("--cores needs distinct core numbers, e.g. 1 or 0,1")
    if (avail := getattr(os, "sched_getaffinity", None)) and not set(cores) <= avail(0):
        ap.error(f"cores {cores} are not all available (this process may use {avail(0)})")
    if shutil.which("taskset") is None:
        ap.error("taskset not found (util-linux)")
    seeds, seeds_other = args.seeds, args.seeds_other
    if args.quick:
        budget, seeds, seeds_other = 60.0, 1, 1
    stem = "fashion_mnist_quick" if args.quick else "fashion_mnist"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    journal_path = out / f"{stem}_journal.json"
    # absolute: the jobs run in the repository root, this script may not
    default_work = HERE.parent / "runs" / ("bench-fashion-peers" + ("-quick" if args.quick
                                                                      else ""))
    given = str(Path(args.work).expanduser().resolve()) if args.work else None
    journal = load_journal(journal_path, budget, given or str(default_work), args.resume)
    work = Path(given or journal.get("work") or default_work)
    journal["work"] = str(work)
    jobs = job_order(systems, seeds, seeds_other)
    todo = pending(jobs, journal) if args.resume else jobs
    print(f"{len(jobs)} jobs of {budget:g} s, {len(todo)} to run, on core(s) "
          f"{','.join(map(str, cores))}: about {len(todo) * budget / len(cores) / 60:.0f} min; "
          f"work {work}, journal {journal_path}", flush=True)
    journal.setdefault("load_start", list(os.getloadavg()))
    save_journal(journal_path, journal)

    def done(rec: dict[str, Any]) -> None:
        journal["jobs"][rec["id"]] = rec
        save_journal(journal_path, journal)
        acc = rec.get("test_accuracy")
        print(f"[{time.strftime('%H:%M:%S')}] {rec['id']}: {rec['status']}, test "
              f"{_pct(acc)}, {rec['wall_s']:.1f} s"
              + ("" if rec["status"] == "ok" else f" -- {rec.get('notes', '')} "
                 f"{rec.get('error_tail', '')[-300:]}"), flush=True)

    run_all(todo, cores, budget, work, done)
    journal["load_end"] = list(os.getloadavg())
    save_journal(journal_path, journal)

    ids = {j["id"] for j in jobs}
    records = [r for k, r in journal["jobs"].items() if k in ids]
    rows = summarize(records, systems, budget)
    meta = {"budget": budget, "cores": cores, "quick": args.quick, "machine": machine_info(),
            "load_start": [round(x, 2) for x in journal["load_start"]],
            "load_end": [round(x, 2) for x in journal["load_end"]],
            "seeds_note": f"{seeds} for nasforge and hand (0..{seeds - 1}), {seeds_other} "
                          f"for optuna and autokeras (0..{seeds_other - 1})",
            "date": time.strftime("%Y-%m-%d %H:%M"), "work": str(work),
            "journal": str(journal_path)}
    md = render(rows, records, meta)
    (out / f"{stem}.md").write_text(md)
    chart(rows, records, out / f"{stem}.png", budget, len(cores) > 1)
    from _common import html_report

    first = next((j for j in jobs if j["system"] == "nasforge"
                  and (work / "runs" / j["id"]).is_dir()), None)
    if first is not None:  # one nasforge run's plots, for a look beyond the table
        html_report(work / "runs" / first["id"], out / f"{stem}.md")
    print(md)
    print(f"written to {out / (stem + '.md')} and {out / (stem + '.png')}")
    return 0 if any(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
