"""Compound scaling against width-only scaling at the same budgets (``nasforge scale``).

One short search on a Fashion-MNIST subset gives the base model (RUN_DIR/best). The grid
search of :mod:`nasforge.scaling` picks (alpha, beta, gamma) once, at phi = 1. Then, for
each budget (FLOPs <= 2x and 4x the base's, latency <= 2x the base's), three ways of
scaling pick the largest network within it: compound with the grid's coefficients,
compound with the paper's (1.2, 1.1, 1.15), and width only (beta = sqrt 2). Each chosen
network (and the unscaled base) is trained the same wall-clock time with the run's recipe
through ``nasforge.scaling.scale_model`` (the code path of ``nasforge scale``) and scored
on the 10k test images; every configuration for each seed.

    taskset -c 0 python benchmarks/scale.py --out benchmarks/results/scale.md

Resumable: finished trainings are kept in ``--journal`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
#: the report's hand-written verdict follows this line; a re-run keeps it
MARK = "<!-- VERDICT: hand-written below, kept when the script writes the report again -->"


def base_run(run_dir: Path, args: argparse.Namespace) -> Path:
    """The base model: a two-trial search (the space's first known-good designs), once."""
    import nasforge

    best = run_dir / "best"
    if (best / "arch.json").is_file():
        return best
    nasforge.search("fashion-mnist", space="cnn", estimator="train", trials=2, seed=0,
                    out=run_dir, estimator_options={"epochs": 1, "measure_latency": False},
                    final_epochs=1, data_dir=args.data_dir, progress=False,
                    dataset_options={"max_train": args.max_train,
                                     "image_size": args.image_size})
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "scale.md")
    ap.add_argument("--journal", type=Path, default=Path("runs/bench-scale/journal.json"))
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-scale"))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--max-train", type=int, default=5000)
    ap.add_argument("--image-size", type=int, default=14)
    ap.add_argument("--train-s", type=float, default=30.0, help="training time of each model")
    ap.add_argument("--grid-s", type=float, default=6.0, help="training time per grid point")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--phi-step", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    from nasforge import scaling
    from nasforge.scaling import Coefficients

    torch.set_num_threads(args.threads)
    t_start = time.monotonic()
    args.runs.mkdir(parents=True, exist_ok=True)
    best = base_run(args.runs / "base", args)
    base = scaling.load_base(best)
    state: dict[str, Any] = (json.loads(args.journal.read_text()) if args.journal.is_file()
                             else {"rows": []})
    if "grid" not in state:
        t0 = time.monotonic()
        rows = scaling.grid_search(base, scaling.grid(), args.grid_s,
                                   say=lambda m: print(m, flush=True))
        state["grid"] = [{**r, "coefficients": [r["coefficients"].alpha,
                                                r["coefficients"].beta,
                                                r["coefficients"].gamma]} for r in rows]
        state["grid_s_total"] = time.monotonic() - t0
        sc0 = scaling.scale_arch(base.space, base.arch, base.input_shape,
                                 Coefficients(1, 1, 1), 0)
        state["base"] = scaling.measure(scaling.build(sc0, base.input_shape, 10),
                                        base.input_shape, repeats=50)
        state["base"]["arch"] = base.arch.text
        args.journal.write_text(json.dumps(state, indent=1))
    grid_co = Coefficients(*next(r for r in state["grid"] if "error" not in r)["coefficients"])
    f0, l0 = state["base"]["flops"], state["base"]["latency_ms"]
    budgets = [("FLOPs <= 2x base", {"max_flops": 2 * f0}),
               ("FLOPs <= 4x base", {"max_flops": 4 * f0}),
               ("latency <= 2x base", {"max_latency_ms": 2 * l0})]
    methods = [("compound (grid)", grid_co), ("compound (paper)", Coefficients(*scaling.PAPER)),
               ("width only", Coefficients(*scaling.WIDTH_ONLY))]
    if grid_co == Coefficients(*scaling.PAPER):
        methods = methods[1:]
    plan = [("unscaled", "-", Coefficients(1, 1, 1), {"max_flops": 1.01 * f0})]
    plan += [(m, b, co, kw) for b, kw in budgets for m, co in methods]
    done = {(r["method"], r["budget"], r["seed"]) for r in state["rows"]}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for method, budget, co, kw in plan:
            if (method, budget, seed) in done:
                continue
            res = scaling.scale_model(
                best, **kw, coefficients=co, time_budget=args.train_s, seed=seed,
                onnx=False, out=args.runs / f"{method}-{budget}-{seed}".replace(" ", "_")
                .replace("<=", "le").replace("(", "").replace(")", ""), repeats=30,
                phi_step=args.phi_step)
            m, c = res.metrics, res.chosen
            row = {"method": method, "budget": budget, "seed": seed, "phi": c.phi,
                   "coefficients": [co.alpha, co.beta, co.gamma], "depth": c.depth,
                   "width": c.width, "input": None if c.size is None else list(c.size),
                   "arch": c.arch.text, **{k: m.get(k) for k in (
                       "test_accuracy", "flops", "params", "latency_ms", "epochs",
                       "train_time_s")}}
            state["rows"].append(row)
            args.journal.write_text(json.dumps(state, indent=1))
            print(json.dumps(row), flush=True)
    state["wall_s"] = state.get("wall_s", 0.0) + time.monotonic() - t_start
    args.journal.write_text(json.dumps(state, indent=1))
    text = report(state, budgets, plan, args)
    if args.out.is_file() and MARK in args.out.read_text():  # keep the written verdict
        text = text.split(MARK)[0] + MARK + args.out.read_text().split(MARK, 1)[1]
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(state, indent=1))
    print(f"wrote {args.out}")


