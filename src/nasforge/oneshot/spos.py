"""Single-path one-shot NAS (SPOS, Guo et al. 2020) on the NAS-Bench-201 supernet.

Training samples one path uniformly per step, so every sub-network's weights get
trained about equally often and no architecture parameters bias the shared weights.
Search is then a plain ask/tell search (regularized evolution or random, the project's
strategies) whose estimator scores a sub-network with the *inherited* weights on the
validation split, after re-estimating its batch-norm statistics
(:func:`~nasforge.oneshot.supernet.recalibrate_bn`): scoring costs seconds instead of a
training run, at the price of a ranking that is only correlated with stand-alone
accuracy (the benchmark measures how well).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nasforge.data import stratified_subset
from nasforge.errors import NasforgeError, RunDirError
from nasforge.estimators.base import Result
from nasforge.oneshot.checkpoint import (
    damaged,
    load_checkpoint,
    load_optimizer,
    optimizer_tensors,
    save_checkpoint,
)
from nasforge.oneshot.inherited import InheritedWeights, device_tensor
from nasforge.oneshot.supernet import Supernet, path_indices
from nasforge.run.loop import Callback
from nasforge.spaces.base import Arch

if TYPE_CHECKING:
    from nasforge.data import Dataset
    from nasforge.strategies.base import Strategy, Suggestion


def train_supernet(
    supernet: Supernet,
    data: Dataset,
    epochs: int,
    *,
    batch_size: int = 128,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    grad_clip: float | None = 5.0,
    data_fraction: float = 1.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    deadline: float | None = None,
    on_epoch: Callable[[int, dict[str, float]], Any] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    sampling: str = "uniform",
    fixed: Mapping[int, int] | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Train the shared weights, one uniformly sampled path per step (SPOS).

    ``supernet``: a :class:`Supernet`, or any module with ``sample_path(rng, fixed)`` and
    ``fair_paths(rng, fixed)`` whose forward takes ``(x, path)`` (the darts one,
    :func:`~nasforge.oneshot.darts_space.train_darts_supernet`).

    ``sampling="fair"``: FairNAS's strict fairness instead: each step accumulates the
    gradients of ``NUM_OPS`` paths that use every op of every edge once
    (:meth:`Supernet.fair_paths`), then takes one optimizer step; an epoch then costs
    ``NUM_OPS`` times the forward/backward passes of a uniform one. ``fixed`` (edge ->
    op) trains a few-shot sub-supernet: those edges always take that op.

    SGD with Nesterov momentum and a per-step cosine schedule, like ``train_model``.
    ``deadline`` (a ``time.monotonic()`` time) stops training early between steps;
    the history says so. ``max_steps`` ends training after that many steps, with the
    cosine schedule spread over them (a time budget shorter than one epoch still ends
    at a low learning rate, instead of being cut off at a high one). Returns
    ``{"epochs", "steps", "curve", "train_time_s", "stopped_early"}``.

    ``checkpoint``: a file written (atomically) at every epoch end and every
    ``checkpoint_every`` steps, holding everything the next step depends on (weights,
    optimizer buffers, step, batch order, torch and numpy generator states). With
    ``resume=True`` an existing one is loaded and training continues from it exactly as
    the uninterrupted run would have (a finished training just returns its history).
    """
    if epochs < 1:
        raise NasforgeError(f"epochs must be >= 1, got {epochs}")
    if sampling not in ("uniform", "fair"):
        raise NasforgeError(f"sampling must be 'uniform' or 'fair', got {sampling!r}")
    if not 0.0 < data_fraction <= 1.0:
        raise NasforgeError(f"data_fraction must be in (0, 1], got {data_fraction}")
    if checkpoint_every is not None and (isinstance(checkpoint_every, bool)
                                         or checkpoint_every < 1):
        raise NasforgeError(f"checkpoint_every must be >= 1 steps, got {checkpoint_every!r}")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int)
                                  or max_steps < 1):
        raise NasforgeError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    dev = torch.device(device)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 11])
    idx = stratified_subset(data.y_train, data_fraction, seed)
    x = device_tensor(data.x_train[idx], torch.float32, dev)
    y = device_tensor(data.y_train[idx], torch.long, dev)
    n = len(y)
    bs = min(batch_size, n)
    n_used = n - 1 if n % bs == 1 and n > 1 else n  # no BN batch of one
    total = epochs * math.ceil(n_used / bs)
    if max_steps is not None:
        total = min(total, max_steps)
    supernet.to(dev).train()
    opt = torch.optim.SGD(
        supernet.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay,
        nesterov=momentum > 0,
    )  # fmt: skip
    # what a checkpoint must agree with to be continued (another training is refused)
    recipe = {"method": "spos", "epochs": epochs, "n": n, "n_used": n_used, "batch_size": bs,
              "lr": lr, "momentum": momentum, "weight_decay": weight_decay,
              "grad_clip": grad_clip, "data_fraction": data_fraction, "seed": seed}
    if sampling != "uniform" or fixed:  # only then: older checkpoints stay continuable
        recipe.update(sampling=sampling, fixed={str(k): int(v) for k, v in (fixed or {}).items()})
    if max_steps is not None:
        recipe["max_steps"] = total
    curve: list[dict[str, float]] = []
    step = 0
    stopped = False
    first_epoch, pos = 1, 0  # where to start: epoch, and batch offset inside it
    perm: torch.Tensor | None = None
    loss_sum, seen, prior_s = 0.0, 0, 0.0
    ckpt = None if checkpoint is None else Path(checkpoint)
    if resume and ckpt is not None and ckpt.exists():
        st = _load_training(ckpt, supernet, opt, recipe, dev)
        rng.bit_generator.state = st["numpy_rng"]
        curve, step, prior_s = st["curve"], st["step"], st["train_time_s"]
        first_epoch, pos = st["epoch"], st["pos"]
        perm, loss_sum, seen = st.get("perm"), st["loss_sum"], st["seen"]
        if pos == 0:  # the checkpoint of an epoch's end: the next one starts afresh
            first_epoch += 1
    t0 -= prior_s

    def save(epoch: int, at: int) -> None:
        """A checkpoint between two steps: ``at`` batches of ``epoch`` done (0: all)."""
        if ckpt is None:
            return
        tensors = {f"model.{k}": v for k, v in supernet.state_dict().items()}
        o_tensors, o_plain = optimizer_tensors(opt)
        tensors.update(o_tensors)
        tensors["torch_rng"] = torch.get_rng_state()
        if at and perm is not None:
            tensors["perm"] = perm
        save_checkpoint(ckpt, tensors, {
            "recipe": recipe, "epoch": epoch, "pos": at, "step": step,
            "loss_sum": loss_sum if at else 0.0, "seen": seen if at else 0,
            "curve": curve, "train_time_s": time.perf_counter() - t0,
            "numpy_rng": rng.bit_generator.state, "optimizer": o_plain,
            "done": not at and (epoch >= epochs or step >= total),
        })

    for epoch in range(first_epoch, epochs + 1):
        if pos == 0:
            perm = torch.from_numpy(rng.permutation(n)[:n_used]).to(dev)
            loss_sum, seen = 0.0, 0
        assert perm is not None
        for i in range(pos, n_used, bs):
            if step >= total:  # max_steps reached
                break
            if deadline is not None and time.monotonic() > deadline:
                stopped = True
                break
            for g in opt.param_groups:
                g["lr"] = 0.5 * lr * (1.0 + math.cos(math.pi * step / total))
            b = perm[i : i + bs]
            paths = (supernet.fair_paths(rng, fixed) if sampling == "fair"
                     else [supernet.sample_path(rng, fixed)])
            opt.zero_grad(set_to_none=True)
            total_loss = 0.0
            for path in paths:  # fair: gradients of all paths summed, then one step
                loss = F.cross_entropy(supernet(x[b], path), y[b])
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"supernet training diverged at epoch {epoch} (lr {lr:g})")
                loss.backward()
                total_loss += float(loss.detach())
            loss = torch.tensor(total_loss / len(paths))
            if grad_clip:
                nn.utils.clip_grad_norm_(supernet.parameters(), grad_clip)
            opt.step()
            loss_sum += float(loss.detach()) * len(b)
            seen += len(b)
            step += 1
            if (checkpoint_every and step % checkpoint_every == 0 and i + bs < n_used
                    and step < total):
                save(epoch, i + bs)
        pos = 0
        if seen:
            rec = {
                "epoch": epoch,
                "train_loss": loss_sum / seen,
                "time_s": time.perf_counter() - t0,
            }
            curve.append(rec)
            if not stopped:  # written before on_epoch: a kill there loses nothing
                save(epoch, 0)
            if on_epoch is not None:
                on_epoch(epoch, dict(rec))
        if stopped or step >= total:
            break
    return {
        "epochs": len(curve),
        "steps": step,
        "curve": curve,
        "train_time_s": time.perf_counter() - t0,
        "stopped_early": stopped,
    }


