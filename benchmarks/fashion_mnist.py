"""Fashion-MNIST benchmark: regularized evolution vs random search vs a hand-designed CNN.

Does a NAS search beat a sensible hand design when both get the same CPU wall time?
Three runs, each given about a third of ``--budget-minutes`` (default 30, on 2 cores):

1. regularized evolution over the ``cnn`` space, cheap fidelity (1 epoch on 10 % of the
   training split), for a fixed search time, then the final retrain of the best
   architecture on the full training split and one test evaluation;
2. random search with the same search time, fidelity and final retrain;
3. a hand-designed CNN (4 conv layers 32-32-64-64, BN, ReLU, two max-pools), trained
   for the same wall time as the evolution run took end to end.

Reported per method: test accuracy, parameters, CPU latency (batch 1, median, measured
the same way for all three), trials evaluated, wall time. Writes
``benchmarks/results/fashion_mnist.md`` and prints it. ``--quick`` runs the whole script
at a tiny scale (a few minutes) to check that it works; its table goes to ``--out``
only, never to ``benchmarks/results``.

    python benchmarks/fashion_mnist.py                  # ~30 min
    python benchmarks/fashion_mnist.py --quick          # smoke test
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # _common sits next to this script
    sys.path.insert(0, str(HERE))
from _common import cpu_name, prepare, search  # noqa: E402

RESULTS = HERE / "results" / "fashion_mnist.md"


class BaselineCNN(nn.Module):
    """The hand design: what one would write without a search (VGG-style, ~65k params)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, dropout: float = 0.25):
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, 32), *block(32, 32), nn.MaxPool2d(2),
            *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _latency(model: nn.Module, shape: tuple[int, ...]) -> float:
    """Median batch-1 CPU latency in ms, one thread, same protocol for every model."""
    from nasforge.metrics import measure_latency

    return float(measure_latency(model.to("cpu"), shape, batch_size=1, warmup=10, repeats=100,
                                 threads=1)["median_ms"])


def run_search(strategy: str, args: argparse.Namespace, plan: dict[str, Any]) -> dict[str, Any]:
    """One search + final retrain through the public API; returns the row of the table."""
    import nasforge

    out = Path(args.out) / strategy
    res, wall = search(out, args, plan, strategy=strategy,
                       strategy_options=plan["strategy_options"].get(strategy))
    completed = [t for t in res.trials if t.done]
    method = "regularized evolution" if strategy == "evolution" else "random search"
    if res.model_dir is None:  # every trial failed (e.g. all timed out): say so, go on
        print(f"{method}: no successful trial, nothing retrained", file=sys.stderr)
        return {"method": f"{method} (no successful trial)", "test_accuracy": math.nan,
                "params": 0, "latency_ms": math.nan, "trials": len(completed),
                "failed": len(completed), "search_val_accuracy": math.nan,
                "final_epochs": "-", "wall_s": wall, "arch": "-", "run_dir": str(out)}
    loaded = nasforge.load(res.model_dir)
    return {
        "method": method,
        "test_accuracy": res.test_metrics["test_accuracy"],
        "params": int(res.test_metrics["params"]),
        "latency_ms": _latency(loaded.module, loaded.input_shape),
        "trials": len(completed),
        "failed": sum(t.status == "failed" for t in completed),
        "search_val_accuracy": res.best_metrics.get("val_accuracy", math.nan),
        "final_epochs": res.test_metrics.get("epochs"),
        "wall_s": wall,
        "arch": res.best_arch.text if res.best_arch else "-",
        "run_dir": str(out),
    }


