"""Latency-constrained search on Fashion-MNIST: does the returned model meet a latency limit
that the unconstrained best breaks, and what accuracy does the limit cost?

The limit binds by construction, measured in the same run on the same runtime and threads:

1. **Unconstrained**: regularized evolution on ``val_accuracy`` alone over a ``cnn`` space
   whose latencies span about 10x (up to 4 blocks, widths 16-64, stems 8-24); each trial
   trains 2 epochs on 30 % of the training split (enough to rank architectures: a good
   one reaches ~85 % validation accuracy there). The best architecture is retrained for
   4 epochs on the whole training split, tested once on the 10k test split, exported,
   and its batch-1 torch latency is measured again by this script (100 repeats):
   ``L_ref``.
2. **Limit**: ``latency_ms <= --limit-fraction * L_ref`` (default 0.5), so the
   unconstrained answer breaks it.
3. **Constrained**: NSGA-II over ``[val_accuracy:max, latency_ms:min]`` with that limit,
   same space, fidelity, search time and final retrain. nasforge returns the most
   accurate feasible trial, re-measured before and after the retrain (falling back to the
   next one if it broke the limit); this script times the exported model once more.
4. Reports both models (test accuracy, params, torch and ONNX Runtime latency at batch 1
   and 32), whether each meets the limit, the measured accuracy/latency front of the
   constrained search (table and PNG with both searches' trials), and the machine load
   sampled during the run.

Writes ``benchmarks/results/constrained_fashion_mnist.md`` and ``.png``.

    python benchmarks/constrained.py           # ~25 min (at most ~30) on 2 idle cores
    python benchmarks/constrained.py --quick   # smoke test, ~1-2 min, to --out only

Searches run ``--workers`` (default 2) trial processes with ``--threads`` (default 1)
torch thread each; the final retrains and all latencies of the returned models run in
this process with the same thread count. Trial latencies are measured while the other
worker trains, the final ones on a quiet process: see the set-up notes of the result.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # _common sits next to this script
    sys.path.insert(0, str(HERE))
from _common import cpu_name, prepare, search  # noqa: E402

RESULTS_MD = HERE / "results" / "constrained_fashion_mnist.md"
RESULTS_PNG = HERE / "results" / "constrained_fashion_mnist.png"
LATENCY_KEYS = ("latency_ms", "latency_ms_b32", "onnx_latency_ms", "onnx_latency_ms_b32")
OBJECTIVES = ["val_accuracy:max", "latency_ms:min"]


# ---------------------------------------------------------------------------- machine load
class LoadMonitor:
    """Samples the 1-min load average every ``every`` seconds in a daemon thread, tagged
    with the phase the script is in and how many processes of this run were busy then."""

    #: the 1-min load average trails by about a minute: a sample is compared with the most
    #: processes this run kept busy within this window before it
    LAG_S = 60.0

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.samples: list[tuple[str, int, float]] = []
        self._busy_at: list[tuple[float, int]] = []
        self.phase, self.busy = "start", 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> LoadMonitor:
        self._thread.start()
        return self

    def set(self, phase: str, busy: int) -> None:
        self.phase, self.busy = phase, busy
        self._busy_at.append((time.monotonic(), busy))

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            now = time.monotonic()
            recent = [b for t, b in self._busy_at if t >= now - self.LAG_S]
            last = [b for t, b in self._busy_at if t < now - self.LAG_S][-1:]
            busy = max(recent + last + [self.busy])
            self.samples.append((self.phase, busy, os.getloadavg()[0]))

    def stop(self) -> None:
        self._stop.set()

    def summary(self) -> list[tuple[str, int, int, float, float, float]]:
        """Per phase: (phase, own busy processes (most within the lag window), samples,
        min, median, max 1-min load)."""
        out = []
        for phase in dict.fromkeys(p for p, _, _ in self.samples):
            vals = [v for p, _, v in self.samples if p == phase]
            busy = max(b for p, b, _ in self.samples if p == phase)
            out.append((phase, busy, len(vals), min(vals), statistics.median(vals), max(vals)))
        return out


# ---------------------------------------------------------------------------- one search
def run(name: str, label: str, args: argparse.Namespace, plan: dict[str, Any],
        mon: LoadMonitor, **goals: Any) -> dict[str, Any]:
    """One search + final retrain through the public API; returns the row of the table."""
    import nasforge
    from nasforge.executors import PoolExecutor
    from nasforge.metrics import measure_latency

    out = Path(args.out) / name
    kw: dict[str, Any] = {}
    ex = None
    if args.workers > 1:  # the driver's thread count in every worker (same latency set-up)
        ex = PoolExecutor(max_workers=args.workers, kind="process",
                          threads_per_worker=args.threads)
        kw["executor"] = ex
    mon.set(f"{label}: search", args.workers)
    timer = threading.Timer(plan["search_s"], mon.set, (f"{label}: final retrain", 1))
    timer.daemon = True
    timer.start()  # the search stops at search_s (plus the trials still running)
    try:
        res, wall = search(out, args, plan, **goals, **kw)
    finally:
        timer.cancel()
        if ex is not None:
            ex.shutdown(wait=True)
    mon.set(f"{label}: re-measure", 1)
    done = [t for t in res.trials if t.done]
    ok = [t for t in done if t.ok]
    row: dict[str, Any] = {
        "name": name, "label": label, "trials": len(done), "ok_trials": ok,
        "failed": sum(t.status == "failed" for t in done), "wall_s": wall,
        "run_dir": str(out), "result": res, "message": res.message,
        "arch": res.best_arch.text if res.best_arch else "-",
        "trial_id": None, "search_val_accuracy": math.nan, "search_latency_ms": math.nan,
        "final_train_s": math.nan, "final_epochs": math.nan,
    }
    if res.model_dir is None:
        row.update(test_accuracy=math.nan, params=0, rechecked_ms=math.nan,
                   **{k: math.nan for k in LATENCY_KEYS}, latency_threads="-")
        return row
    tm = res.test_metrics
    loaded = nasforge.load(res.model_dir)
    # once more, by the script itself, on the exported model (more repeats than the loop)
    recheck = measure_latency(loaded.module.to("cpu"), loaded.input_shape, warmup=10,
                              repeats=100)["median_ms"]
    try:
        summary = json.loads((Path(res.model_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    row.update(test_accuracy=tm["test_accuracy"], params=int(tm["params"]),
               flops=float(tm.get("flops", math.nan)),
               rechecked_ms=recheck, latency_threads=int(tm.get("latency_threads", 0)),
               search_val_accuracy=res.best_metrics.get("val_accuracy", math.nan),
               search_latency_ms=res.best_metrics.get("latency_ms", math.nan),
               trial_id=(summary.get("extra") or {}).get("trial_id"), summary=summary,
               final_train_s=float(tm.get("train_time_s", math.nan)),
               final_epochs=tm.get("epochs", math.nan),
               **{k: float(tm.get(k, math.nan)) for k in LATENCY_KEYS})
    return row


# ---------------------------------------------------------------------------- the figure
def plot(rows: list[dict[str, Any]], limit: float, ref: float, path: Path) -> None:
    """Search-time val accuracy vs torch batch-1 latency of every trial of both searches;
    the constrained search's feasible front, the limit, ``L_ref`` and both chosen trials."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import ScalarFormatter

    from nasforge.objectives import Constraint
    from nasforge.pareto import front_of_records

    unc, con = rows
    cons = [Constraint("latency_ms", "<=", limit)]

    def xy(trials: list[Any]) -> list[tuple[float, float]]:
        return [(float(t.metrics["latency_ms"]), float(t.metrics["val_accuracy"]))
                for t in trials if "latency_ms" in t.metrics and "val_accuracy" in t.metrics]

    ctr = con["ok_trials"]
    front_idx = set(front_of_records(ctr, OBJECTIVES, cons))
    feas = xy([t for i, t in enumerate(ctr) if i not in front_idx
               and t.metrics.get("latency_ms", math.inf) <= limit])
    infeas = xy([t for t in ctr if t.metrics.get("latency_ms", math.inf) > limit])
    front = sorted(xy([ctr[i] for i in front_idx]))
    other = xy(unc["ok_trials"])
    allpts = feas + infeas + front + other
    fig = Figure(figsize=(10, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    top = [y for _, y in front] + [y for _, y in other]
    lo = max(0.0, (min(sorted(top, reverse=True)[: max(3, len(top) // 2)]) if top else 0) - 0.1)
    below = sum(y < lo for _, y in allpts)

    def clip(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(x, max(y, lo)) for x, y in pts]

    if other:
        ax.scatter(*zip(*clip(other), strict=True), s=26, marker="^", facecolors="none",
                   edgecolors="tab:orange", alpha=0.8, label="unconstrained trials (evolution)")
    if feas:
        ax.scatter(*zip(*clip(feas), strict=True), s=18, c="tab:blue", alpha=0.5,
                   label="constrained trials, feasible")
    if infeas:
        ax.scatter(*zip(*clip(infeas), strict=True), s=22, c="tab:gray", marker="x",
                   alpha=0.7, label="constrained trials, over the limit")
    if front:
        ax.plot(*zip(*clip(front), strict=True), "-o", c="tab:red", ms=6, lw=1.5,
                drawstyle="steps-post", label="constrained search: feasible front")
    for r, c in ((unc, "tab:orange"), (con, "tab:red")):
        if math.isfinite(r["search_latency_ms"]):
            ax.scatter([r["search_latency_ms"]], [max(r["search_val_accuracy"], lo)],
                       s=220, marker="*", c=c, edgecolors="black", zorder=5,
                       label=f"returned: {r['label']}")
    ax.axvline(limit, ls="--", c="tab:red", lw=1, label=f"limit {limit:.3f} ms")
    ax.axvline(ref, ls=":", c="tab:orange", lw=1, label=f"L_ref {ref:.3f} ms (re-measured)")
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_ylim(bottom=lo)
    ax.set_xlabel("torch CPU latency, batch 1, ms (search-time measurement; log scale)")
    ax.set_ylabel("validation accuracy after the trial's training")
    note = f"; {below} trial(s) below {lo:.2f} drawn at the bottom edge" if below else ""
    ax.set_title(f"Fashion-MNIST, latency_ms <= {limit:.3f} ms{note}", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


# ---------------------------------------------------------------------------- the report
def _f(v: Any, fmt: str = ".3f") -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return "-"
    return format(v, fmt) if isinstance(v, int | float) else str(v)


def _load_text(load0: tuple[float, ...], load1: tuple[float, ...], mon: LoadMonitor,
               ncpu: int) -> list[str]:
    """The load average as measured, and only the conclusions these numbers support."""
    lines = [
        f"- **Machine load** ({ncpu} logical CPUs). Load average (1/5/15 min) before this "
        f"run started anything: {', '.join(f'{x:.2f}' for x in load0)}; at the end: "
        f"{', '.join(f'{x:.2f}' for x in load1)}. The 1-min load sampled every "
        f"{mon.every:.0f} s during the run (it includes this run's own busy processes, "
        "listed; phases split by the search time, so a phase boundary is approximate, and "
        "the 1-min average lags by about a minute, so each sample is compared with the most "
        "processes this run kept busy in the minute before it):",
        "",
        "  | phase | this run's busy processes (last minute) | samples | "
        "1-min load min / median / max |",
        "  |---|---:|---:|---|",
    ]
    excess = []
    for phase, busy, n, lo, med, hi in mon.summary():
        lines.append(f"  | {phase} | {busy} | {n} | {lo:.2f} / {med:.2f} / {hi:.2f} |")
        excess.append((phase, med - busy))
    lines.append("")
    start = ("the machine was idle when the run started" if load0[0] < 0.5 else
             f"other processes were running when the run started (1-min load "
             f"{load0[0]:.2f} on {ncpu} CPUs)")
    busy_phases = [f"'{p}' (+{e:.1f})" for p, e in excess if e > 0.5]
    during = (
        "during the run the median 1-min load stayed within about 0.5 of what this run's "
        "own processes account for in every phase, i.e. no sign of substantial other load"
        if not busy_phases else
        "the median 1-min load exceeded this run's own busy processes by more than 0.5 in "
        f"{'; '.join(busy_phases)}: other processes competed for the cores there, so "
        "latencies, wall times and trial counts were affected")
    lines.append(f"  Reading: {start}; {during}.")
    return lines


def _data_text(plan: dict[str, Any]) -> str:
    n = plan["dataset_options"].get("max_train")
    return (f"a stratified {n}-image train+validation pool (--quick)" if n else
            "the whole 60k train+validation pool (54k training, 6k validation)")


def report(rows: list[dict[str, Any]], limit: float, ref: float, args: argparse.Namespace,
           plan: dict[str, Any], load0: tuple[float, ...], load1: tuple[float, ...],
           mon: LoadMonitor, total_s: float, png: Path) -> str:
    from nasforge.objectives import Constraint, Objective
    from nasforge.pareto import front_table

    unc, con = rows
    cons = [Constraint("latency_ms", "<=", limit)]
    ncpu = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    est = plan["estimator_options"]
    fid = (f"{est['epochs']} epoch(s) on {100 * est['data_fraction']:.0f} % of the training "
           f"split")
    lines = [
        "# Fashion-MNIST: latency-constrained search vs the unconstrained best",
        "",
        f"Generated by `benchmarks/constrained.py{' --quick' if args.quick else ''}` on "
        f"{time.strftime('%Y-%m-%d %H:%M')}; total run {total_s / 60:.1f} min.",
        "",
        f"The unconstrained best model measures **L_ref = {ref:.3f} ms** (torch, CPU, batch 1, "
        f"median of 100, {unc['latency_threads']} thread(s), timed by this script on the "
        f"exported model); the limit is {args.limit_fraction:g} x L_ref: "
        f"**latency_ms <= {limit:.3f} ms**.",
        "",
        "| search | test acc | params | torch b=1 ms | torch b=32 ms | ORT b=1 ms | "
        "ORT b=32 ms | threads | re-measured b=1 ms | meets limit | trials (failed) | "
        "search val acc | search + final wall s | architecture |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---:|---|",
    ]
    for r in rows:
        ok = r["rechecked_ms"] <= limit if math.isfinite(r["rechecked_ms"]) else None
        meets = "-" if ok is None else ("yes" if ok and r["latency_ms"] <= limit else "**no**")
        acc = "-" if not math.isfinite(r["test_accuracy"]) else f"{100 * r['test_accuracy']:.2f} %"
        sva = r["search_val_accuracy"]
        lines.append(
            f"| {r['label']} | {acc} | {r['params']:,} | {_f(r['latency_ms'])} | "
            f"{_f(r['latency_ms_b32'])} | {_f(r['onnx_latency_ms'])} | "
            f"{_f(r['onnx_latency_ms_b32'])} | {r['latency_threads']} | "
            f"{_f(r['rechecked_ms'])} | {meets} | {r['trials']} ({r['failed']}) | "
            f"{_f(100 * sva, '.2f') + ' %' if math.isfinite(sva) else '-'} | "
            f"{r['wall_s']:.0f} | `{r['arch']}` |")
    lines.append("")
    for r in rows:
        if r["message"]:
            lines.append(f"- {r['label']}: {r['message']}")

    # what the numbers say (generated; no hand-written claims)
    facts = []
    if math.isfinite(unc["rechecked_ms"]):
        binds = unc["rechecked_ms"] > limit
        facts.append(
            f"The limit {'binds' if binds else 'does NOT bind'}: the unconstrained best "
            f"({unc['rechecked_ms']:.3f} ms re-measured, {unc['latency_ms']:.3f} ms by "
            f"nasforge after its retrain) is {unc['rechecked_ms'] / limit:.2f}x the limit.")
    if math.isfinite(con["rechecked_ms"]):
        meets = con["rechecked_ms"] <= limit and con["latency_ms"] <= limit
        facts.append(
            f"The constrained search's model {'meets' if meets else '**breaks**'} the limit: "
            f"{con['latency_ms']:.3f} ms (nasforge, after the final retrain) and "
            f"{con['rechecked_ms']:.3f} ms (this script, 100 repeats) vs {limit:.3f} ms; that "
            f"is {con['rechecked_ms'] / ref:.2f}x the unconstrained best's latency, with "
            f"{con['params'] / max(unc['params'], 1):.2f}x its parameters.")
        if math.isfinite(unc["test_accuracy"]):
            d = 100 * (con["test_accuracy"] - unc["test_accuracy"])
            facts.append(
                f"Test accuracy: {100 * con['test_accuracy']:.2f} % constrained vs "
                f"{100 * unc['test_accuracy']:.2f} % unconstrained ({d:+.2f} points; one "
                f"seed, one retrain each: differences below ~0.5 points are within "
                f"seed-to-seed noise).")
    elif con["message"]:
        facts.append(f"The constrained search returned no model: {con['message']}")
    u_feas = [t for t in unc["ok_trials"] if t.metrics.get("latency_ms", math.inf) <= limit]
    c_feas = [t for t in con["ok_trials"] if t.metrics.get("latency_ms", math.inf) <= limit]

    def best_val(ts: list[Any]) -> str:
        return f"{100 * max(t.metrics['val_accuracy'] for t in ts):.2f} %" if ts else "-"

    facts.append(
        f"Search-time feasibility: {len(c_feas)} of {len(con['ok_trials'])} completed "
        f"constrained trials met the limit (best validation accuracy {best_val(c_feas)}), "
        f"against {len(u_feas)} of {len(unc['ok_trials'])} unconstrained trials (best "
        f"{best_val(u_feas)}): filtering the unconstrained search afterwards is the "
        f"baseline the constrained search has to beat.")
    lat_all = [float(t.metrics["latency_ms"]) for r in rows for t in r["ok_trials"]
               if "latency_ms" in t.metrics]
    if lat_all:
        facts.append(
            f"Latency across all {len(lat_all)} completed trials of both searches: "
            f"{min(lat_all):.3f} to {max(lat_all):.3f} ms ({max(lat_all) / min(lat_all):.1f}x), "
            f"median {statistics.median(lat_all):.3f} ms.")
    lines += ["## What the numbers say", "", *[f"- {f}" for f in facts], ""]

    trials = con["ok_trials"]
    lines += [
        f"## Measured accuracy/latency front of the constrained search "
        f"({len(trials)} completed trials, {len(c_feas)} feasible)",
        "",
        f"Search-time values ({fid}; validation accuracy; torch batch-1 latency measured "
        "after each trial's training), feasible non-dominated trials, best accuracy first:",
        "",
        front_table(
            [{"arch": f"{t.id}: {t.arch}", "metrics": t.metrics} for t in trials],
            [Objective("val_accuracy", "max"), Objective("latency_ms", "min")], cons,
            extra=["params", "flops", "train_time_s"]).rstrip(),
        "",
        f"![front]({png.name})",
        "",
        "Orange triangles: the unconstrained search's trials; stars: the trials each search "
        "returned (their search-time values; test accuracies are in the table above).",
        "",
        "## Set-up",
        "",
        f"- Machine: {cpu_name()}, torch {torch.__version__}, Python "
        f"{platform.python_version()}, {args.threads} torch thread(s) everywhere (trial "
        f"workers, final retrains, every latency; ONNX Runtime gets the same count).",
        *_load_text(load0, load1, mon, ncpu or 1),
        f"- Space `cnn` {plan['space_options']} (other options at their defaults: block "
        f"types conv/sepconv/mbconv/pool, activations relu/gelu/silu/hardswish, dropouts "
        f"0-0.5, optional skip and stride-2 per block).",
        f"- Trials (both searches): {fid}, estimator options {est}; a trial that passes "
        f"`timeout` s of training counts as failed. Data: Fashion-MNIST, "
        f"{_data_text(plan)}; validation: a stratified 10 % of the train+validation pool; "
        f"the 10k test split is used once per returned model.",
        f"- Search time {plan['search_s']:.0f} s per search, {args.workers} worker "
        f"process(es); trial latencies are measured in the worker while "
        f"{'the other worker trains' if args.workers > 1 else 'nothing else of this run runs'}"
        f" ({est['latency_repeats']} repeats), so they are noisier than the final "
        "measurements, which run in this process with the workers idle.",
        f"- Unconstrained: regularized evolution {plan['evolution_options']}, objective "
        f"val_accuracy only. Constrained: NSGA-II {plan['nsga2_options']}, objectives "
        f"{', '.join(OBJECTIVES)}, constraint latency_ms <= {limit:.3f} (Deb's constrained "
        f"domination); it returns the most accurate feasible trial whose latency, re-measured "
        f"before and after the final retrain (50 repeats), stays within the limit.",
        f"- Final retrain of each returned architecture: {plan['final_epochs']} epoch(s) on "
        f"the whole training split, SGD with the estimator's defaults (lr 0.05, Nesterov "
        f"momentum 0.9, weight decay 5e-4, cosine to 0, batch {est['batch_size']}); then one "
        f"test evaluation, export (safetensors + ONNX) and torch/ONNX Runtime latency at "
        f"batch 1 and 32. 're-measured b=1' is this script timing the exported model once "
        f"more (10 warm-up, 100 repeats).",
        f"- Seed {args.seed}; one run per search: no error bars.",
    ]
    for r in rows:
        s = r.get("summary") or {}
        if s.get("latency"):
            lat = s["latency"]
            lines.append(f"- Runtimes: {lat['runtimes']['torch']}; {lat['runtimes']['onnx']}.")
            break
    for r in rows:
        if math.isfinite(r["final_train_s"]):
            lines.append(f"- {r['label']}: final retrain {r['final_epochs']} epoch(s) in "
                         f"{r['final_train_s']:.0f} s; run dir `{r['run_dir']}`.")
    if args.quick:
        lines.append("- **--quick run**: tiny budget, data and space; checks that the script "
                     "works, not a result.")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget-minutes", type=float, default=30.0,
                    help="the whole run's target; each search gets a quarter of it")
    ap.add_argument("--limit-fraction", type=float, default=0.5,
                    help="latency limit as a fraction of the unconstrained best's latency")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/ONNX Runtime threads per process (trial workers and this one)")
    ap.add_argument("--workers", type=int, default=2, help="trial worker processes")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None, help="run directories [runs/bench-constrained-TIME]")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run; writes to --out only")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if not 0 < args.limit_fraction < 1:
        ap.error("--limit-fraction must be in (0, 1)")
    if args.workers < 1:
        ap.error("--workers must be at least 1")
    load0 = os.getloadavg()
    t_start = time.monotonic()
    if not prepare(ap, args, "constrained"):
        return 2
    budget = args.budget_minutes * 60
    plan: dict[str, Any] = {
        # A quarter of the budget per search; the rest goes to the two final retrains
        # (4 epochs on 54k images: ~25 s/epoch for a mid-sized 4-block net, up to ~100 s
        # for one at the trial timeout), exports and latency measurements.
        "search_s": budget * 0.25,
        "final_epochs": 4,
        "space_options": {"max_blocks": 4, "widths": [16, 32, 48, 64],
                          "stem_widths": [8, 16, 24], "kernels": [3, 5]},
        # 2 epochs on 30 % (16.2k images, ~250 SGD steps): ~10-50 s per trial on one core
        "estimator_options": {"epochs": 2, "data_fraction": 0.3, "batch_size": 128,
                              "timeout": 60.0, "latency_repeats": 15},
        "dataset_options": {},
        "nsga2_options": {"population_size": 10},
        "evolution_options": {"population_size": 10, "sample_size": 3},
    }
    if args.quick:
        plan.update(search_s=20.0, final_epochs=1)
        plan["space_options"] = {"max_blocks": 3, "kernels": [3], "widths": [16, 32, 64],
                                 "stem_widths": [8, 16]}
        plan["estimator_options"].update(epochs=1, data_fraction=0.5, timeout=20.0)
        plan["dataset_options"] = {"max_train": 3000}
        plan["nsga2_options"] = {"population_size": 4}
        plan["evolution_options"] = {"population_size": 4, "sample_size": 2}
    mon = LoadMonitor(every=5.0 if args.quick else 10.0).start()
    print(f"load average at start: {load0}; search {plan['search_s']:.0f} s per search, "
          f"{args.workers} worker(s); runs in {args.out}", flush=True)

    unc = run("evolution-unconstrained", "evolution, unconstrained", args, plan, mon,
              strategy="evolution", strategy_options=plan["evolution_options"])
    if not math.isfinite(unc["rechecked_ms"]):
        mon.stop()
        print(f"the unconstrained search returned no model ({unc['message']}); no reference "
              "latency, stopping", file=sys.stderr)
        return 1
    ref = unc["rechecked_ms"]
    limit = round(args.limit_fraction * ref, 3)
    print(f"unconstrained: {unc['wall_s']:.0f} s, test {unc['test_accuracy']:.4f}, latency "
          f"{unc['latency_ms']:.3f} ms (re-measured {ref:.3f}); limit {limit} ms", flush=True)

    con = run("nsga2-constrained", f"NSGA-II, latency_ms <= {limit}", args, plan, mon,
              strategy="nsga2", objectives=OBJECTIVES, constraints=f"latency_ms<={limit}",
              strategy_options=plan["nsga2_options"])
    print(f"constrained: {con['wall_s']:.0f} s, test {con['test_accuracy']:.4f}, latency "
          f"{con['latency_ms']:.3f} ms (re-measured {con['rechecked_ms']:.3f})", flush=True)
    mon.stop()

    target_md = Path(args.out) / "constrained_quick.md" if args.quick else RESULTS_MD
    target_png = target_md.with_suffix(".png") if args.quick else RESULTS_PNG
    target_md.parent.mkdir(parents=True, exist_ok=True)
    rows = [unc, con]
    plot(rows, limit, ref, target_png)
    md = report(rows, limit, ref, args, plan, load0, os.getloadavg(), mon,
                time.monotonic() - t_start, target_png)
    target_md.write_text(md)
    print(md)
    print(f"written to {target_md} and {target_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
