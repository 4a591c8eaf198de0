"""Zero-cost proxies: score an untrained network from (at most) one minibatch.

Definitions follow Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS"
(ICLR 2021) and their code (``foresight``), and Mellor et al., "Neural Architecture
Search without Training" (ICML 2021, v2) for ``naswot``:

==============  ====================================================================
``synflow``     sum over conv/linear weights of ``|theta * dR/dtheta|``, R = sum of the
                outputs for an all-ones input (batch 1) in float64, all parameters
                replaced by their absolute values, batch-norm disabled (identity).
                Needs no data.
``naswot``      log|K| of the ReLU activation-pattern kernel K[i,j] = number of ReLU
                units on which inputs i and j agree (summed over all ReLUs).
``snip``        sum of ``|theta * dL/dtheta|`` (L: cross-entropy of the minibatch).
``grad_norm``   sum over conv/linear layers of the L2 norm of ``dL/dW``.
``fisher``      per output channel ``0.5 * mean_n (sum_hw act * dL/dact)^2``, broadcast
                to the channel's weights (as in foresight) and summed.
``jacob_cov``   ``-sum(log(v + k) + 1/(v + k))``, v the eigenvalues of the correlation
                matrix of the per-sample input gradients of the summed outputs, k=1e-5.
``params``      number of parameters; ``flops``: forward FLOPs of one sample.
==============  ====================================================================

Networks are in train mode (batch statistics in batch-norm), as in the reference, and
every proxy sees the same initial weights (``torch.manual_seed(seed)`` before
``space.build``). Data-dependent proxies use a seeded minibatch of the dataset's
training split; without a dataset they fall back to a fixed standard-normal batch
with random labels (``report["proxy_input_noise"] = 1``).

The estimators that report them (one per proxy, and ``zc-vote``) are in
:mod:`nasforge.estimators.proxies`, which re-exports every name here.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nasforge.errors import NasforgeError

if TYPE_CHECKING:
    import pandas as pd

    from nasforge.data import Dataset
    from nasforge.spaces.base import Arch, SearchSpace

#: proxies that need no minibatch at all
DATA_FREE = ("synflow", "params", "flops")
#: proxies that differentiate the minibatch loss (one backward serves them all)
LOSS_BASED = ("snip", "grad_norm", "fisher")
#: proxies that need a minibatch (inputs, and labels for the loss-based ones)
DATA_DEPENDENT = ("naswot", "snip", "grad_norm", "fisher", "jacob_cov")
#: every proxy, in report order
PROXY_NAMES = ("synflow", "naswot", "snip", "grad_norm", "fisher", "jacob_cov", "params", "flops")
#: proxies whose scores span orders of magnitude: compared on a log scale in ``zc-vote``
LOG_SCALE = frozenset({"synflow", "snip", "grad_norm", "fisher", "params", "flops"})
#: the default members of ``zc-vote`` (chosen on a development sample; see benchmarks/results)
DEFAULT_VOTE = ("naswot", "jacob_cov")
INPUT_SOURCES = ("auto", "data", "noise")


# -- helpers ------------------------------------------------------------------------------
def _weighted_layers(net: nn.Module) -> list[nn.Module]:
    """Conv and linear layers: the layers every foresight proxy sums over."""
    return [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _without_batchnorm(net: nn.Module) -> nn.Module:
    """Replace every batch-norm module by an identity (in place), as synflow's reference does."""
    for name, child in list(net.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(net, name, nn.Identity())
        else:
            _without_batchnorm(child)
    return net


def _zero_grads(net: nn.Module) -> None:
    for p in net.parameters():
        p.grad = None


@contextmanager
def _frozen(net: nn.Module) -> Iterator[None]:
    """Parameters without ``requires_grad`` for a while: backward skips the weight gradients.

    fisher and jacob_cov need gradients of activations or inputs only; skipping the
    weight gradients saves about a third of the backward pass.
    """
    flags = [(p, p.requires_grad) for p in net.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def _channels_last(net: nn.Module, x: torch.Tensor) -> Iterator[torch.Tensor]:
    """Run ``net`` channels-last on image batches, restoring its layout afterwards.

    oneDNN's convolutions forward *and* backward are 1.5-1.7x faster channels-last on a
    CPU core (NB201 C=16 N=5, batch 64: a loss backward 0.63 s -> 0.39 s), which is what
    keeps the gradient proxies within 0.5 s; values agree with the default layout to
    float32 rounding. Non-image inputs pass through unchanged.
    """
    if x.dim() != 4:
        yield x
        return
    net.to(memory_format=torch.channels_last)
    try:
        yield x.contiguous(memory_format=torch.channels_last)
    finally:
        net.to(memory_format=torch.contiguous_format)


def _forward_backward_loss(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, weight_grads: bool = True
) -> None:
    """Cross-entropy of the minibatch and its backward (train mode, as the reference)."""
    net.train()
    _zero_grads(net)
    with _channels_last(net, x) as xc:
        if weight_grads:
            F.cross_entropy(net(xc), y).backward()
            return
        with _frozen(net):
            F.cross_entropy(net(xc.detach().requires_grad_(True)), y).backward()


# -- the proxies ----------------------------------------------------------------------------
def synflow(net: nn.Module, input_shape: Sequence[int]) -> float:
    """SynFlow (Tanaka et al. 2020) as a NAS proxy; data-free, works on a copy of ``net``.

    The copy makes "restore the signs afterwards" automatic: the caller's network is
    never changed. float64 because products of |weights| over ~20 layers overflow float32.
    """
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    work = _without_batchnorm(copy.deepcopy(net)).double()
    with torch.no_grad():
        for t in work.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    _zero_grads(work)
    work.train()
    x = torch.ones((1, *[int(s) for s in input_shape]), dtype=torch.float64, device=device)
    work(x).sum().backward()
    total = torch.zeros((), dtype=torch.float64, device=device)
    for m in _weighted_layers(work):
        if m.weight.grad is not None:
            total += (m.weight * m.weight.grad).abs().sum()
    return float(total.detach())


def naswot(net: nn.Module, x: torch.Tensor) -> float:
    """NASWOT score: log-determinant of the ReLU activation-pattern (Hamming) kernel.

    K[i, j] = sum over ReLU modules of the number of units where samples i and j are
    both active or both inactive (as the reference, a tensor fed to several ReLU modules
    counts once per module). With c = 2*code - 1 in {-1, 1} that number is
    (D + c_i.c_j) / 2: one matrix product per distinct ReLU input instead of two per
    module, which keeps the proxy within budget on a CPU. Forward only, so no
    gradients; channels-last because the kernel ignores the order of units.
    """
    n = x.shape[0]
    kernel = torch.zeros((n, n), dtype=torch.float64)
    # recent (input, its kernel): holding the input keeps its memory from being reused by
    # another tensor while the entry lives, so identity + version is a safe cache key
    recent: list[tuple[torch.Tensor, int, torch.Tensor]] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        a = inputs[0]
        hit = [k for t, version, k in recent if t is a and version == a._version]
        if hit:
            kernel.add_(hit[0])
            return
        c = (a.detach() > 0).reshape(n, -1).to(torch.float32).mul_(2).sub_(1)
        k = ((c @ c.t()).double() + c.shape[1]) / 2
        recent.append((a, a._version, k))
        del recent[:-8]
        kernel.add_(k)

    handles = [m.register_forward_pre_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    fmt = torch.channels_last if x.dim() == 4 else torch.contiguous_format
    try:
        net.train()
        with torch.no_grad():
            net.to(memory_format=fmt)(x.contiguous(memory_format=fmt))
    finally:
        net.to(memory_format=torch.contiguous_format)
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    return float(logdet) if float(sign) > 0 else -math.inf


def loss_proxies(
    net: nn.Module, x: torch.Tensor, y: torch.Tensor, names: Sequence[str] = LOSS_BASED
) -> dict[str, float]:
    """snip, grad_norm and/or fisher from one forward/backward of the minibatch loss.

    They differentiate the same cross-entropy, so computing them together gives the
    same values as one at a time for the price of one backward. Weight gradients are
    skipped when only fisher (which needs activation gradients) is asked for.

    - snip: sum of |theta * dL/dtheta| (= |dL/dmask| of the reference).
    - grad_norm: sum over conv/linear layers of the L2 norm of dL/dW.
    - fisher (Theis et al. 2018): per output channel k of a conv/linear layer,
      0.5 * mean over samples of (sum over positions of activation * gradient)^2,
      broadcast to the channel's weights (times ``weight[k].numel()``) and summed,
      exactly what foresight's per-weight sum yields.
    """
    names = [n for n in names if n in LOSS_BASED]
    per_layer: dict[nn.Module, torch.Tensor] = {}

    def fwd_hook(module: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        act = out.detach()

        def grad_hook(grad: torch.Tensor) -> None:
            g = grad.detach()
            g_nk = (act * g).sum(dim=tuple(range(2, act.dim()))) if act.dim() > 2 else act * g
            del_k = g_nk.pow(2).mean(0).mul(0.5)
            per_layer[module] = per_layer[module] + del_k if module in per_layer else del_k

        if out.requires_grad:
            out.register_hook(grad_hook)

    layers = _weighted_layers(net)
    handles = [m.register_forward_hook(fwd_hook) for m in layers] if "fisher" in names else []
    try:
        _forward_backward_loss(net, x, y, weight_grads=bool(set(names) - {"fisher"}))
    finally:
        for h in handles:
            h.remove()
    out: dict[str, float] = {}
    with torch.no_grad():
        if "snip" in names:
            out["snip"] = sum(
                float((m.weight * m.weight.grad).abs().sum())
                for m in layers
                if m.weight.grad is not None
            )
        if "grad_norm" in names:
            out["grad_norm"] = sum(
                float(m.weight.grad.norm()) for m in layers if m.weight.grad is not None
            )
        if "fisher" in names:
            out["fisher"] = sum(
                float(per_layer[m].abs().sum()) * math.prod(m.weight.shape[1:])
                for m in layers
                if m in per_layer
            )
    _zero_grads(net)
    return {n: out[n] for n in names}


def snip(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """SNIP connection sensitivity (Lee et al. 2019); see :func:`loss_proxies`."""
    return loss_proxies(net, x, y, ["snip"])["snip"]


def grad_norm(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum of per-layer weight-gradient norms of the loss; see :func:`loss_proxies`."""
    return loss_proxies(net, x, y, ["grad_norm"])["grad_norm"]


def fisher(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fisher channel saliency summed over channels as foresight does; see :func:`loss_proxies`."""
    return loss_proxies(net, x, y, ["fisher"])["fisher"]


def jacob_cov(net: nn.Module, x: torch.Tensor) -> float:
    """Jacobian covariance (Mellor et al. v1): how decorrelated the input gradients are."""
    net.train()
    _zero_grads(net)
    with _channels_last(net, x) as xc, _frozen(net):
        xg = xc.detach().clone().requires_grad_(True)
        out = net(xg)
        out.backward(torch.ones_like(out))
    assert xg.grad is not None
    # back to the default layout so the rows are the per-sample Jacobians in NCHW order
    jac = xg.grad.detach().contiguous().reshape(x.shape[0], -1).double().cpu().numpy()
    _zero_grads(net)
    with np.errstate(all="ignore"):
        corr = np.corrcoef(jac)
    if not np.all(np.isfinite(corr)):  # a constant gradient row (e.g. the net ignores its input)
        return -math.inf
    v = np.linalg.eigvalsh(corr)
    k = 1e-5
    return float(-np.sum(np.log(v + k) + 1.0 / (v + k)))


def params(net: nn.Module) -> float:
    from nasforge.metrics import count_params

    return float(count_params(net))


def flops(net: nn.Module, input_shape: Sequence[int]) -> float:
    from nasforge.metrics import count_flops

    return float(count_flops(net, input_shape))


def compute_proxy(
    name: str,
    net: nn.Module,
    x: torch.Tensor | None,
    y: torch.Tensor | None,
    input_shape: Sequence[int],
) -> float:
    """One proxy of ``net`` by name; ``x``/``y``: the minibatch (data-free proxies ignore it)."""
    if name == "synflow":
        return synflow(net, input_shape)
    if name == "params":
        return params(net)
    if name == "flops":
        return flops(net, input_shape)
    if name not in DATA_DEPENDENT:
        raise NasforgeError(f"unknown proxy {name!r}; proxies are {', '.join(PROXY_NAMES)}")
    if x is None or y is None:
        raise NasforgeError(f"proxy {name!r} needs a minibatch (inputs and labels)")
    if name == "naswot":
        return naswot(net, x)
    if name == "jacob_cov":
        return jacob_cov(net, x)
    fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], float] = {
        "snip": snip, "grad_norm": grad_norm, "fisher": fisher
    }[name]  # fmt: skip
    return fn(net, x, y)


def compute_proxies(
    names: Sequence[str],
    net: nn.Module,
    x: torch.Tensor | None,
    y: torch.Tensor | None,
    input_shape: Sequence[int],
) -> dict[str, float]:
    """Several proxies of one network; the loss-based ones share a single backward."""
    out: dict[str, float] = {}
    shared = [n for n in names if n in LOSS_BASED]
    if len(shared) > 1:
        if x is None or y is None:
            raise NasforgeError(f"proxies {shared} need a minibatch (inputs and labels)")
        out.update(loss_proxies(net, x, y, shared))
    for n in names:
        if n not in out:
            out[n] = compute_proxy(n, net, x, y, input_shape)
    return {n: out[n] for n in names}


def check_proxies(names: Sequence[str]) -> list[str]:
    """Validate proxy names (user input) and return them as a list."""
    out = [str(n).strip() for n in names if str(n).strip()]
    bad = [n for n in out if n not in PROXY_NAMES]
    if bad:
        raise NasforgeError(f"unknown proxy name(s) {bad}; proxies are {', '.join(PROXY_NAMES)}")
    if not out:
        raise NasforgeError(f"no proxies given; choose from {', '.join(PROXY_NAMES)}")
    return out


def minibatch(
    data: Dataset | None,
    batch_size: int,
    seed: int,
    input_shape: Sequence[int],
    num_classes: int,
    source: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """A seeded minibatch ``(x, y, is_noise)``: training images if ``data`` is given, else noise.

    The noise fallback is a fixed standard-normal batch (inputs are normalized, so
    N(0, 1) has the right scale) with uniformly random labels.
    """
    if source not in INPUT_SOURCES:
        raise NasforgeError(f"inputs must be one of {', '.join(INPUT_SOURCES)}, not {source!r}")
    if source == "data" and data is None:
        raise NasforgeError("inputs='data' needs a dataset; pass one, or use inputs='noise'")
    rng = np.random.default_rng(seed)
    if data is not None and source != "noise":
        n = len(data.x_train)
        if n == 0:
            raise NasforgeError(f"dataset {data.name!r} has an empty training split")
        idx = rng.choice(n, size=min(batch_size, n), replace=False)
        x = torch.as_tensor(np.ascontiguousarray(data.x_train[idx]), dtype=torch.float32)
        y = torch.as_tensor(np.asarray(data.y_train[idx]), dtype=torch.long)
        return x, y, False
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    x = torch.randn((batch_size, *[int(s) for s in input_shape]), generator=g)
    y = torch.randint(0, max(1, num_classes), (batch_size,), generator=g)
    return x, y, True


def build_network(
    arch: Arch,
    space: SearchSpace,
    input_shape: Sequence[int],
    num_classes: int,
    seed: int,
    device: str = "cpu",
) -> nn.Module:
    """``space.build`` with torch seeded first, so a proxy is deterministic for a seed."""
    torch.manual_seed(seed)
    return space.build(arch, tuple(int(s) for s in input_shape), int(num_classes)).to(device)

# -- combining proxies ------------------------------------------------------------------------
def transform(name: str, value: float) -> float:
    """The scale on which proxies are combined: log for multiplicative scores, else as is."""
    if name in LOG_SCALE:
        return math.log(value) if value > 0 else -math.inf
    return value


def rank_vote(scores: pd.DataFrame, proxies: Sequence[str] | None = None) -> pd.Series:
    """Mean per-proxy rank (1 = worst) over a pool: the exact rank combination.

    ``scores`` has one row per architecture and one column per proxy. Ties get their
    average rank; -inf (a degenerate network) ranks lowest.
    """
    cols = list(proxies) if proxies is not None else list(scores.columns)
    missing = [c for c in cols if c not in scores.columns]
    if missing:
        raise NasforgeError(f"rank_vote: no column(s) {missing} in the scores")
    ranks = scores[cols].astype(float).fillna(-np.inf).rank(method="average")
    return ranks.mean(axis=1).rename("rank_vote")
