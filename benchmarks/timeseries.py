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

#: published test accuracies for reference (None: not found). FCN: Fawaz et al. 2019, "Deep
#: learning for time series classification: a review", mean of 10 runs on the official
#: split (github.com/hfawaz/dl-4-tsc, results/results-uea-avg-std.csv (univariate UCR 2015
#: names despite the file name) and results/results-mts-avg-std.csv). MiniRocket: Dempster
#: et al. 2021, mean over 30 resamples of train/test (github.com/angus924/minirocket,
#: results/results_ucr109_mean.csv; univariate sets only).
PUBLISHED: dict[str, dict[str, float | None]] = {
    "GunPoint": {"fcn": 1.000, "minirocket": 0.992},
    "ItalyPowerDemand": {"fcn": 0.961, "minirocket": 0.960},
    "ArrowHead": {"fcn": 0.843, "minirocket": 0.881},
    "OSULeaf": {"fcn": 0.977, "minirocket": 0.958},
    "JapaneseVowels": {"fcn": 0.993, "minirocket": None},
    "BasicMotions": {"fcn": None, "minirocket": None},
}
METHODS = (("nasforge", "nasforge"), ("fcn", "FCN"), ("minirocket", "MiniRocket"))


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
    fig, ax = plt.subplots(figsize=(8, 4.0))
    for i, (key, label) in enumerate((("nasforge", "nasforge"), ("fcn", "FCN"),
                                      ("minirocket", "MiniRocket"))):
        ax.bar(xs + (i - 1) * 0.27, [r[key]["accuracy"] for r in rows], 0.27, label=label)
    ax.set_xticks(xs, names, rotation=15)
    ax.set_ylim(0.5, 1.0)
    ax.set_ylabel("test accuracy")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=3, frameon=False)
    ax.set_title("UCR/UEA (aeon-bundled), official splits, same CPU time per set")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _report(doc: dict[str, Any]) -> str:
    """The markdown result: per-set accuracy and seconds, the means, who wins, published."""
    rows, b = doc["rows"], doc["budget_s"]

    def pct(v: float | None) -> str:
        return "n/a" if v is None or v != v else f"{100 * v:.1f}"

    lines = [
        "# Time-series classification: nasforge vs FCN vs MiniRocket",
        "",
        f"UCR/UEA sets bundled with aeon, official train/test splits, {b:.0f} s of one CPU "
        "core per method and set, one method after another (pinned with `taskset -c N`, "
        "one torch thread). **The machine (2 vCPUs) was shared with other engineers' jobs**, so "
        "times are noisy. Seed 0, one run per cell: a single test example is "
        f"{100 / 150:.2f} points on GunPoint, so small differences are noise.",
        "",
        "- nasforge: `nasforge.search('aeon:NAME', time_budget=" f"{b:.0f})`, the whole job "
        "(search of the `seq` space, final training on train+validation, test, ONNX export);"
        " its validation split is 10 % of the official training split.",
        "- FCN (Wang et al. 2017; conv 128-k8, 256-k5, 128-k3, BN, ReLU, GAP): trained on "
        "the whole training split for the whole budget (Adam 1e-3, batch 16, cosine "
        "schedule over the time), tested once.",
        "- MiniRocket: aeon `MiniRocketClassifier(n_jobs=1)`; it needs a fraction of the "
        "budget and cannot use more (its own seconds shown; numba compiled on a univariate "
        "set beforehand, so the first multivariate set, BasicMotions, still pays for "
        "compiling the multivariate kernels). Variable-length sets are zero-padded for it.",
        "",
        "| data set | nasforge | FCN | MiniRocket | nasforge s | FCN s | MiniRocket s "
        "| published FCN | published MiniRocket | nasforge's network |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    def short(arch: str) -> str:  # runs before the compact string form: convert
        if "=" not in arch:
            return arch
        from nasforge import spaces

        sp = spaces.get("seq")
        vals = dict(sp._first)
        for tok in arch.split(";"):
            k, _, v = tok.partition("=")
            vals[k] = sp._choice_map()[k].options[[str(o) for o in
                                                    sp._choice_map()[k].options].index(v)]
        return sp.make(vals).text

    for r in rows:
        pub = PUBLISHED.get(r["set"], {})
        if "arch" in r["nasforge"]:
            r["nasforge"]["arch"] = short(r["nasforge"]["arch"])
        lines.append(
            f"| {r['set']} | " + " | ".join(pct(r[k]["accuracy"]) for k, _ in METHODS)
            + " | " + " | ".join(f"{r[k]['seconds']:.0f}" for k, _ in METHODS)
            + f" | {pct(pub.get('fcn'))} | {pct(pub.get('minirocket'))} | "
            # a pipe inside a table cell must be escaped, even in a code span (GFM)
            f"`{r['nasforge'].get('arch', r['nasforge'].get('error', ''))}` |".replace(
                "|", "\\|").replace("\\| ", "| ").replace(" \\|", " |"))
    means = {k: float(np.mean([r[k]["accuracy"] for r in rows])) for k, _ in METHODS}
    lines.append("| **mean** | " + " | ".join(f"**{pct(means[k])}**" for k, _ in METHODS)
                 + " | | | | | | |")
    beat_fcn = [r["set"] for r in rows if r["nasforge"]["accuracy"] > r["fcn"]["accuracy"]]
    tie_fcn = [r["set"] for r in rows if r["nasforge"]["accuracy"] == r["fcn"]["accuracy"]]
    lose_fcn = [r["set"] for r in rows if r["nasforge"]["accuracy"] < r["fcn"]["accuracy"]]
    lines += [
        "",
        "## Against the goal",
        "",
        f"- nasforge vs FCN: better on {len(beat_fcn)} ({', '.join(beat_fcn) or 'none'}), "
        f"equal on {len(tie_fcn)} ({', '.join(tie_fcn) or 'none'}), **worse on "
        f"{len(lose_fcn)}** ({', '.join(lose_fcn) or 'none'}). The goal (better on every "
        f"set) is {'met' if not lose_fcn and not tie_fcn else 'not met'}.",
        f"- nasforge vs MiniRocket on mean accuracy: {pct(means['nasforge'])} vs "
        f"{pct(means['minirocket'])}: the goal is "
        f"{'met' if means['nasforge'] > means['minirocket'] else '**not met**'}.",
        f"- Total benchmark time: {doc['total_s'] / 60:.1f} min.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=60.0, help="seconds per method and set")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="run folder (default runs/bench-ts-TIME)")
    ap.add_argument("--results", default="benchmarks/results")
    ap.add_argument("--report", default=None, help="only rewrite the markdown and PNG from "
                    "this timeseries.json")
    ap.add_argument("--earlier", default=None, help="with --report: the JSON of an earlier "
                    "run (another recipe), shown as a second table; --earlier-note says what")
    ap.add_argument("--earlier-note", default="")
    args = ap.parse_args()
    if args.report:
        doc = json.loads(Path(args.report).read_text())
        res = Path(args.results)
        res.mkdir(parents=True, exist_ok=True)
        text = _report(doc)
        if args.earlier:
            old = json.loads(Path(args.earlier).read_text())
            body = _report(old).split("\n")
            start = next(i for i, line in enumerate(body) if line.startswith("| data set"))
            text += (f"\n## Earlier run: {args.earlier_note}\n\n"
                     + "\n".join(body[start:]).replace("## Against the goal", "### Then"))
        (res / "timeseries.md").write_text(text)
        _plot(doc["rows"], res / "timeseries.png")
        return 0
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
    (res / "timeseries.md").write_text(_report(doc))
    _plot(rows, res / "timeseries.png")
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:  # _common sits next to this script
        sys.path.insert(0, here)
    from _common import html_report

    first = out / f"nasforge-{args.sets.split(',')[0]}"
    if first.is_dir():  # one nasforge run's plots, for a look beyond the table
        html_report(first, res / "timeseries.md")
    print(f"done in {total:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