def _load_training(path: Path, supernet: Supernet, opt: torch.optim.Optimizer,
                   recipe: dict[str, Any], dev: torch.device) -> dict[str, Any]:
    """Load a training checkpoint into ``supernet`` and ``opt``; its plain values (every
    one checked: the file is untrusted) with the batch order as ``perm``."""
    tensors, st = load_checkpoint(path)
    got = st.get("recipe")
    if got != json.loads(json.dumps(recipe)):
        diff = ([f"{k}: checkpoint {got.get(k)!r} != now {v!r}" for k, v in recipe.items()
                 if got.get(k) != v] if isinstance(got, dict) else ["no recipe"])
        raise RunDirError(f"the supernet checkpoint {path} is of another training "
                          f"({'; '.join(diff)[:300]}); delete it or choose another --out")
    try:
        model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        supernet.load_state_dict(model, strict=True)
        load_optimizer(opt, tensors, st["optimizer"])
        torch.set_rng_state(tensors["torch_rng"])
        out = {
            "epoch": int(st["epoch"]), "pos": int(st["pos"]), "step": int(st["step"]),
            "loss_sum": float(st["loss_sum"]), "seen": int(st["seen"]),
            "train_time_s": float(st["train_time_s"]), "numpy_rng": dict(st["numpy_rng"]),
            "curve": [dict(r) for r in st["curve"]],
        }
        if not 1 <= out["epoch"] <= recipe["epochs"] or not 0 <= out["pos"] < recipe["n_used"]:
            raise ValueError(f"epoch {out['epoch']} / batch offset {out['pos']} out of range")
        if out["pos"]:
            out["perm"] = tensors["perm"].to(dev)
            if out["perm"].shape != (recipe["n_used"],):
                raise ValueError("batch order of the wrong length")
        np.random.default_rng().bit_generator.state = out["numpy_rng"]  # a valid state?
    except RunDirError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever is wrong, the file is
        raise damaged(path, f"{type(e).__name__}: {str(e)[:120]}") from None
    return out


