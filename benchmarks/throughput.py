"""Trials per hour with 1 and 2 process workers and on Ray (2 CPUs), for a zero-cost proxy
(synflow on NAS-Bench-201) and a 1-epoch training estimator (cnn on a Fashion-MNIST
subset, digits when Fashion-MNIST is not installed).

Every executor evaluates the *same* fixed list of architectures through the real search
loop (``nasforge.search`` with a replaying strategy), after a warm-up that starts its
workers, so the numbers compare executors and nothing else. Repeats are interleaved
(1, 2, ray, 1, 2, ray, ...) so a change in background load hits all of them alike; the
median is reported. Writes ``benchmarks/results/throughput.md``.

    python benchmarks/throughput.py [--repeats 3] [--train-trials 8] [--proxy-trials 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nasforge import estimators, spaces
from nasforge.executors import Executor, PoolExecutor, RayExecutor, cpu_count
from nasforge.experiment import search
from nasforge.spaces.base import Arch, SearchSpace
from nasforge.strategies.base import Strategy, Suggestion

RESULTS = Path(__file__).resolve().parent / "results"


class FixedList(Strategy):
    """Asks the given architectures in order: identical work for every executor."""

    name = "fixed-list"

    def __init__(self, space: SearchSpace, archs: list[Arch], seed: int = 0,
                 metric: str = "val_accuracy", mode: str = "max") -> None:
        super().__init__(space, seed, metric, mode)
        self.archs, self.i = list(archs), 0

    def ask(self) -> Suggestion:
        arch = self.archs[self.i % len(self.archs)]
        self.i += 1
        return Suggestion(arch)

    def _tell(self, suggestion: Suggestion, result: Any) -> None:
        pass

    def _state(self) -> dict[str, Any]:
        return {"i": self.i}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.i = int(state["i"])

    def config(self) -> dict[str, Any]:
        return {**super().config(), "archs": [a.text for a in self.archs]}


def _workload(kind: str, n: int) -> dict[str, Any]:
    """Space, estimator, data, the measured archs and different warm-up archs."""
    rng = np.random.default_rng(2024)
    if kind == "proxy":
        sp = spaces.get("nb201")
        est = estimators.get("synflow")
        data = None
        metric = "synflow"
        label = "synflow proxy, nb201 (C=16, N=5), 32x32 input"
    else:
        from nasforge.data import fashion_mnist_available, load_dataset

        name = "fashion-mnist" if fashion_mnist_available() else "digits"
        data = load_dataset(name, max_train=3000, seed=0)
        sp = spaces.get("cnn", max_blocks=2, widths=[16, 32], kernels=[3, 5],
                        block_types=["conv", "sepconv", "pool"], stem_widths=[16])
        est = estimators.get("train", epochs=1, data_fraction=1.0, batch_size=64,
                             measure_latency=False)
        metric = "val_accuracy"
        label = (f"train 1 epoch, cnn (<= 2 blocks, widths 16/32), {name} "
                 f"{len(data.y_train)} training images")
    seen: set[Arch] = set()
    archs: list[Arch] = []
    while len(archs) < n + 2:
        a = sp.sample(rng)
        if a not in seen:
            seen.add(a)
            archs.append(a)
    return {"space": sp, "estimator": est, "data": data, "metric": metric, "label": label,
            "archs": archs[:n], "warmup": archs[n:]}


def _executors() -> dict[str, Callable[[], Executor]]:
    return {
        "process x1": lambda: PoolExecutor(max_workers=1),  # cores // 1 torch threads
        "process x1, 1 thread": lambda: PoolExecutor(max_workers=1, threads_per_worker=1),
        "process x2": lambda: PoolExecutor(max_workers=2),  # cores // 2 threads each
        "ray x2": lambda: RayExecutor(max_workers=2),
    }


def _spin(n: int = 3_000_000) -> float:
    t0 = time.perf_counter()
    s = 0
    for i in range(n):
        s += i * i
    return time.perf_counter() - t0


def parallel_control(repeats: int = 3) -> float:
    """Speed-up of 2 processes over 1 on a trivially parallel pure-Python loop: what this
    machine can give right now, whatever nasforge does (about 2.0 when 2 cores are free)."""
    import multiprocessing as mp

    ratios = []
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_spin, [1000, 1000])  # start both
        for _ in range(repeats):
            t0 = time.perf_counter()
            _spin()
            _spin()
            serial = time.perf_counter() - t0
            t0 = time.perf_counter()
            pool.map(_spin, [3_000_000, 3_000_000])
            ratios.append(serial / (time.perf_counter() - t0))
    return statistics.median(ratios)


def _warm(ex: Executor, w: dict[str, Any]) -> float:
    """Start the workers and run one trial on each; returns the seconds it took."""
    t0 = time.perf_counter()
    ex.bind(w["estimator"], w["space"], w["data"])
    if isinstance(ex, PoolExecutor):
        ex.wait_ready(timeout=600)  # so that each worker gets a warm-up trial
    futs = [ex.submit_trial(a, None) for a in w["warmup"][: ex.max_workers]]
    for f in futs:
        f.result(timeout=600)
    return time.perf_counter() - t0


def _run_once(ex: Executor, w: dict[str, Any], out: Path) -> dict[str, Any]:
    strat = FixedList(w["space"], w["archs"], metric=w["metric"])
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    res = search(w["data"] if w["data"] is not None else "digits", space=w["space"],
                 strategy=strat, estimator=w["estimator"], trials=len(w["archs"]),
                 out=out, progress=False, final_train=False, executor=ex)
    wall = time.perf_counter() - t0
    done = [t.arch for t in res.trials]
    assert sorted(done) == sorted(a.text for a in w["archs"]), "not the same work"
    costs = [t.cost or 0.0 for t in res.trials]
    return {"wall": wall, "per_hour": 3600 * len(done) / wall, "n": len(done),
            "ok": sum(t.ok for t in res.trials), "mean_cost": statistics.fmean(costs),
            "load": load}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-trials", type=int, default=8)
    ap.add_argument("--proxy-trials", type=int, default=30)
    ap.add_argument("--budget-s", type=float, default=660.0,
                    help="stop starting new repeats after this many seconds")
    ap.add_argument("--out", type=Path, default=RESULTS / "throughput.md")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    control = [parallel_control()]
    tmp = Path(tempfile.mkdtemp(prefix="nasforge-throughput-"))
    workloads = {"proxy": _workload("proxy", args.proxy_trials),
                 "train": _workload("train", args.train_trials)}
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    warmups: dict[tuple[str, str], float] = {}
    stopped_early = False
    try:
        for wname, w in workloads.items():
            for r in range(args.repeats):
                if r and time.perf_counter() - t_start > args.budget_s:
                    stopped_early = True
                    break
                # one executor alive at a time: an idle Ray cluster (GCS, raylet, ...) or
                # idle pool workers would otherwise take CPU from the executor being timed
                for name, make in _executors().items():
                    ex = make()
                    try:
                        warm = _warm(ex, w)
                        warmups[(wname, name)] = min(warm, warmups.get((wname, name), warm))
                        out = tmp / f"{wname}-{name.replace(' ', '')}-{r}"
                        one = _run_once(ex, w, out)
                    finally:
                        ex.shutdown(wait=True, cancel_futures=True)
                    shutil.rmtree(out, ignore_errors=True)
                    results.setdefault((wname, name), []).append(one)
                    print(f"[{wname}] {name} repeat {r + 1}: warm {warm:.1f} s, "
                          f"{one['wall']:.1f} s, {one['per_hour']:.0f} trials/h "
                          f"(load {one['load']:.1f})", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    control.append(parallel_control())
    load_after = os.getloadavg()
    text = _report(results, warmups, workloads, load_before, load_after,
                   time.perf_counter() - t_start, args, stopped_early, control)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


def _report(results: dict[tuple[str, str], list[dict[str, Any]]],
            warmups: dict[tuple[str, str], float], workloads: dict[str, dict[str, Any]],
            load_before: tuple[float, ...], load_after: tuple[float, ...], total: float,
            args: argparse.Namespace, stopped_early: bool, control: list[float]) -> str:
    import torch

    lines = [
        "# Throughput: process pool vs Ray",
        "",
        f"Generated by `benchmarks/throughput.py` on {time.strftime('%Y-%m-%d %H:%M')}: "
        f"{cpu_count()} usable CPU cores ({platform.processor() or platform.machine()}), "
        f"Python {sys.version.split()[0]}, torch {torch.__version__}. Total run "
        f"{total / 60:.1f} min.",
        "",
        f"**Machine load**: 1/5/15-min load average {', '.join(f'{v:.1f}' for v in load_before)} "
        f"before and {', '.join(f'{v:.1f}' for v in load_after)} after, on "
        f"{cpu_count()} cores. " + (
            "Other processes (other people's work on the same machine) were running during "
            "the measurement, so absolute numbers are lower than on an idle machine and ratios "
            "are noisy; "
            if min(control) < 1.8 else
            "The control below shows both cores free for a second process, so the ratios "
            "measure nasforge, not the neighbours; "
        ) + "repeats are interleaved across executors so that background load affects them "
        "alike.",
        "",
        f"**Control**: 2 processes vs 1 on a trivially parallel pure-Python loop ran "
        f"{control[0]:.2f}x faster before and {control[-1]:.2f}x after the measurement "
        "(2.0 when both cores are free): the ceiling for any 2-worker speed-up at the time.",
        "",
        "Each executor runs the same fixed list of architectures through `nasforge.search` "
        "(a replaying strategy, final training off) after a warm-up trial per worker; "
        "each repeat starts its executor afresh and shuts it down after, so only the "
        "executor being timed is alive (an idle Ray cluster costs CPU); "
        "wall time includes the search loop and its SQLite writes. 1 worker gets all cores' "
        "torch threads, 2 workers one share each (`cores // workers`). Median of "
        f"{args.repeats} repeats{' (fewer: time budget reached)' if stopped_early else ''}.",
        "",
    ]
    for wname, w in workloads.items():
        lines += [f"## {w['label']}", "",
                  f"{len(w['archs'])} trials per repeat.", "",
                  "| executor | torch threads/worker | median wall s | trials/hour | vs 1 worker "
                  "| mean trial cost s | warm-up s | repeats (trials/h) |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        base = None
        med: dict[str, float] = {}
        threads = {"process x1": cpu_count(), "process x1, 1 thread": 1,
                   "process x2": max(1, cpu_count() // 2), "ray x2": max(1, cpu_count() // 2)}
        for name in _executors():
            runs = results.get((wname, name), [])
            if not runs:
                continue
            m = statistics.median(r["per_hour"] for r in runs)
            med[name] = m
            base = base or (m if name == "process x1" else None)
            ratio = f"{m / base:.2f}x" if base else "-"
            lines.append(
                f"| {name} | {threads[name]} | {statistics.median(r['wall'] for r in runs):.1f} "
                f"| {m:.0f} | "
                f"{ratio} | {statistics.median(r['mean_cost'] for r in runs):.2f} | "
                f"{warmups.get((wname, name), float('nan')):.1f} | "
                + ", ".join(f"{r['per_hour']:.0f} (load {r['load']:.1f})" for r in runs) + " |")
        if "ray x2" in med and "process x2" in med:
            lines += ["", f"Ray / process pool (2 workers each): "
                      f"{med['ray x2'] / med['process x2']:.2f}"]
        if "process x2" in med and "process x1" in med:
            lines += [f"2 workers / 1 worker (process pool, {cpu_count()} threads): "
                      f"{med['process x2'] / med['process x1']:.2f}"]
        if "process x2" in med and "process x1, 1 thread" in med:
            lines += [f"2 workers / 1 worker (process pool, 1 thread): "
                      f"{med['process x2'] / med['process x1, 1 thread']:.2f}"]
        lines.append("")
    lines += [
        "## Reading the numbers",
        "",
        "- Goal: >= 1.7x with 2 workers over 1 for the training estimator, Ray within 10 % "
        "of the process pool. See the ratios above; with other processes competing for the "
        "2 cores, a second worker can only use what the others leave, so the speed-up "
        "measured here is a lower bound of what an idle machine gives.",
        "- `mean trial cost` is the estimator's own time per trial: it rises when workers "
        "compete with each other (and with the other processes) for the cores.",
        "- The 2-worker ratio is bounded by 2 x (cost with 2 threads / cost with 1 thread, "
        "1 worker) x (cost of 1 worker alone / cost of each of 2 at once), both from the "
        "`mean trial cost` column: what intra-op threads give a single worker and what two "
        "trials sharing caches and memory bandwidth take from each other.",
        "- 1 worker is measured twice: with the cores // 1 torch threads the pool gives it, and "
        "with 1 thread (what each of 2 workers gets), which separates the gain from running "
        "two trials at once from what extra intra-op threads buy a single trial.",
        "- Pool workers run with `OMP_WAIT_POLICY=PASSIVE` (unless set): on this busy machine "
        "2 spinning OpenMP threads made a synflow trial 10-15x slower than 1 thread "
        "(passive: ~10 % slower).",
        "- Warm-up (the fastest of the repeats) is the one-off cost of starting the workers "
        "(fork server with torch "
        "preloaded for the pool; `ray.init` and Ray workers importing torch for Ray).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
