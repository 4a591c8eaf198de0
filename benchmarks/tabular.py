"""nasforge on tables against scikit-learn's default MLP and gradient boosting.

The tables that ship with scikit-learn (no download): diabetes (regression), breast
cancer, wine, iris and digits (its 8x8 images as 64 numeric columns). Every system gets the
same split per seed and the same preprocessed matrix (nasforge's: one-hot, imputed,
standardized with training statistics), trains on training + validation rows and is scored
once on the test rows. nasforge is a whole job of ``--budget`` seconds (search, final
training, test, export); ``MLPClassifier``/``MLPRegressor`` and ``HistGradientBoosting*``
run with their defaults (they need far less than the budget: the time each took is in the
table). Run pinned to one core with one torch thread::

    taskset -c 1 python benchmarks/tabular.py --budget 40 --seeds 3

Writes ``benchmarks/results/tabular.md`` and ``tabular.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
#: the HTML report written so far (one per benchmark run: the first nasforge search)
_REPORTED: list[object] = []
SETS = ("diabetes", "breast_cancer", "wine", "iris", "digits")


def _frame(name: str):  # noqa: ANN202 - a DataFrame and its task
    from sklearn import datasets

    b = getattr(datasets, f"load_{name}")(as_frame=True)
    return b.frame, "regression" if name == "diabetes" else "classification"


def _scores(task: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    if task == "classification":
        return {"accuracy": float(np.mean(pred == y))}
    err = pred.reshape(-1) - y.reshape(-1)
    var = float(np.var(y))
    return {"rmse": float(np.sqrt(np.mean(err**2))),
            "r2": 1.0 - float(np.mean(err**2)) / var if var > 0 else math.nan}


def _sklearn(kind: str, task: str, ds, seed: int) -> tuple[dict[str, float], float]:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    cls = {("mlp", "classification"): MLPClassifier, ("mlp", "regression"): MLPRegressor,
           ("hgb", "classification"): HistGradientBoostingClassifier,
           ("hgb", "regression"): HistGradientBoostingRegressor}[(kind, task)]
    x = np.concatenate([ds.x_train, ds.x_val])
    y = np.concatenate([ds.y_train, ds.y_val])
    t0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLP's ConvergenceWarning at its default 200 epochs
        model = cls(random_state=seed).fit(x, y)
    pred = model.predict(ds.x_test)
    return _scores(task, ds.y_test, pred), time.process_time() - t0


def _nasforge(task: str, ds, seed: int, budget: float) -> tuple[dict[str, float], float, str]:
    import nasforge

    t0 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        r = nasforge.search(ds, time_budget=budget, seed=seed, out=Path(tmp) / "run",
                            progress=False)
        if not _REPORTED:  # one nasforge run's plots, before its temporary folder goes
            import sys

            here = str(Path(__file__).resolve().parent)
            if here not in sys.path:  # _common sits next to this script
                sys.path.insert(0, here)
            from _common import html_report

            _REPORTED.append(html_report(Path(tmp) / "run", RESULTS / "tabular.md"))
        model = nasforge.load(r.model_dir)
        out = model.module(__import__("torch").from_numpy(ds.x_test)).detach().numpy()
    pred = out.argmax(1) if task == "classification" else out
    return _scores(task, ds.y_test, pred), time.process_time() - t0, str(r.best_arch)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=40.0)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sets", nargs="*", default=list(SETS))
    ap.add_argument("--render", action="store_true",
                    help="only rewrite the markdown/PNG from results/tabular.json")
    ap.add_argument("--wall", type=float, default=0.0, help="with --render: the run's "
                    "wall time in seconds")
    args = ap.parse_args()
    if args.render:
        _write(json.loads((RESULTS / "tabular.json").read_text()), args, args.wall)
        return
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("NASFORGE_NO_PROGRESS", "1")
    from nasforge.data.tabular import from_dataframe

    rows: list[dict] = []
    t_all = time.time()
    for name in args.sets:
        df, task = _frame(name)
        for seed in range(args.seeds):
            ds = from_dataframe(df, "target", task=task, seed=seed, verbose=False)
            for system in ("nasforge", "mlp", "hgb"):
                if system == "nasforge":
                    m, cpu, arch = _nasforge(task, ds, seed, args.budget)
                else:
                    (m, cpu), arch = _sklearn(system, task, ds, seed), ""
                rows.append({"set": name, "task": task, "seed": seed, "system": system,
                             "cpu_s": cpu, "arch": arch, "n_test": len(ds.y_test), **m})
                print(name, seed, system, {k: round(v, 4) for k, v in m.items()},
                      f"{cpu:.1f} s", arch, flush=True)
    _write(rows, args, time.time() - t_all)


def _median(rows: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in rows]))


def _write(rows: list[dict], args: argparse.Namespace, wall: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    names = {"nasforge": f"nasforge ({args.budget:.0f} s job)", "mlp": "sklearn MLP (defaults)",
             "hgb": "sklearn HistGradientBoosting (defaults)"}
    lines = [
        "# Tabular data: nasforge vs scikit-learn's MLP and gradient boosting",
        "",
        f"`taskset -c 1 python benchmarks/tabular.py --budget {args.budget:.0f} --seeds "
        f"{args.seeds}`: {args.seeds} seeds (each its own split), medians; the same split "
        "and preprocessed matrix for every system (train + validation rows to fit, test rows "
        "scored once). nasforge is the whole time-budgeted job (search, final training, test, "
        "export) with its defaults (space `mlp`); scikit-learn's models use their defaults "
        "and need far less CPU time than the budget (the `cpu s` column: process CPU "
        "seconds, nasforge's including its export and ONNX check). One core, one torch "
        f"thread; the machine was shared with other jobs (total wall time {wall / 60:.1f} "
        "min), so times are indicative.",
        "",
        "| data set | task | metric | nasforge | MLP | HGB | nasforge cpu s | MLP cpu s | "
        "HGB cpu s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    summary = []
    for name in dict.fromkeys(r["set"] for r in rows):
        rs = [r for r in rows if r["set"] == name]
        task = rs[0]["task"]
        by = {s: [r for r in rs if r["system"] == s] for s in names}
        metrics = ["accuracy"] if task == "classification" else ["rmse", "r2"]
        for k in metrics:
            vals = {s: _median(by[s], k) for s in names}
            lines.append(
                f"| {name} | {task} | {k} | {vals['nasforge']:.4f} | {vals['mlp']:.4f} | "
                f"{vals['hgb']:.4f} | {_median(by['nasforge'], 'cpu_s'):.1f} | "
                f"{_median(by['mlp'], 'cpu_s'):.1f} | {_median(by['hgb'], 'cpu_s'):.1f} |")
        k = metrics[0]
        sign = 1 if k == "accuracy" else -1
        v = {s: _median(by[s], k) for s in names}
        d = sign * (v["nasforge"] - v["mlp"])
        beats = "beats" if d > 1e-12 else "ties with" if abs(d) <= 1e-12 else "does NOT beat"
        gap = sign * (v["hgb"] - v["mlp"])
        closed = (sign * (v["nasforge"] - v["mlp"]) / gap) if gap > 0 else math.nan
        summary.append((name, k, v, beats, closed))
    lines += ["", "## Against the goal", "",
              "Goal (issue 15): beat the default MLP on every set and close most of the gap to "
              "gradient boosting. Per set, on the first metric (gap closed = (nasforge - MLP) /"
              " (HGB - MLP); over 100 % means nasforge also beats HGB; n/a when HGB does not "
              "beat the MLP):", ""]
    for name, k, v, beats, closed in summary:
        c = "n/a" if math.isnan(closed) else f"{100 * closed:.0f} %"
        lines.append(f"- {name} ({k}): nasforge {v['nasforge']:.4f}, MLP {v['mlp']:.4f}, HGB "
                     f"{v['hgb']:.4f}: {beats} the MLP; gap "
                     f"to HGB closed: {c}")
    n_test = {r["set"]: r["n_test"] for r in rows}
    lines += ["", "Notes:", "",
              "- The test splits are small (" + ", ".join(f"{k} {v}" for k, v in
                                                       n_test.items()) +
              " rows): one row is 1-3 accuracy points, so ties and one-row differences are "
              "within noise; each metric's median is taken on its own (an RMSE and an R^2 "
              "median may come from different seeds).",
              "- The default MLP loses badly on diabetes because it fits the raw target "
              "(mean 152) in 200 epochs without scaling it; nasforge standardizes the target "
              "inside the task.",
              "- A job this short searches about a dozen networks and mostly returns one of "
              "the space's known-good designs (below); validation picked a residual network "
              "(the ResNet-MLP design) in " + ", ".join(
                  f"{k} {sum('residual=True' in r['arch'] for r in rows if r['set'] == k)}/"
                  f"{sum(1 for r in rows if r['set'] == k and r['system'] == 'nasforge')}"
                  for k in n_test) + " runs.",
              "- Successive halving over training *seconds* makes the result depend on the "
              "machine's load: an earlier run of the same command on the same shared machine "
              "gave nasforge diabetes RMSE 66.5, breast cancer 0.9825, wine 1.0, iris 1.0, "
              "digits 0.9805 (medians), against identical scikit-learn figures.",
              "", "Architectures nasforge returned:", ""]
    for r in rows:
        if r["system"] == "nasforge":
            lines.append(f"- {r['set']} seed {r['seed']}: `{r['arch']}`")
    (RESULTS / "tabular.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "tabular.json").write_text(json.dumps(rows, indent=1) + "\n")

    fig, axes = plt.subplots(1, len(summary), figsize=(3.2 * len(summary), 3.2))
    for ax, (name, k, v, _, _) in zip(np.atleast_1d(axes), summary, strict=True):
        ax.bar(range(3), [v[s] for s in names], color=["C0", "C1", "C2"])
        ax.set_xticks(range(3), ["nasforge", "MLP", "HGB"])
        ax.set_title(f"{name} ({k})", fontsize=9)
        lo = min(v.values())
        if k == "accuracy":
            ax.set_ylim(max(0.0, lo - 0.05), 1.0)
    fig.suptitle(f"tabular: median of {args.seeds} seeds (higher accuracy / lower rmse is "
                 "better)", fontsize=9)
    fig.tight_layout()
    fig.savefig(RESULTS / "tabular.png", dpi=110)
    print((RESULTS / "tabular.md").read_text())


if __name__ == "__main__":
    main()
