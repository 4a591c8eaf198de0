"""Peer: what a practitioner writes with Optuna -- TPE + median pruning, then a retrain.

Define-by-run CNN space: 2-5 blocks, each 1 or 2 conv-(BN)-ReLU layers of width 16-96 and
kernel 3 or 5, an optional 2x2 max-pool, dropout; a global-average-pool or an FC-128 head.
A trial trains 1 epoch on a stratified 20 % of the training split (AdamW, the shared
recipe of ``_recipe.py`` with a cosine over the epoch) and reports the accuracy on a fixed
stratified 2,000 images of the validation split after each half epoch (MedianPruner).
The study gets the first 40 % of the budget (counted from process start); a trial still
running then is pruned, and so is one that runs longer than a sixth of the study. The
best configuration is then retrained on all 60k training images for the rest of the
budget (time-based cosine, same recipe as the hand CNN), less the time the test takes.

    taskset -c 1 python3 benchmarks/peers/optuna_tpe.py --budget 900 --seed 0 --out r.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import _recipe as R  # noqa: E402

STUDY_SHARE = 0.4
#: used when no trial completed (a tiny budget): a plain 3-block network
FALLBACK = {"blocks": 3, "bn": True, "dropout": 0.1, "head": "gap",
            **{f"{k}{i}": v for i in range(3)
               for k, v in (("w", 32 * (i + 1)), ("k", 3), ("double", False), ("pool", True))}}


def build(trial: optuna.trial.BaseTrial, in_ch: int = 1, n_classes: int = 10,
          size: int = 28) -> nn.Module:
    bn = trial.suggest_categorical("bn", [True, False])
    drop = trial.suggest_float("dropout", 0.0, 0.4)
    layers: list[nn.Module] = []
    c = in_ch
    for i in range(trial.suggest_int("blocks", 2, 5)):
        w = trial.suggest_int(f"w{i}", 16, 96, step=16)
        k = trial.suggest_categorical(f"k{i}", [3, 5])
        for _ in range(2 if trial.suggest_categorical(f"double{i}", [False, True]) else 1):
            layers += [nn.Conv2d(c, w, k, padding=k // 2, bias=not bn),
                       *([nn.BatchNorm2d(w)] if bn else []), nn.ReLU(inplace=True)]
            c = w
        if size >= 4 and trial.suggest_categorical(f"pool{i}", [True, False]):
            layers.append(nn.MaxPool2d(2))
            size //= 2
        layers.append(nn.Dropout(drop))
    if trial.suggest_categorical("head", ["gap", "fc"]) == "gap":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, n_classes)]
    else:
        s = min(size, 7)
        layers += [nn.AdaptiveAvgPool2d(s), nn.Flatten(), nn.Linear(c * s * s, 128),
                   nn.ReLU(inplace=True), nn.Dropout(drop), nn.Linear(128, n_classes)]
    return nn.Sequential(*layers)


def stratified(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices of ``y``, the same share of every class."""
    idx = [rng.choice(np.flatnonzero(y == c), round(n * np.mean(y == c)), replace=False)
           for c in np.unique(y)]
    return rng.permutation(np.concatenate(idx))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, required=True, help="wall-clock seconds, all in")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="result JSON")
    args = ap.parse_args(argv)
    clock = R.Clock(args.budget)
    R.setup(args.seed)
    data = R.load(args.seed)
    rng = np.random.default_rng(args.seed)
    sub = stratified(data.y_train, int(0.2 * len(data.y_train)), rng)
    xs, ys = data.x_train[sub], data.y_train[sub]
    vsub = stratified(data.y_val, min(2000, len(data.y_val)), rng)
    xv, yv = data.x_val[vsub], data.y_val[vsub]
    study_end = clock.t0 + STUDY_SHARE * args.budget
    trial_cap = STUDY_SHARE * args.budget / 6

    def objective(trial: optuna.Trial) -> float:
        torch.manual_seed(args.seed + trial.number)
        model = build(trial, data.input_shape[0], data.num_classes, data.input_shape[1])
        acc = {"last": 0.0}

        def report(k: int) -> None:
            acc["last"] = R.accuracy(model, xv, yv)
            trial.report(acc["last"], k)
            if trial.should_prune():
                raise optuna.TrialPruned()

        hard = min(study_end, time.monotonic() + trial_cap)
        R.train(model, xs, ys, epochs=1, seed=args.seed + trial.number,
                on_half_epoch=report, hard_stop=hard)
        if time.monotonic() >= hard:  # stopped by the clock, not finished: not comparable
            raise optuna.TrialPruned()
        return acc["last"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0))
    study.optimize(objective, timeout=max(1.0, study_end - time.monotonic()))
    states = [t.state.name for t in study.trials]
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    params: dict[str, Any] = study.best_params if done else dict(FALLBACK)
    search_s = clock.elapsed()
    print(f"study: {len(study.trials)} trials ({states.count('COMPLETE')} complete, "
          f"{states.count('PRUNED')} pruned) in {search_s:.0f} s; best "
          f"{study.best_value if done else 'none, fallback'} {params}", flush=True)

    torch.manual_seed(args.seed)
    model = build(optuna.trial.FixedTrial(params), data.input_shape[0], data.num_classes,
                  data.input_shape[1])
    n_params = R.count_params(model)
    x, y = R.all_train(data)
    reserve = max(5.0, R.test_seconds(model, data))
    hist = R.train(model, x, y, seconds=max(1.0, clock.left() - reserve), seed=args.seed)
    res = R.test(model, data)
    wall = clock.elapsed()
    print(f"retrained {hist['epochs']:.2f} epochs in {hist['seconds']:.0f} s; test "
          f"{res['test_accuracy']:.4f}, {wall:.1f} s of {args.budget:.0f}", flush=True)
    R.write(args.out, {
        "system": "optuna", "seed": args.seed, "test_accuracy": res["test_accuracy"],
        "params": n_params, "trials": len(study.trials), "wall_s": wall,
        "notes": (f"TPE {len(study.trials)} trials ({states.count('COMPLETE')} complete, "
                  f"{states.count('PRUNED')} pruned) in {search_s:.0f} s"
                  f"{'' if done else ', none complete: fallback network'}; retrained "
                  f"{hist['epochs']:.2f} epochs in {hist['seconds']:.0f} s, test "
                  f"{res['test_s']:.1f} s of {reserve:.1f} s kept"),
        "best_params": params, "best_val_accuracy": study.best_value if done else None,
        "search_s": search_s, "epochs": hist["epochs"], "train_s": hist["seconds"],
        "recipe": R.RECIPE, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    })
    return 0


if __name__ == "__main__":
    R.exit_now(main())
