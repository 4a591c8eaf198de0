"""Supernet ranking against its noise ceiling on the ``darts`` space (small, CPU).

The protocol of ``ranking_ceiling.py`` (NAS-Bench-201), on the DARTS cell space with the
weight-sharing supernet of :mod:`nasforge.oneshot.darts_space`, scaled to one CPU core:

1. ``standalone``: ``--archs`` uniformly sampled darts archs trained from scratch twice
   (seeds A and B) for ``--epochs`` epochs (``train_model``, SGD cosine, batch 64, lr 0.05);
   Kendall tau between the two seeds is the noise ceiling.
2. ``supernet``: a uniform SPOS and a FairNAS strictly fair supernet, each trained for
   ``--supernet-s`` CPU seconds (``train_darts_supernet(seconds=...)``), score every arch
   with inherited weights after BN recalibration (8 training batches); then each runs its
   own regularized-evolution search over ``--candidates`` archs (inherited accuracy on
   ``--search-val`` validation images) and its pick is trained like the random archs
   (both seeds) and placed among them.
3. ``report``: tau against the mean of the two seeds, and the like-for-like fraction of
   the ceiling (mean of tau vs seed A and vs seed B, over the seed-A-vs-B tau); the pick
   against the median random arch. Writes ``results/ranking_ceiling_darts.md`` / ``.json``
   (hand-written lines below the mark are kept on regenerating).

Accuracies of the ranking are on the first ``--test`` test images for both sides.
Every part journals to ``--work`` and resumes where it stopped; ``--part all`` runs all.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from ranking_ceiling import KEEP_MARK, kendall, kept_tail, sample_archs  # noqa: E402

from nasforge.data import load_dataset  # noqa: E402
from nasforge.oneshot import InheritedWeightsEstimator, spos_search  # noqa: E402
from nasforge.oneshot.darts_space import DartsSpaceSupernet, train_darts_supernet  # noqa: E402
from nasforge.spaces.darts import DartsSpace  # noqa: E402
from nasforge.training import evaluate_model, train_model  # noqa: E402

RESULTS = HERE / "results"
SEEDS = (1000, 2000)
METHODS = {"spos-uniform": "uniform", "fairnas": "fair"}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _data(args: argparse.Namespace) -> Any:
    """Fashion-MNIST as loaded; the validation split kept for the searches, the first
    ``--test`` test images for the ranking (both sides alike)."""
    data = load_dataset("fashion-mnist", image_size=args.image_size, max_train=args.max_train,
                        seed=args.seed, verbose=False)
    return dataclasses.replace(data, x_test=data.x_test[:args.test],
                               y_test=data.y_test[:args.test])


def _space(args: argparse.Namespace) -> DartsSpace:
    return DartsSpace(C=args.C, layers=args.layers)


def _train_standalone(space: DartsSpace, arch: Any, data: Any, epochs: int, seed: int
                      ) -> float:
    torch.manual_seed(seed)
    model = space.build(arch, data.input_shape, data.num_classes)
    train_model(model, data, epochs=epochs, batch_size=64, lr=0.05, seed=seed)
    return float(evaluate_model(model, data.x_test, data.y_test)[0])


def part_standalone(args: argparse.Namespace, work: Path) -> None:
    data, space = _data(args), _space(args)
    archs = sample_archs(space, args.archs, args.seed)
    for k in (0, 1):
        path = work / f"standalone-s{k}.json"
        rows = json.loads(path.read_text()) if path.exists() else []
        for i, a in enumerate(archs[len(rows):], start=len(rows)):
            t0 = time.perf_counter()
            acc = _train_standalone(space, a, data, args.epochs, SEEDS[k] + i)
            rows.append({"arch": a.text, "acc": acc, "train_s": time.perf_counter() - t0})
            path.write_text(json.dumps(rows))
            _log(f"stand-alone seed {k}: {i + 1}/{len(archs)} {acc:.4f} "
                 f"({rows[-1]['train_s']:.1f} s)")


def part_supernet(args: argparse.Namespace, work: Path) -> None:
    data, space = _data(args), _space(args)
    scored = dataclasses.replace(data, x_val=data.x_test, y_val=data.y_test)
    archs = sample_archs(space, args.archs, args.seed)
    for method, sampling in METHODS.items():
        path = work / f"supernet-{method}.json"
        if path.exists():
            continue
        torch.manual_seed(args.seed)
        sn = DartsSpaceSupernet(space, data.input_shape, data.num_classes)
        t0 = time.perf_counter()
        hist = train_darts_supernet(sn, data, seconds=args.supernet_s, sampling=sampling,
                                    seed=args.seed, lr=0.05, batch_size=64)
        train_s = time.perf_counter() - t0
        est = InheritedWeightsEstimator(sn, scored, calib_batches=8, batch_size=128,
                                        seed=args.seed)
        t1 = time.perf_counter()
        scores = [est.score(a)[0] for a in archs]
        score_s = time.perf_counter() - t1
        search_est = InheritedWeightsEstimator(sn, data, calib_batches=8, batch_size=128,
                                               max_val=args.search_val, seed=args.seed)
        t2 = time.perf_counter()
        found = spos_search(sn, search_est, strategy="evolution",
                            num_candidates=args.candidates, seed=args.seed)
        search_s = time.perf_counter() - t2
        found_acc = [_train_standalone(space, found.best, data, args.epochs, SEEDS[k] + 777)
                     for k in (0, 1)]
        path.write_text(json.dumps({
            "method": method, "sampling": sampling, "train_s": train_s,
            "epochs": hist["epochs"], "steps": hist["steps"],
            "final_train_loss": hist["curve"][-1]["train_loss"] if hist["curve"] else None,
            "score_s": score_s, "scores": scores, "archs": [a.text for a in archs],
            "found": found.best.text, "found_score": found.best_score,
            "found_search_s": search_s, "found_acc": found_acc}))
        _log(f"{method}: {hist['epochs']} epochs / {hist['steps']} steps in {train_s:.0f} s, "
             f"scored in {score_s:.0f} s, search {search_s:.0f} s, pick {found_acc}")


def part_report(args: argparse.Namespace, work: Path) -> None:
    runs = [json.loads(p.read_text()) if p.exists() else []
            for p in (work / "standalone-s0.json", work / "standalone-s1.json")]
    n = min(len(runs[0]), len(runs[1]))
    if n < 3:
        raise SystemExit("not enough stand-alone results yet: run --part standalone")
    a = [r["acc"] for r in runs[0][:n]]
    b = [r["acc"] for r in runs[1][:n]]
    mean = [(x + y) / 2 for x, y in zip(a, b, strict=True)]
    ceil = kendall(a, b)
    sa_s = [r["train_s"] for rows in runs for r in rows[:n]]
    out: dict[str, Any] = {
        "settings": {k: getattr(args, k) for k in ("C", "layers", "archs", "epochs",
                                                  "image_size", "max_train", "test",
                                                  "supernet_s", "candidates", "search_val",
                                                  "seed")},
        "n_archs": n, "ceiling_tau": ceil, "median_acc": float(np.median(mean)),
        "standalone_train_s_median": float(np.median(sa_s)),
        "standalone_total_s": float(sum(sa_s)), "methods": {}}
    lines = [
        "# Supernet ranking against the noise ceiling (darts space, small)", "",
        f"Generated by `benchmarks/ranking_ceiling_darts.py` ({time.strftime('%Y-%m-%d')}): "
        f"{n} uniformly sampled archs of `darts` (C={args.C}, layers={args.layers}, 4 nodes, "
        f"the 7 DARTS ops), Fashion-MNIST at {args.image_size}x{args.image_size}, "
        f"{args.max_train} training images (90 % train), accuracies on the first "
        f"{args.test} test images; one torch thread, the process pinned to cores "
        f"{sorted(os.sched_getaffinity(0))} of {os.cpu_count()} (the report's; "
        "run the parts pinned alike).", "",
        "## 1. Noise ceiling", "",
        "| protocol | tau seed A vs B | median acc (mean of seeds) | median train s | "
        "total train s (both seeds) |", "|---|--:|--:|--:|--:|",
        f"| {args.epochs} epochs, seeds {SEEDS[0]}+i / {SEEDS[1]}+i | {ceil:.3f} | "
        f"{out['median_acc']:.4f} | {out['standalone_train_s_median']:.1f} | "
        f"{out['standalone_total_s']:.0f} |", "",
        "## 2. Supernets (inherited accuracy after BN recalibration, 8 batches)", "",
        "| method | supernet train s (epochs / steps) | final train loss | tau vs mean | "
        "tau vs seed A / B | fraction of ceiling (like for like) | score s | "
        "search: candidates, s | pick acc (beats random) | pick vs median random |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for method in METHODS:
        p = work / f"supernet-{method}.json"
        if not p.exists():
            lines.append(f"| {method} | (not run) | | | | | | | | |")
            continue
        r = json.loads(p.read_text())
        s = r["scores"][:n]
        t_mean, ta, tb = kendall(s, mean), kendall(s, a), kendall(s, b)
        frac = (ta + tb) / 2 / ceil if ceil > 0 else float("nan")
        fa = float(np.mean(r["found_acc"]))
        beats = float(np.mean(np.array(mean) < fa))
        out["methods"][method] = {**r, "tau": t_mean, "tau_a": ta, "tau_b": tb,
                                  "fraction": frac, "found_mean_acc": fa,
                                  "found_beats": beats}
        loss = r["final_train_loss"]
        loss_s = "-" if loss is None else f"{loss:.3f}"
        lines.append(
            f"| {method} | {r['train_s']:.0f} ({r['epochs']} / {r['steps']}) | "
            f"{loss_s} | {t_mean:.3f} | {ta:.3f} / {tb:.3f} | {frac:.2f} | "
            f"{r['score_s']:.0f} | {args.candidates}, {r['found_search_s']:.0f} | "
            f"{fa:.4f} ({beats:.0%}) | {fa - out['median_acc']:+.4f} |")
    lines += ["", "## Goals (issue #17)", ""]
    for m, r in out["methods"].items():
        lines.append(
            f"- `{m}`: tau {r['tau']:.3f} (goal >= 0.5: "
            f"{'met' if r['tau'] >= 0.5 else 'NOT met'}); {r['fraction']:.2f} of the ceiling "
            f"{ceil:.3f} (goal >= 0.8: {'met' if r['fraction'] >= 0.8 else 'NOT met'}); pick "
            f"{r['found_mean_acc']:.4f} vs median random {out['median_acc']:.4f} (goal: beat "
            f"it: {'met' if r['found_mean_acc'] > out['median_acc'] else 'NOT met'}).")
    out["machine"] = {"python": platform.python_version(), "torch": torch.__version__}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ranking_ceiling_darts.json").write_text(json.dumps(out, indent=1))
    md = RESULTS / "ranking_ceiling_darts.md"
    tail = kept_tail(md.read_text()) if md.exists() else []
    md.write_text("\n".join(lines + [KEEP_MARK] + tail) + "\n")
    _log(f"wrote {md}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("standalone", "supernet", "report", "all"),
                    default="all")
    ap.add_argument("--archs", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2, help="stand-alone epochs")
    ap.add_argument("--C", type=int, default=8)
    ap.add_argument("--layers", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--max-train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=2000, help="test images the ranking uses")
    ap.add_argument("--supernet-s", type=float, default=150.0, help="CPU s per supernet")
    ap.add_argument("--candidates", type=int, default=40, help="evolution search size")
    ap.add_argument("--search-val", type=int, default=450, help="search validation images")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=str(HERE.parent / "runs" / "ranking-ceiling-darts"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.part in ("standalone", "all"):
        part_standalone(args, work)
    if args.part in ("supernet", "all"):
        part_supernet(args, work)
    if args.part in ("report", "all"):
        part_report(args, work)
    _log(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