class InheritedWeightsEstimator(InheritedWeights):
    """Scores a sub-network with the supernet's shared weights (no training).

    Before each evaluation the sub-network's BN statistics are recalibrated on
    ``calib_batches`` random training batches; then accuracy and loss are taken in
    eval mode on the validation split (capped at ``max_val`` examples if given).
    """

    name = "inherited"
    fixed_calibration = False
    calib_key = 12
    check_max_val = False
    config_keys = ("calib_batches", "batch_size", "seed")

    supernet: Any  # a Supernet, a FewShotSupernet or a DartsSpaceSupernet

    def subnet(self, arch: Arch | str | tuple[int, ...]) -> Any:
        """The path of ``arch``: one op index per edge on NAS-Bench-201; a supernet that
        names its paths itself (``path_of``: the darts one) is asked instead."""
        path_of = getattr(self.supernet, "path_of", None)
        if path_of is not None:
            return path_of(arch)
        return path_indices(arch)


@dataclass
class SposSearch:
    """What :func:`spos_search` found: the best arch, its score, and every trial in order."""

    best: Arch
    best_score: float
    trials: list[tuple[Arch, Result]] = field(default_factory=list)
    search_time_s: float = 0.0


def spos_search(
    supernet: Supernet,
    estimator: InheritedWeightsEstimator,
    *,
    strategy: str | Strategy = "evolution",
    num_candidates: int = 50,
    seed: int = 0,
    strategy_options: Mapping[str, Any] | None = None,
    on_ask: Callable[[Strategy, Suggestion], Any] | None = None,
    on_tell: Callable[[Strategy, Suggestion, Result, Any], None] | None = None,
    previous: Sequence[tuple[Arch, Result]] = (),
) -> SposSearch:
    """Search sub-networks with a project strategy (ask/tell), scored with inherited weights.

    ``strategy`` is a registered name (``"evolution"``, ``"random"``, ...) or an instance.
    ``on_ask(strategy, suggestion)`` runs right after ``ask`` and its return value is
    handed to ``on_tell(strategy, suggestion, result, token)`` right after ``tell``:
    that is how :func:`~nasforge.oneshot.run_oneshot` writes trials to the run store.
    ``previous``: the trials a resumed search already has, in order (``strategy`` is then
    an instance restored to match); they count towards ``num_candidates`` and the best.
    The candidates are asked and told in the package's search loop, in memory.
    """
    from nasforge import strategies

    if num_candidates < 1:
        raise NasforgeError(f"num_candidates must be >= 1, got {num_candidates}")
    space = supernet.space
    if isinstance(strategy, str):
        strat = strategies.get(strategy, space=space, seed=seed, **dict(strategy_options or {}))
    else:
        strat = strategy
    from nasforge.run.loop import run_in_memory

    t0 = time.perf_counter()
    keep = _SposTrials(strat, on_ask, on_tell)
    for arch, res in previous:
        keep.add(arch, res)
    run_in_memory(strat, space, estimator, trials=max(0, num_candidates - len(keep.trials)),
                  callbacks=[keep])
    assert keep.best is not None
    return SposSearch(keep.best, keep.best_score, keep.trials, time.perf_counter() - t0)