def _k(v: float | None) -> str:
    if v is None:
        return "-"
    for div, suf in ((1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f}{suf}"
    return f"{v:.3g}"


def report(state: dict[str, Any], budgets: list[Any], plan: list[Any],
           args: argparse.Namespace) -> str:
    from _common import cpu_name

    rows = state["rows"]
    seeds = sorted({r["seed"] for r in rows})
    b = state["base"]
    out = [
        "# Compound scaling vs width-only scaling (`nasforge scale`)", "",
        f"Generated by `benchmarks/scale.py` ({time.strftime('%Y-%m-%d')}), pinned to one "
        f"core (`taskset -c 0`), {args.threads} torch thread, {cpu_name()}; "
        f"{state.get('wall_s', 0) / 60:.1f} min in all.", "",
        f"Data: Fashion-MNIST, a stratified {args.max_train}-image train+validation pool "
        f"resized to {args.image_size}x{args.image_size} (90 % training, 10 % validation), the "
        "full 10k test split. Base model: the best of a two-trial search of the `cnn` space "
        f"(`{b['arch']}`; {_k(b['flops'])} FLOPs, {_k(b['params'])} params, "
        f"{b['latency_ms']:.3f} ms at batch 1).", "",
        f"Every model, scaled or not, is trained {args.train_s:.0f} s (wall clock, cosine "
        "schedule over the time) with the run's recipe on training + validation images, then "
        f"tested once; seeds {', '.join(map(str, seeds))} (initialization and batch order). A "
        f"method picks the largest network within the budget over phi = 0, {args.phi_step:g}, "
        f"{2 * args.phi_step:g}, ... "
        "(FLOPs and latency measured as `nasforge scale` does, resize included).", "",
        "## Grid search (phi = 1, alpha * beta^2 * gamma^2 = 2)", "",
        f"Each point's phi = 1 network trained {args.grid_s:.0f} s on the training split, "
        f"scored on the validation split ({state.get('grid_s_total', 0):.0f} s in all); the "
        "best point's coefficients are 'compound (grid)'.", "",
        "| alpha | beta | gamma | input | val accuracy | epochs |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in state["grid"]:
        a, be, g = r["coefficients"]
        inp = "x".join(map(str, r["input"])) if r.get("input") else "-"
        acc = "-" if r.get("val_accuracy") is None else f"{r['val_accuracy']:.4f}"
        ep = f"{r['epochs']:.1f}" if r.get("epochs") is not None else "-"
        out.append(f"| {a:.3g} | {be:.3g} | {g:.3g} | {inp} | {acc} | {ep} |")
    out += ["", "## Test accuracy at equal budgets and equal training time", "",
            "| budget | method | phi | depth x | width x | input | FLOPs | params | latency ms "
            "| epochs | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
            + "---:|" * (len(seeds) + 1)]
    means: dict[tuple[str, str], float] = {}
    for method, budget, _co, _kw in plan:
        rs = [r for r in rows if r["method"] == method and r["budget"] == budget]
        if not rs:
            continue
        r0 = rs[0]
        accs = {r["seed"]: r["test_accuracy"] for r in rs}
        mean = statistics.mean(accs.values())
        means[(method, budget)] = mean
        inp = "x".join(map(str, r0["input"])) if r0["input"] else f"{args.image_size}"
        out.append(
            f"| {budget} | {method} | {r0['phi']:g} | {r0['depth']:.2f} | {r0['width']:.2f} "
            f"| {inp} | {_k(r0['flops'])} | {_k(r0['params'])} | "
            f"{statistics.mean(r['latency_ms'] for r in rs):.3f} | "
            f"{statistics.mean(r['epochs'] for r in rs):.1f} | "
            + " | ".join(f"{accs[s]:.4f}" if s in accs else "-" for s in seeds)
            + f" | **{mean:.4f}** |")
    out += ["", "## Reading", ""]
    for label, _kw in budgets:
        here = {m: v for (m, bud), v in means.items() if bud == label}
        if not here:
            continue
        ranked = sorted(here.items(), key=lambda kv: -kv[1])
        out.append(f"- {label}: " + ", ".join(f"{m} {v:.4f}" for m, v in ranked)
                   + f" (best: {ranked[0][0]}, by {ranked[0][1] - ranked[-1][1]:.4f} over the "
                   "last)")
    ref = means.get(("unscaled", "-"))
    if ref is not None:
        out.append(f"- unscaled base, same training time: {ref:.4f}")
    out += ["", MARK, ""]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    main()
