"""Time-series classification: nasforge (``seq`` space) vs MiniRocket vs a hand-designed FCN,
on UCR/UEA sets that ship inside aeon, official train/test splits, the same CPU time per
data set for each method.

    taskset -c 1 python benchmarks/timeseries.py --budget 60 --out runs/bench-ts

- **nasforge**: ``nasforge.search("aeon:NAME", time_budget=BUDGET)``: the whole job (search,
  final training on train+validation, test, export) in the budget; the validation split is
  held out from the official training split.
- **FCN** (Wang et al. 2017: conv 128-k8, 256-k5, 128-k3, batch norm, ReLU, global average
  pooling; the seq space's first known-good design): trained on the whole official training
  split for the whole budget (Adam, lr 1e-3, batch 16 as in Fawaz et al. 2019, cosine over
  the time), then tested once.
- **MiniRocket** (aeon ``MiniRocketClassifier``, ``n_jobs=1``): fit and test; it needs far
  less than the budget and cannot use more (its time is reported). numba's one-off JIT
  compilation is done on a warm-up set before the clock starts.

Writes ``timeseries.md``, ``timeseries.png`` and ``timeseries.json`` to ``--results``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

SETS = ("GunPoint", "ItalyPowerDemand", "ArrowHead", "BasicMotions", "JapaneseVowels")

#: published test accuracies (UCR/UEA archive results) for reference; None where not found
PUBLISHED: dict[str, dict[str, float | None]] = {}


def _nasforge(name: str, budget: float, out: Path, seed: int) -> dict[str, Any]:
    import nasforge

    t0 = time.monotonic()
    r = nasforge.search(f"aeon:{name}", time_budget=budget, out=out / f"nasforge-{name}",
                        seed=seed, progress=False)
    secs = time.monotonic() - t0
    return {"accuracy": float(r.test_metrics["test_accuracy"]), "seconds": secs,
            "trials": len(r.to_dataframe()), "arch": str(r.best_arch)}


def _fcn(name: str, budget: float, seed: int) -> dict[str, Any]:
    from nasforge import spaces
    from nasforge.data import load_dataset
    from nasforge.training import score_model, train_model

    t0 = time.monotonic()
    data = load_dataset(f"aeon:{name}", seed=seed)
    sp = spaces.get("seq")
    torch.manual_seed(seed)
    net = sp.build(sp.known_good()[0], data.input_shape, data.n_outputs)
    # train on all of the official training split, for the budget less a test margin
    left = budget - (time.monotonic() - t0) - 3.0
    hist = train_model(net, data, epochs=10**6, seconds=max(left, 1.0), batch_size=16,
                       optimizer="adamw", lr=1e-3, weight_decay=0.0, include_val=True,
                       seed=seed)
    m = score_model(net, data.x_test, data.y_test, data.make_task())
    return {"accuracy": float(m["accuracy"]), "seconds": time.monotonic() - t0,
            "epochs": float(hist["epochs"])}


def _minirocket(name: str, seed: int) -> dict[str, Any]:
    from aeon.classification.convolution_based import MiniRocketClassifier
    from aeon.datasets import load_classification

    t0 = time.monotonic()
    x, y = load_classification(name, split="train")
    xt, yt = load_classification(name, split="test")
    if isinstance(x, list):  # unequal lengths: aeon's MiniRocket needs equal ones
        n = max(s.shape[1] for s in [*x, *xt])
        pad = lambda a: np.stack([np.pad(s, ((0, 0), (0, n - s.shape[1])))  # noqa: E731
                                  for s in a])
        x, xt = pad(x), pad(xt)
    clf = MiniRocketClassifier(random_state=seed, n_jobs=1).fit(x, y)
    acc = float((clf.predict(xt) == yt).mean())
    return {"accuracy": acc, "seconds": time.monotonic() - t0}


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["set"] for r in rows]
    xs = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for i, (key, label) in enumerate((("nasforge", "nasforge"), ("fcn", "FCN"),
                                      ("minirocket", "MiniRocket"))):
        ax.bar(xs + (i - 1) * 0.27, [r[key]["accuracy"] for r in rows], 0.27, label=label)
    ax.set_xticks(xs, names, rotation=15)
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("test accuracy")
    ax.legend(loc="lower right")
    ax.set_title("UCR/UEA (aeon-bundled), official splits, same CPU time per set")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per method and set")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="run folder (default runs/bench-ts-TIME)")
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out or f"runs/bench-ts-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists():
        ap.error(f"--out {out} exists; choose a new directory")
    out.mkdir(parents=True)
    _minirocket("UnitTest", args.seed)  # numba compiles here, not on the clock
    rows = []
    t_all = time.monotonic()
    for name in args.sets.split(","):
        row: dict[str, Any] = {"set": name}
        for key in ("nasforge", "fcn", "minirocket"):
            try:
                row[key] = (_nasforge(name, args.budget, out, args.seed) if key == "nasforge"
                            else _fcn(name, args.budget, args.seed) if key == "fcn"
                            else _minirocket(name, args.seed))
            except Exception as e:  # noqa: BLE001 - a failure is a result too: report it
                row[key] = {"accuracy": float("nan"), "seconds": 0.0,
                            "error": f"{type(e).__name__}: {e}"[:300]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    total = time.monotonic() - t_all
    res = Path(args.results)
    res.mkdir(parents=True, exist_ok=True)
    doc = {"budget_s": args.budget, "seed": args.seed, "rows": rows, "total_s": total,
           "cpu": platform.processor() or platform.machine(),
           "pinned": os.sched_getaffinity(0).__len__() == 1, "torch_threads": 1}
    (res / "timeseries.json").write_text(json.dumps(doc, indent=1))
    _plot(rows, res / "timeseries.png")
    print(f"done in {total:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