class _SposTrials(Callback):
    """SPOS's bookkeeping in the search loop: every (arch, result), the best by the
    strategy's score, and the caller's ``on_ask`` / ``on_tell`` hooks with their token."""

    def __init__(self, strategy: Strategy,
                 on_ask: Callable[[Strategy, Suggestion], Any] | None,
                 on_tell: Callable[[Strategy, Suggestion, Result, Any], None] | None) -> None:
        self.strategy, self.on_ask, self.on_tell = strategy, on_ask, on_tell
        self.tokens: dict[int, Any] = {}
        self.trials: list[tuple[Arch, Result]] = []
        self.best: Arch | None = None
        self.best_score = -math.inf

    def add(self, arch: Arch, result: Result) -> None:
        """One more trial (a resumed one, or one just told): kept, and the best updated."""
        self.trials.append((arch, result))
        score = self.strategy.score(result)
        if self.best is None or score > self.best_score:
            self.best, self.best_score = arch, score

    def on_trial_start(self, trial_id: int, suggestion: Suggestion) -> None:
        if self.on_ask is not None:
            self.tokens[trial_id] = self.on_ask(self.strategy, suggestion)

    def on_trial_end(self, trial_id: int, suggestion: Suggestion, result: Result) -> bool | None:
        if self.on_tell is not None:
            self.on_tell(self.strategy, suggestion, result, self.tokens.pop(trial_id, None))
        self.add(suggestion.arch, result)
        return None
