"""Latency-constrained search on Fashion-MNIST: NSGA-II under a CPU latency budget vs
unconstrained regularized evolution, same search time.

Does a hardware-aware search return a model that really meets its latency budget, and
what accuracy does the budget cost? The script

1. measures the CPU latency (torch, batch 1, median, the estimator's protocol) of a few
   random ``cnn`` architectures on this machine and takes their median as the limit, so
   the constraint binds here (about half of random architectures break it);
2. runs NSGA-II over ``[val_accuracy:max, latency_ms:min]`` with ``latency_ms <= limit``
   (cheap fidelity: 1 epoch on 10 % of the training split), retrains the best *feasible*
   architecture on the full split (nasforge re-measures it and falls back if it broke the
   limit), and measures the exported model once more itself;
3. runs regularized evolution on validation accuracy alone with the same search time;
4. reports test accuracy, params, torch and ONNX Runtime latencies at batch 1 and 32 with
   the thread count, and the measured accuracy/latency front of the constrained search.

Writes ``benchmarks/results/constrained_fashion_mnist.md`` and ``.png``. The machine is
shared: the load average is recorded at the start and the end, and latencies are noisy.

    python benchmarks/constrained.py                  # ~15 min on 2 cores
    python benchmarks/constrained.py --quick          # smoke test (~3 min), to --out only
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # _common sits next to this script
    sys.path.insert(0, str(HERE))
from _common import cpu_name, prepare, search  # noqa: E402

RESULTS_MD = HERE / "results" / "constrained_fashion_mnist.md"
RESULTS_PNG = HERE / "results" / "constrained_fashion_mnist.png"
LATENCY_KEYS = ("latency_ms", "latency_ms_b32", "onnx_latency_ms", "onnx_latency_ms_b32")


def calibrate(plan: dict[str, Any], n: int, seed: int) -> tuple[float, list[float]]:
    """The median batch-1 torch latency (ms) of ``n`` random cnn archs, and all of them.

    Measured exactly as the train estimator measures a trial (same repeats, same threads),
    on untrained networks: latency does not depend on the weights.
    """
    from nasforge import metrics, spaces

    space = spaces.get("cnn", **plan["space_options"])
    rng = np.random.default_rng(seed + 1000)  # not the searches' own streams
    lat = []
    for _ in range(n):
        torch.manual_seed(0)
        model = space.build(space.sample(rng), (1, 28, 28), 10)
        lat.append(metrics.measure_latency(
            model, (1, 28, 28), repeats=plan["estimator_options"]["latency_repeats"])["median_ms"])
    return round(statistics.median(lat), 3), lat


def run(name: str, args: argparse.Namespace, plan: dict[str, Any],
        **goals: Any) -> dict[str, Any]:
    """One search + final retrain through the public API; returns the row of the table."""
    import nasforge
    from nasforge.metrics import measure_latency

    out = Path(args.out) / name
    res, wall = search(out, args, plan, **goals)
    done = [t for t in res.trials if t.done]
    row: dict[str, Any] = {
        "name": name, "trials": len(done), "failed": sum(t.status == "failed" for t in done),
        "feasible_trials": None, "wall_s": wall, "run_dir": str(out), "result": res,
        "arch": res.best_arch.text if res.best_arch else "-", "message": res.message,
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
    row.update(test_accuracy=tm["test_accuracy"], params=int(tm["params"]),
               rechecked_ms=recheck, latency_threads=int(tm.get("latency_threads", 0)),
               search_val_accuracy=res.best_metrics.get("val_accuracy", math.nan),
               search_latency_ms=res.best_metrics.get("latency_ms", math.nan),
               **{k: float(tm.get(k, math.nan)) for k in LATENCY_KEYS})
    return row


def _f(v: Any, fmt: str = ".3f") -> str:
    if isinstance(v, float) and not math.isfinite(v):
        return "-"
    return format(v, fmt) if isinstance(v, int | float) else str(v)


def report(rows: list[dict[str, Any]], limit: float, calib: list[float],
           args: argparse.Namespace, plan: dict[str, Any], load0: tuple[float, ...],
           load1: tuple[float, ...], png: Path) -> str:
    from nasforge.objectives import Constraint, Objective
    from nasforge.pareto import front_table

    cons = [Constraint("latency_ms", "<=", limit)]
    lines = [
        "# Fashion-MNIST: latency-constrained NSGA-II vs unconstrained evolution",
        "",
        f"Latency limit: **latency_ms <= {limit} ms** (torch, CPU, batch 1, median; the "
        f"median of {len(calib)} random `cnn` architectures measured by this script: "
        f"{', '.join(f'{x:.3f}' for x in sorted(calib))} ms).",
        "",
        "| search | test acc | params | torch b=1 ms | torch b=32 ms | ORT b=1 ms | "
        "ORT b=32 ms | threads | re-measured b=1 ms | meets limit | trials (failed) | "
        "wall s | architecture |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|:-:|---:|---:|---|",
    ]
    for r in rows:
        ok = r["rechecked_ms"] <= limit if math.isfinite(r["rechecked_ms"]) else None
        meets = "-" if ok is None else ("yes" if ok and r["latency_ms"] <= limit else "**no**")
        acc = "-" if not math.isfinite(r["test_accuracy"]) else f"{100 * r['test_accuracy']:.2f} %"
        lines.append(
            f"| {r['label']} | {acc} | {r['params']:,} | {_f(r['latency_ms'])} | "
            f"{_f(r['latency_ms_b32'])} | {_f(r['onnx_latency_ms'])} | "
            f"{_f(r['onnx_latency_ms_b32'])} | {r['latency_threads']} | "
            f"{_f(r['rechecked_ms'])} | {meets} | {r['trials']} ({r['failed']}) | "
            f"{r['wall_s']:.0f} | `{r['arch']}` |")
    for r in rows:
        if r["message"]:
            lines += ["", f"- {r['label']}: {r['message']}"]
    con = rows[0]["result"]
    trials = [t for t in con.trials if t.ok]
    feas = [t for t in trials if t.metrics.get("latency_ms", math.inf) <= limit]
    final = None
    try:
        import json

        final = json.loads((Path(rows[0]["run_dir"]) / "best" / "summary.json").read_text())
    except (OSError, ValueError):
        pass
    lines += [
        "",
        f"## Measured accuracy/latency front of the constrained search "
        f"({len(trials)} trials, {len(feas)} feasible)",
        "",
        "Search-time values (1 epoch on 10 % of the training split; validation accuracy), "
        "feasible trials only, best accuracy first:",
        "",
        front_table(
            [{"arch": f"{t.id}: {t.arch}", "metrics": t.metrics} for t in trials],
            [Objective("val_accuracy", "max"), Objective("latency_ms", "min")], cons,
            extra=["params", "flops"]).rstrip(),
        "",
        f"![front]({png.name})",
        "",
        "## Set-up",
        "",
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"with {torch.get_num_threads()} thread(s) (search, latency and ONNX Runtime alike), "
        f"Python {platform.python_version()}. **Shared machine**: load average "
        f"{', '.join(f'{x:.1f}' for x in load0)} (1/5/15 min) at the start and "
        f"{', '.join(f'{x:.1f}' for x in load1)} at the end, so other processes competed "
        f"for the cores; latencies are noisy and all wall times are inflated.",
        f"- Both searches: {plan['search_s']:.0f} s of search time each, `cnn` space "
        f"{plan['space_options']}, seed {args.seed}; fidelity {plan['estimator_options']}; "
        f"then the chosen architecture is retrained for {plan['final_epochs']} epoch(s) on the "
        f"whole training split and evaluated once on the full 10k test split. Data: "
        f"{plan['dataset_options'] or 'all of Fashion-MNIST'} (train+validation pool, "
        f"stratified; validation 10 % of it). Latency in the trials: "
        f"torch only (cheap); the final models get torch and ONNX Runtime at batch 1 and 32.",
        f"- NSGA-II: objectives val_accuracy:max, latency_ms:min, constraint latency_ms<={limit}, "
        f"population {plan['nsga2_options']['population_size']}; the returned model is the most "
        f"accurate feasible trial whose re-measured latency (before and after the final "
        f"retrain) stays within the limit. Evolution: {plan['evolution_options']}, "
        f"val_accuracy only.",
        "- 're-measured b=1' is this script timing the exported model again (100 repeats).",
    ]
    if final and final.get("latency"):
        lat = final["latency"]
        lines.append(f"- Runtimes: {lat['runtimes']['torch']}; {lat['runtimes']['onnx']}; "
                     f"threads {lat['threads']}.")
    if args.quick:
        lines.append("- **--quick run**: tiny budget and data, not a result.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget-minutes", type=float, default=15.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/ONNX Runtime threads (1: least disturbed on a shared machine)")
    ap.add_argument("--calibration-archs", type=int, default=9)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=None, help="run directories [runs/bench-constrained-TIME]")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run; writes to --out only")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()
    if not prepare(ap, args, "constrained"):
        return 2

    from nasforge.objectives import Constraint
    from nasforge.pareto import plot_front

    budget = args.budget_minutes * 60
    plan: dict[str, Any] = {
        # 20 % of the budget searches per method; the rest: final retrains (1 epoch on the
        # training pool, ~10x a trial), exports, latency measurements and the calibration.
        # Sized for a shared 2-core machine under a load average of ~9: a first attempt with
        # the full 54k-image pool and 4 blocks of up to 48 channels got 3 trials (30-90 s
        # each) into the constrained search's 162 s, none of them feasible.
        "search_s": budget * 0.2,
        "final_epochs": 1,
        "space_options": {"max_blocks": 3, "kernels": [3, 5], "widths": [16, 32],
                          "stem_widths": [8, 16]},
        "estimator_options": {"epochs": 1, "data_fraction": 0.1, "batch_size": 128,
                              "timeout": 90.0, "latency_repeats": 15},
        "dataset_options": {"max_train": 20000},
        "nsga2_options": {"population_size": 8},
        "evolution_options": {"population_size": 8, "sample_size": 3},
    }
    if args.quick:
        plan.update(search_s=25.0, final_epochs=1)
        plan["space_options"] = {"max_blocks": 3, "kernels": [3], "widths": [16, 32]}
        plan["estimator_options"].update(data_fraction=0.25, timeout=60.0)
        plan["dataset_options"] = {"max_train": 3000}
        plan["nsga2_options"] = {"population_size": 4}
        plan["evolution_options"] = {"population_size": 4, "sample_size": 2}
        args.calibration_archs = 5
    print(f"load average at start: {load0}; plan: search {plan['search_s']:.0f} s per method; "
          f"runs in {args.out}", flush=True)
    limit, calib = calibrate(plan, args.calibration_archs, args.seed)
    print(f"latency limit {limit} ms (median of {sorted(round(x, 3) for x in calib)})",
          flush=True)

    rows = [run("nsga2-constrained", args, plan, strategy="nsga2",
                objectives=["val_accuracy:max", "latency_ms:min"],
                constraints=f"latency_ms<={limit}", strategy_options=plan["nsga2_options"])]
    rows[-1]["label"] = f"NSGA-II, latency_ms <= {limit}"
    print(f"constrained: {rows[-1]['wall_s']:.0f} s, test {rows[-1]['test_accuracy']:.4f}, "
          f"latency {rows[-1]['latency_ms']:.3f} ms", flush=True)
    rows.append(run("evolution-unconstrained", args, plan, strategy="evolution",
                    strategy_options=plan["evolution_options"]))
    rows[-1]["label"] = "evolution, unconstrained"
    print(f"unconstrained: {rows[-1]['wall_s']:.0f} s, test {rows[-1]['test_accuracy']:.4f}, "
          f"latency {rows[-1]['latency_ms']:.3f} ms", flush=True)

    target_md = Path(args.out) / "constrained_quick.md" if args.quick else RESULTS_MD
    target_png = target_md.with_suffix(".png") if args.quick else RESULTS_PNG
    target_md.parent.mkdir(parents=True, exist_ok=True)
    con = rows[0]["result"]
    plot_front(con.trials, x="latency_ms", y="val_accuracy", path=target_png,
               constraints=[Constraint("latency_ms", "<=", limit)],
               title=f"NSGA-II under latency_ms <= {limit} ms: search-time front")
    md = report(rows, limit, calib, args, plan, load0, os.getloadavg(), target_png)
    target_md.write_text(md)
    print(md)
    print(f"written to {target_md} and {target_png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