def run_baseline(wall_budget: float, args: argparse.Namespace,
                 plan: dict[str, Any]) -> dict[str, Any]:
    """Train the hand design for ``wall_budget`` seconds end to end (epochs fitted to it)."""
    from nasforge.data import load_dataset
    from nasforge.estimators.training import evaluate_model, train_model
    from nasforge.metrics import count_params

    t0 = time.monotonic()
    data = load_dataset("fashion-mnist", data_dir=args.data_dir, seed=args.seed,
                        **plan["dataset_options"])
    c, h, w = data.input_shape
    # calibrate: one epoch on a 10 % subset, to pick the epochs that fill the budget. The
    # subset run ends with a pass over the validation split, which is timed on its own
    # and not scaled up: only the training part grows 10x with the full split.
    torch.manual_seed(args.seed)
    probe = BaselineCNN(c, data.num_classes)
    tc = time.monotonic()
    train_model(probe, data, epochs=1, data_fraction=0.1, seed=args.seed)
    t_sub = time.monotonic() - tc
    te = time.monotonic()
    evaluate_model(probe, data.x_val, data.y_val)
    t_eval = time.monotonic() - te
    epoch_s = max(t_sub - t_eval, 1e-3) * 10
    # left: the epochs, one validation pass and one test pass (test ~1.7x validation)
    left = wall_budget - (time.monotonic() - t0) - 2.7 * t_eval
    epochs = max(1, int(left * 0.95 // epoch_s))
    torch.manual_seed(args.seed)
    model = BaselineCNN(c, data.num_classes)
    deadline = t0 + wall_budget * 1.05
    stopped = False
    try:
        train_model(model, data, epochs=epochs, seed=args.seed, deadline=deadline)
    except TimeoutError:  # calibration was off: stop at the budget, evaluate what we have
        stopped = True
    acc, _ = evaluate_model(model, data.x_test, data.y_test)
    wall = time.monotonic() - t0
    return {
        "method": "hand-designed CNN" + (" (stopped at budget)" if stopped else ""),
        "test_accuracy": acc,
        "params": count_params(model),
        "latency_ms": _latency(model, (c, h, w)),
        "trials": "-",
        "failed": 0,
        "search_val_accuracy": math.nan,
        "final_epochs": epochs,
        "wall_s": wall,
        "arch": "conv32-conv32-pool-conv64-conv64-pool-gap-fc",
        "run_dir": "-",
    }


def _table(rows: list[dict[str, Any]], args: argparse.Namespace, plan: dict[str, Any]) -> str:
    lines = [
        "# Fashion-MNIST: NAS vs a hand design at equal CPU time",
        "",
        "| method | test acc | params | latency ms (b=1, median) | trials (failed) | "
        "epochs (final) | wall s | architecture |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        trials = r["trials"] if r["trials"] == "-" else f"{r['trials']} ({r['failed']})"
        lines.append(
            f"| {r['method']} | {100 * r['test_accuracy']:.2f} % | {r['params']:,} | "
            f"{r['latency_ms']:.3f} | {trials} | {r['final_epochs']} | {r['wall_s']:.0f} | "
            f"`{r['arch']}` |"
        )
    eo = plan["estimator_options"]
    lines += [
        "",
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, torch "
        f"{torch.__version__} with {torch.get_num_threads()} threads, Python "
        f"{platform.python_version()}, {platform.system()}; shared machine, timings are noisy "
        f"(load average at start {plan['load_start'][0]:.1f}, at end {plan['load_end'][0]:.1f}"
        f" on {os.cpu_count()} CPUs: other jobs were running).",
        f"- Seed {args.seed} (data split, strategies, training). Budget {args.budget_minutes} min "
        f"in all{' (--quick)' if args.quick else ''}: each search ran for "
        f"{plan['search_s']:.0f} s of search time, then retrained its best architecture for "
        f"{plan['final_epochs']} epochs on the full training split; the hand design trained "
        f"for the evolution run's end-to-end wall time.",
        f"- Search fidelity: {eo['epochs']} epoch on {100 * eo['data_fraction']:.0f} % of the "
        f"training split, batch {eo['batch_size']}, SGD (nasforge defaults), "
        f"timeout {eo['timeout']} s per trial; selection by validation accuracy, test split "
        f"used once per method.",
        f"- Space: cnn {plan['space_options']}; evolution "
        f"{plan['strategy_options']['evolution']}. Both strategies use the same seed, so "
        f"evolution's random warm-up (its first population) is random search's first trials.",
        f"- Latency: torch, 1 thread, batch 1, median of 100 after 10 warm-up runs. "
        f"Dataset options: {plan['dataset_options'] or 'full Fashion-MNIST'}.",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M')}. Runs in `{args.out}` "
        f"(`nasforge show <run>`).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget-minutes", type=float, default=30.0,
                    help="total wall time for all three methods (default 30)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None,
                    help="directory for the runs (default runs/bench-fashion-mnist-<time>)")
    ap.add_argument("--data-dir", default=None, help="where the Fashion-MNIST IDX files are")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny scale (a few minutes) to check the script works")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if not prepare(ap, args, "fashion-mnist"):
        return 2
    per_method = args.budget_minutes * 60 / 3
    plan: dict[str, Any] = {
        # 55 % of each method's third searches; the rest is the final retrain (3 epochs on
        # the full split, ~10x-30x a trial's training) and the export. A small population
        # lets evolution start mutating after a few trials (a 2-core budget gives ~20-40).
        "search_s": per_method * 0.55,
        "final_epochs": 3,
        "space_options": {"max_blocks": 4, "kernels": [3, 5], "widths": [16, 32, 48]},
        "strategy_options": {"evolution": {"population_size": 6, "sample_size": 3},
                             "random": None},
        "estimator_options": {"epochs": 1, "data_fraction": 0.1, "batch_size": 128,
                              "timeout": 30.0, "latency_repeats": 5},
        "dataset_options": {},
    }
    if args.quick:
        args.budget_minutes = 1.5
        plan.update(search_s=20.0, final_epochs=1)
        plan["space_options"] = {"max_blocks": 3, "kernels": [3], "widths": [16, 32]}
        plan["estimator_options"].update(data_fraction=0.25, timeout=60.0)
        plan["dataset_options"] = {"max_train": 3000}
    print(f"plan: {per_method if not args.quick else 30:.0f} s per method, search "
          f"{plan['search_s']:.0f} s + final retrain ({plan['final_epochs']} epochs); "
          f"runs in {args.out}", flush=True)

    plan["load_start"] = os.getloadavg()
    rows = [run_search("evolution", args, plan)]
    print(f"evolution: {rows[-1]['wall_s']:.0f} s, test {rows[-1]['test_accuracy']:.4f}",
          flush=True)
    rows.append(run_search("random", args, plan))
    print(f"random: {rows[-1]['wall_s']:.0f} s, test {rows[-1]['test_accuracy']:.4f}", flush=True)
    rows.append(run_baseline(rows[0]["wall_s"], args, plan))
    print(f"baseline: {rows[-1]['wall_s']:.0f} s, test {rows[-1]['test_accuracy']:.4f}",
          flush=True)

    plan["load_end"] = os.getloadavg()
    md = _table(rows, args, plan)
    target = Path(args.out) / "fashion_mnist_quick.md" if args.quick else RESULTS
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(md)
    print(md)
    print(f"written to {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
