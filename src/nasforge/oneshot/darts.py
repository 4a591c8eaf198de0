"""Gradient-based search on the NAS-Bench-201 cell: DARTS (1st/2nd order) and GDAS.

Both relax the choice of op per edge with architecture logits ``alpha`` (6 edges x 5
ops) and alternate two updates (the bilevel problem): ``alpha`` with Adam on a
*validation* batch, the shared weights with SGD on a *training* batch.

- **DARTS** (Liu et al. 2019): every edge outputs ``sum_o softmax(alpha)_o * o(x)``.
  First order takes ``d L_val / d alpha`` at the current weights. Second order takes it
  at the weights after one virtual SGD step, ``w' = w - xi * dL_train/dw`` (momentum and
  weight decay included, as the DARTS code does), which needs a Hessian-vector product;
  it is approximated by central finite differences,
  ``(dL_train(w+)/dalpha - dL_train(w-)/dalpha) / (2 eps)`` with
  ``w+- = w +- eps * dL_val(w')/dw'`` and ``eps = 0.01 / ||dL_val(w')/dw'||``.
- **GDAS** (Dong & Yang 2019): each forward samples one op per edge with Gumbel-softmax
  at temperature ``tau`` (annealed linearly from ``tau_max`` to ``tau_min``); the forward
  is hard (one-hot, only the sampled op runs) and the backward uses the soft
  probabilities (straight-through).

**Deriving the architecture** follows NAS-Bench-201's own DARTS/GDAS baselines
(``genotype()`` of its search models): the argmax of ``alpha`` per edge over *all five*
ops, ``none`` included. (Dropping ``none`` is available with ``exclude_none=True``.)

**Collapse**: DARTS on NAS-Bench-201 is known to converge to cells of parameter-free
ops, mostly ``skip_connect``. :func:`skip_dominance` measures it each epoch (fraction of
edges whose argmax is ``skip_connect``, and the mean softmax weight of skip), and two
mitigations are offered: ``"early-stop"`` (DARTS+-style: stop once the skip fraction
reaches ``skip_threshold`` and keep the architecture of the last epoch below it) and
``"darts-minus"`` (DARTS-: an auxiliary skip ``beta * x`` on every edge with ``beta``
decaying linearly from 1 to 0, which takes over the "gradient highway" role that
otherwise makes the learned skip weights win) and ``"beta-decay"`` (beta-DARTS, Ye et al.
2022: the architecture loss gets ``lambda * mean over edges of logsumexp(alpha_e)``, whose
gradient ``lambda * softmax(alpha_e) / n_edges`` pulls every edge's largest weights down
hardest, so the softmax stays flat enough that no op, skip included, runs away on the
strength of its early gradient highway; ``lambda`` ramps up linearly from 0 to
``beta_decay_weight`` over the search, as in the paper's schedule).

**Resuming**: with ``checkpoint=``, :func:`darts_search` writes (atomically, see
:mod:`~nasforge.oneshot.checkpoint`) everything the next epoch depends on at every epoch
end: weights and ``alpha``, both optimizers' states, the step (the cosine schedule's and
DARTS-'s position), the torch, Gumbel and numpy generator states, the collapse
detector's state and the history. ``resume=True`` continues from it exactly as the
uninterrupted search would have (GDAS's temperature is a function of the epoch).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nasforge.data import stratified_subset
from nasforge.errors import NasforgeError, RunDirError
from nasforge.oneshot.checkpoint import (
    damaged,
    load_checkpoint,
    load_optimizer,
    optimizer_tensors,
    save_checkpoint,
)
from nasforge.oneshot.supernet import NUM_EDGES, NUM_OPS, GumbelPath, Supernet, path_indices
from nasforge.spaces.base import Arch
from nasforge.spaces.nb201 import OP_NAMES, NB201Space

if TYPE_CHECKING:
    from nasforge.data import Dataset

METHODS = ("darts", "gdas")
MITIGATIONS = ("early-stop", "darts-minus", "beta-decay")
SKIP = OP_NAMES.index("skip_connect")
NONE = OP_NAMES.index("none")


class DartsSupernet(Supernet):
    """The NB201 supernet plus architecture logits ``alpha`` (6 x 5), for DARTS and GDAS.

    Cells use ``affine=False, track_running_stats=False`` BN, as NAS-Bench-201's search
    models do: BN scales would otherwise absorb (and blur) the op weights.
    """

    def __init__(
        self,
        space: NB201Space,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        alpha_init_std: float = 1e-3,
    ) -> None:
        super().__init__(space, input_shape, num_classes, affine=False, track_running_stats=False)
        self.alpha = nn.Parameter(alpha_init_std * torch.randn(NUM_EDGES, NUM_OPS))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n != "alpha"]

    def forward(self, x: torch.Tensor, path: Any = None, aux_skip: float = 0.0) -> torch.Tensor:
        """``path=None``: the DARTS mixture ``softmax(alpha)``; else as :class:`Supernet`."""
        if path is None:
            path = F.softmax(self.alpha, dim=-1)
        return super().forward(x, path, aux_skip)

    def gumbel_sample(self, tau: float, generator: torch.Generator | None = None) -> GumbelPath:
        """A GDAS sample: hard one-hot forward, soft Gumbel-softmax gradient."""
        return gumbel_path(self.alpha, tau, generator)

    def derive(self, exclude_none: bool = False) -> Arch:
        return derive_arch(self.space, self.alpha, exclude_none)


def gumbel_path(
    alpha: torch.Tensor, tau: float, generator: torch.Generator | None = None
) -> GumbelPath:
    """Gumbel-softmax over ops per edge with the hard straight-through trick (GDAS)."""
    logp = F.log_softmax(alpha, dim=-1)
    probs = None
    for _ in range(100):  # resample the (rare) draws that overflow, as GDAS does
        e = torch.empty(alpha.shape).exponential_(generator=generator).to(alpha.device)
        cand = F.softmax((logp - e.log()) / tau, dim=-1)  # -log(Exp(1)) ~ Gumbel(0, 1)
        if torch.isfinite(cand).all():
            probs = cand
            break
    if probs is None:
        raise FloatingPointError("Gumbel-softmax gave non-finite probabilities (alpha diverged?)")
    index = probs.argmax(dim=-1)
    one_hot = torch.zeros_like(probs).scatter_(-1, index[:, None], 1.0)
    hard = one_hot - probs.detach() + probs
    return GumbelPath(hard, tuple(int(i) for i in index))


def derive_arch(space: NB201Space, alpha: torch.Tensor, exclude_none: bool = False) -> Arch:
    """Argmax op per edge (NB201 convention: over all ops, ``none`` included by default)."""
    a = alpha.detach().float().cpu().clone()
    if exclude_none:
        a[:, NONE] = -math.inf
    return space.make([OP_NAMES[int(i)] for i in a.argmax(dim=-1)])


def skip_dominance(alpha: torch.Tensor) -> dict[str, float]:
    """How much ``skip_connect`` dominates: argmax fraction and mean softmax weight."""
    a = alpha.detach().float().cpu()
    p = F.softmax(a, dim=-1)
    return {
        "skip_fraction": float((a.argmax(dim=-1) == SKIP).float().mean()),
        "skip_weight": float(p[:, SKIP].mean()),
        "param_free_fraction": float(
            torch.isin(a.argmax(dim=-1), torch.tensor([NONE, SKIP, OP_NAMES.index("avg_pool_3x3")]))
            .float()
            .mean()
        ),
    }


class CollapseDetector:
    """Fires once skip dominance reaches ``threshold`` (DARTS+-style early stopping).

    ``metric`` is ``"skip_fraction"`` (default; 0.5 = three of the six edges pick skip,
    analogous to DARTS+'s "two or more skips in an 8-edge normal cell") or
    ``"skip_weight"``.
    """

    def __init__(self, threshold: float = 0.5, metric: str = "skip_fraction") -> None:
        if metric not in ("skip_fraction", "skip_weight"):
            raise NasforgeError(f"metric must be 'skip_fraction' or 'skip_weight', not {metric!r}")
        if not 0.0 < threshold <= 1.0:
            raise NasforgeError(f"skip threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.metric = metric
        self.fired_at: int | None = None
        self.history: list[float] = []

    def update(self, alpha: torch.Tensor, epoch: int | None = None) -> bool:
        """Record this epoch's dominance; True when it reaches the threshold."""
        v = skip_dominance(alpha)[self.metric]
        self.history.append(v)
        fired = v >= self.threshold
        if fired and self.fired_at is None:
            self.fired_at = epoch if epoch is not None else len(self.history)
        return fired

    def state_dict(self) -> dict[str, Any]:
        """What a resumed search needs to fire (and roll back) as the uninterrupted one."""
        return {"fired_at": self.fired_at, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        fired = state["fired_at"]
        self.fired_at = None if fired is None else int(fired)
        self.history = [float(v) for v in state["history"]]


@dataclass
class GradientSearch:
    """Outcome of :func:`darts_search`: the derived arch and the per-epoch history."""

    arch: Arch
    method: str
    order: int
    history: list[dict[str, Any]] = field(default_factory=list)
    alpha: list[list[float]] = field(default_factory=list)
    stopped_early: bool = False
    collapse_epoch: int | None = None
    search_time_s: float = 0.0


def _sgd_virtual_step(
    params: list[nn.Parameter],
    grads: Sequence[torch.Tensor],
    opt: torch.optim.SGD,
    xi: float,
) -> None:
    """``w <- w - xi * (momentum * buf + g + wd * w)``: the DARTS unrolled step, in place."""
    group = opt.param_groups[0]
    mom, wd = group["momentum"], group["weight_decay"]
    with torch.no_grad():
        for p, g in zip(params, grads, strict=True):
            step = g + wd * p
            buf = opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None and mom:
                step = step + mom * buf
            p.sub_(xi * step)


def second_order_alpha_grad(
    model: DartsSupernet,
    opt_w: torch.optim.SGD,
    xt: torch.Tensor,
    yt: torch.Tensor,
    xv: torch.Tensor,
    yv: torch.Tensor,
    xi: float,
    aux_skip: float = 0.0,
    fd_radius: float = 0.01,
) -> tuple[torch.Tensor, float]:
    """DARTS' second-order ``dL_val(w - xi dL_train/dw, alpha)/dalpha`` (see module docstring).

    The Hessian-vector product is a central difference with perturbation norm
    ``fd_radius`` (DARTS: 0.01). The weights are modified in place and restored exactly.
    Returns the gradient and the validation loss at the virtual weights.
    """
    ws = model.weight_parameters()
    backup = [p.detach().clone() for p in ws]

    def train_loss() -> torch.Tensor:
        return F.cross_entropy(model(xt, None, aux_skip), yt)

    try:
        g_train = torch.autograd.grad(train_loss(), ws, allow_unused=True)
        g_train = [
            torch.zeros_like(p) if g is None else g for p, g in zip(ws, g_train, strict=True)
        ]
        _sgd_virtual_step(ws, g_train, opt_w, xi)
        lv = F.cross_entropy(model(xv, None, aux_skip), yv)
        grads = torch.autograd.grad(lv, [model.alpha, *ws], allow_unused=True)
        d_alpha = grads[0]
        d_w = [torch.zeros_like(p) if g is None else g for p, g in zip(ws, grads[1:], strict=True)]
        norm = torch.sqrt(sum((g * g).sum() for g in d_w))  # type: ignore[arg-type]
        eps = fd_radius / float(norm.clamp_min(1e-12))
        with torch.no_grad():
            for p, b, g in zip(ws, backup, d_w, strict=True):
                p.copy_(b + eps * g)
        g_plus = torch.autograd.grad(train_loss(), model.alpha)[0]
        with torch.no_grad():
            for p, b, g in zip(ws, backup, d_w, strict=True):
                p.copy_(b - eps * g)
        g_minus = torch.autograd.grad(train_loss(), model.alpha)[0]
        hvp = (g_plus - g_minus) / (2 * eps)
        return d_alpha - xi * hvp, float(lv.detach())
    finally:
        with torch.no_grad():
            for p, b in zip(ws, backup, strict=True):
                p.copy_(b)


@torch.no_grad()
def _evaluate(
    model: DartsSupernet,
    path: Any,
    x: torch.Tensor,
    y: torch.Tensor,
    aux_skip: float = 0.0,
    bs: int = 256,
) -> float:
    was = model.training
    model.eval()
    correct = 0
    try:
        for i in range(0, len(y), bs):
            out = model(x[i : i + bs], path, aux_skip)
            correct += int((out.argmax(1) == y[i : i + bs]).sum())
    finally:
        model.train(was)
    return correct / max(1, len(y))


def darts_search(
    space: NB201Space,
    data: Dataset,
    *,
    method: str = "darts",
    order: int = 1,
    epochs: int = 10,
    batch_size: int = 64,
    w_lr: float = 0.025,
    w_lr_min: float = 0.001,
    w_momentum: float = 0.9,
    w_weight_decay: float = 5e-4,
    alpha_lr: float = 3e-4,
    alpha_weight_decay: float = 1e-3,
    grad_clip: float | None = 5.0,
    tau_max: float = 10.0,
    tau_min: float = 0.1,
    mitigation: str | None = None,
    skip_threshold: float = 0.5,
    beta_decay_weight: float = 5.0,
    exclude_none: bool = False,
    data_fraction: float = 1.0,
    max_val_eval: int | None = 1000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    deadline: float | None = None,
    on_epoch: Callable[[int, dict[str, Any]], Any] | None = None,
    model: DartsSupernet | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
) -> GradientSearch:
    """Run DARTS (``order`` 1 or 2) or GDAS on ``data`` and derive the architecture.

    Weights train on the training split (SGD, cosine from ``w_lr`` to ``w_lr_min``),
    ``alpha`` on the validation split (Adam, betas (0.5, 0.999), as in DARTS and
    NAS-Bench-201). ``on_epoch(epoch, record)`` gets each epoch's record: ``alpha``,
    its softmax, skip dominance, the derived arch, the mean losses, the supernet's
    validation accuracy (``supernet_val_accuracy``: the mixture for DARTS, with the
    DARTS- auxiliary skip at its current weight, the argmax path for GDAS) and the
    derived arch's accuracy with the shared weights (``derived_val_accuracy``), on at
    most ``max_val_eval`` validation examples.

    ``checkpoint``: a file written atomically at every epoch end (before ``on_epoch``, so
    a kill inside it loses nothing). With ``resume=True`` an existing one is loaded and
    the search continues with the next epoch exactly as the uninterrupted one would
    have; ``on_epoch`` is first called again, in order, for every epoch the checkpoint
    holds, so a caller that stores records must skip those it already has (a kill can
    land between the checkpoint and the store). A finished search just returns.
    """
    if method not in METHODS:
        raise NasforgeError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if order not in (1, 2):
        raise NasforgeError(f"order must be 1 or 2, not {order!r}")
    if method == "gdas" and order != 1:
        raise NasforgeError("GDAS is first-order only; use order=1 (or method='darts' for order 2)")
    if mitigation in ("none", ""):
        mitigation = None
    if mitigation is not None and mitigation not in MITIGATIONS:
        raise NasforgeError(
            f"mitigation must be one of {', '.join(MITIGATIONS)} or None, not {mitigation!r}"
        )
    if epochs < 1:
        raise NasforgeError(f"epochs must be >= 1, got {epochs}")
    if not 0.0 < data_fraction <= 1.0:
        raise NasforgeError(f"data_fraction must be in (0, 1], got {data_fraction}")
    if not (math.isfinite(beta_decay_weight) and beta_decay_weight >= 0):
        raise NasforgeError(f"beta_decay_weight must be >= 0, got {beta_decay_weight!r}")
    if len(data.y_val) < 2:
        raise NasforgeError("bilevel search needs a validation split of at least 2 examples")

    dev = torch.device(device)
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    rng = np.random.default_rng([seed, 21])
    if model is None:
        model = DartsSupernet(space, data.input_shape, data.num_classes)
    model.to(dev).train()

    ti = stratified_subset(data.y_train, data_fraction, seed)
    xt_all = torch.from_numpy(np.ascontiguousarray(data.x_train[ti])).float().to(dev)
    yt_all = torch.from_numpy(np.ascontiguousarray(data.y_train[ti])).long().to(dev)
    xv_all = torch.from_numpy(np.ascontiguousarray(data.x_val)).float().to(dev)
    yv_all = torch.from_numpy(np.ascontiguousarray(data.y_val)).long().to(dev)
    ev = np.arange(len(yv_all))
    if max_val_eval is not None and max_val_eval < len(ev):
        ev = stratified_subset(data.y_val, max_val_eval / len(ev), seed)
    xv_eval, yv_eval = xv_all[torch.from_numpy(ev).to(dev)], yv_all[torch.from_numpy(ev).to(dev)]

    n = len(yt_all)
    bs = min(batch_size, n, len(yv_all))
    n_used = n - 1 if n % bs == 1 and n > 1 else n
    steps_per_epoch = max(1, math.ceil(n_used / bs))
    total_steps = epochs * steps_per_epoch

    w_params = model.weight_parameters()
    opt_w = torch.optim.SGD(w_params, lr=w_lr, momentum=w_momentum, weight_decay=w_weight_decay)
    opt_a = torch.optim.Adam(
        model.arch_parameters(), lr=alpha_lr, betas=(0.5, 0.999), weight_decay=alpha_weight_decay
    )
    detector = CollapseDetector(skip_threshold)
    # what a checkpoint must agree with to be continued (another search is refused)
    recipe = {"method": method, "order": order, "epochs": epochs, "n": n, "n_val": len(yv_all),
              "n_used": n_used, "batch_size": bs, "w_lr": w_lr, "w_lr_min": w_lr_min,
              "w_momentum": w_momentum, "w_weight_decay": w_weight_decay, "alpha_lr": alpha_lr,
              "alpha_weight_decay": alpha_weight_decay, "grad_clip": grad_clip,
              "tau_max": tau_max, "tau_min": tau_min, "mitigation": mitigation,
              "skip_threshold": skip_threshold, "exclude_none": exclude_none,
              "data_fraction": data_fraction, "max_val_eval": max_val_eval, "seed": seed}
    if mitigation == "beta-decay":  # only then: older checkpoints stay continuable
        recipe["beta_decay_weight"] = beta_decay_weight
    history: list[dict[str, Any]] = []
    last_ok: Arch | None = None
    stopped = False
    step = 0
    first_epoch = 1
    ckpt = None if checkpoint is None else Path(checkpoint)
    if resume and ckpt is not None and ckpt.exists():
        st = _load_search(ckpt, model, opt_w, opt_a, gen, recipe)
        rng.bit_generator.state = st["numpy_rng"]
        detector.load_state_dict(st["detector"])
        history, step, stopped = st["history"], st["step"], st["stopped"]
        last_ok = None if st["last_ok"] is None else space.parse(st["last_ok"])
        first_epoch = len(history) + 1 if not stopped else epochs + 1
        t0 -= st["search_time_s"]
        if on_epoch is not None:  # the caller's records may lag behind the checkpoint
            for rec in history:
                on_epoch(int(rec["epoch"]), dict(rec))

    def save(epoch: int, tau: float, finished: bool) -> None:
        """The checkpoint of ``epoch``'s end: all the next epoch depends on."""
        if ckpt is None:
            return
        tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
        w_tensors, w_plain = optimizer_tensors(opt_w, "opt_w")
        a_tensors, a_plain = optimizer_tensors(opt_a, "opt_a")
        tensors.update(w_tensors)
        tensors.update(a_tensors)
        tensors["torch_rng"] = torch.get_rng_state()
        tensors["gumbel_rng"] = gen.get_state()
        save_checkpoint(ckpt, tensors, {
            "recipe": recipe, "epoch": epoch, "step": step, "tau": tau,
            "numpy_rng": rng.bit_generator.state, "opt_w": w_plain, "opt_a": a_plain,
            "detector": detector.state_dict(), "history": history,
            "last_ok": None if last_ok is None else last_ok.text, "stopped": finished,
            "search_time_s": time.perf_counter() - t0, "done": finished or epoch >= epochs,
        })

    for epoch in range(first_epoch, epochs + 1):
        te = time.perf_counter()
        tau = tau_max - (tau_max - tau_min) * (epoch - 1) / max(1, epochs - 1)
        perm = torch.from_numpy(rng.permutation(n)[:n_used]).to(dev)
        vperm = torch.from_numpy(rng.permutation(len(yv_all))).to(dev)
        vpos = 0
        sums = {"train_loss": 0.0, "val_loss": 0.0}
        count = 0
        for i in range(0, n_used, bs):
            if deadline is not None and time.monotonic() > deadline:
                stopped = True
                break
            b = perm[i : i + bs]
            if len(b) < 2:
                continue
            if vpos + bs > len(vperm):
                vperm = torch.from_numpy(rng.permutation(len(yv_all))).to(dev)
                vpos = 0
            vb = vperm[vpos : vpos + bs]
            vpos += bs
            xt, yt, xv, yv = xt_all[b], yt_all[b], xv_all[vb], yv_all[vb]
            lr = w_lr_min + 0.5 * (w_lr - w_lr_min) * (1 + math.cos(math.pi * step / total_steps))
            for g in opt_w.param_groups:
                g["lr"] = lr
            beta = 1.0 - step / total_steps if mitigation == "darts-minus" else 0.0

            # -- architecture step (validation batch)
            opt_a.zero_grad(set_to_none=True)
            if method == "gdas":
                lv = F.cross_entropy(model(xv, model.gumbel_sample(tau, gen)), yv)
                (g_alpha,) = torch.autograd.grad(lv, [model.alpha])
                model.alpha.grad = g_alpha
                lv_f = float(lv.detach())
            elif order == 1:
                lv = F.cross_entropy(model(xv, None, beta), yv)
                (g_alpha,) = torch.autograd.grad(lv, [model.alpha])
                model.alpha.grad = g_alpha
                lv_f = float(lv.detach())
            else:
                g_alpha, lv_f = second_order_alpha_grad(model, opt_w, xt, yt, xv, yv, lr, beta)
                model.alpha.grad = g_alpha
            if mitigation == "beta-decay":  # d/dalpha of lambda * mean_e logsumexp(alpha_e)
                lam = beta_decay_weight * step / max(1, total_steps - 1)
                with torch.no_grad():
                    model.alpha.grad = model.alpha.grad + lam * F.softmax(
                        model.alpha, -1) / model.alpha.shape[0]
            opt_a.step()

            # -- weight step (training batch)
            opt_w.zero_grad(set_to_none=True)
            path = model.gumbel_sample(tau, gen) if method == "gdas" else None
            lt = F.cross_entropy(model(xt, path, beta), yt)
            if not torch.isfinite(lt):
                raise FloatingPointError(f"{method} diverged at epoch {epoch} (w_lr {w_lr:g})")
            lt.backward()
            model.alpha.grad = None  # alpha moves only in its own step
            if grad_clip:
                nn.utils.clip_grad_norm_(w_params, grad_clip)
            opt_w.step()
            sums["train_loss"] += float(lt.detach())
            sums["val_loss"] += lv_f
            count += 1
            step += 1
        if count == 0:
            break
        arch = derive_arch(space, model.alpha, exclude_none)
        dom = skip_dominance(model.alpha)
        fired = detector.update(model.alpha, epoch)
        mix = None if method == "darts" else tuple(int(i) for i in model.alpha.argmax(-1))
        beta_now = 1.0 - step / total_steps if mitigation == "darts-minus" else 0.0
        rec: dict[str, Any] = {
            "epoch": epoch,
            "arch": arch.text,
            "train_loss": sums["train_loss"] / count,
            "val_loss": sums["val_loss"] / count,
            "supernet_val_accuracy": _evaluate(model, mix, xv_eval, yv_eval, beta_now),
            "derived_val_accuracy": _evaluate(model, path_indices(arch), xv_eval, yv_eval),
            **dom,
            "collapsed": fired,
            "alpha": model.alpha.detach().cpu().tolist(),
            "softmax": F.softmax(model.alpha.detach(), -1).cpu().tolist(),
            "tau": tau if method == "gdas" else None,
            "aux_skip_beta": beta_now if mitigation == "darts-minus" else None,
            "time_s": time.perf_counter() - te,
        }
        history.append(rec)
        collapsed = mitigation == "early-stop" and fired
        if not collapsed:
            last_ok = arch
        if not stopped:  # a partial epoch (deadline) is not a point to continue from
            save(epoch, tau, collapsed)
        if on_epoch is not None:
            on_epoch(epoch, dict(rec))
        if collapsed or stopped:
            stopped = True
            break
    if not history:
        raise NasforgeError("the search ran no step (deadline already passed?)")
    final = space.parse(history[-1]["arch"])
    if mitigation == "early-stop" and detector.fired_at is not None and last_ok is not None:
        final = last_ok  # roll back to the last epoch before skip took over
    return GradientSearch(
        arch=final,
        method=method,
        order=order,
        history=history,
        alpha=model.alpha.detach().cpu().tolist(),
        stopped_early=stopped,
        collapse_epoch=detector.fired_at,
        search_time_s=time.perf_counter() - t0,
    )


def _load_search(path: Path, model: DartsSupernet, opt_w: torch.optim.Optimizer,
                 opt_a: torch.optim.Optimizer, gen: torch.Generator,
                 recipe: dict[str, Any]) -> dict[str, Any]:
    """Load a search checkpoint into the model, both optimizers and the Gumbel generator
    (and the global torch RNG); its plain values, every one checked (the file is
    untrusted)."""
    tensors, st = load_checkpoint(path)
    got = st.get("recipe")
    if got != json.loads(json.dumps(recipe)):
        diff = ([f"{k}: checkpoint {got.get(k)!r} != now {v!r}" for k, v in recipe.items()
                 if got.get(k) != v] if isinstance(got, dict) else ["no recipe"])
        raise RunDirError(f"the supernet checkpoint {path} is of another search "
                          f"({'; '.join(diff)[:300]}); delete it or choose another --out")
    try:
        weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
        model.load_state_dict(weights, strict=True)
        load_optimizer(opt_w, tensors, st["opt_w"], "opt_w")
        load_optimizer(opt_a, tensors, st["opt_a"], "opt_a")
        torch_rng, gumbel_rng = tensors["torch_rng"], tensors["gumbel_rng"]
        history = [dict(r) for r in st["history"]]
        out = {
            "epoch": int(st["epoch"]), "step": int(st["step"]), "stopped": bool(st["stopped"]),
            "numpy_rng": dict(st["numpy_rng"]), "detector": dict(st["detector"]),
            "history": history, "last_ok": st["last_ok"],
            "search_time_s": float(st["search_time_s"]),
        }
        if not 1 <= out["epoch"] <= recipe["epochs"] or len(history) != out["epoch"]:
            raise ValueError(f"epoch {out['epoch']} with {len(history)} records")
        if [int(r["epoch"]) for r in history] != list(range(1, out["epoch"] + 1)):
            raise ValueError("the history's epochs are not 1..epoch")
        if out["last_ok"] is not None and not isinstance(out["last_ok"], str):
            raise ValueError("last_ok is not an architecture string")
        CollapseDetector().load_state_dict(out["detector"])  # a valid state?
        np.random.default_rng().bit_generator.state = out["numpy_rng"]
        torch.set_rng_state(torch_rng)
        gen.set_state(gumbel_rng)
    except RunDirError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever is wrong, the file is
        raise damaged(path, f"{type(e).__name__}: {str(e)[:120]}") from None
    return out
