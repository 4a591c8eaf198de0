"""Zero-cost proxy estimators: one per proxy, and ``zc-vote`` combining several.

The score functions (definitions, references) are in
:mod:`nasforge.estimators.proxy_scores`; every name there is re-exported here, so
``nasforge.estimators.proxies.synflow`` and the rest keep working. Data-dependent
proxies use a seeded minibatch of the training split, or a fixed noise batch
without a dataset (``report["proxy_input_noise"] = 1``).

``zc-vote`` combines several proxies for *one* architecture. A rank vote needs a
pool, so each score is ranked against a calibration pool of random architectures of
the same space (its mid-rank percentile), and the percentiles are averaged; over a
pool, :func:`rank_vote` (mean of per-proxy ranks) is the same combination.
``method="zscore"`` averages z-scores (log scale for multiplicative proxies) instead.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nasforge.errors import NasforgeError
from nasforge.estimators import register
from nasforge.estimators.base import Estimator, Result
from nasforge.estimators.proxy_scores import (
    DATA_DEPENDENT,
    DATA_FREE,
    DEFAULT_VOTE,
    INPUT_SOURCES,
    LOG_SCALE,
    LOSS_BASED,
    PROXY_NAMES,
    build_network,
    check_proxies,
    compute_proxies,
    compute_proxy,
    fisher,
    flops,
    grad_norm,
    jacob_cov,
    loss_proxies,
    minibatch,
    naswot,
    params,
    rank_vote,
    snip,
    synflow,
    transform,
)
from nasforge.estimators.proxy_scores import _channels_last as _channels_last
from nasforge.estimators.proxy_scores import _forward_backward_loss as _forward_backward_loss
from nasforge.estimators.proxy_scores import _frozen as _frozen
from nasforge.estimators.proxy_scores import _weighted_layers as _weighted_layers
from nasforge.estimators.proxy_scores import _without_batchnorm as _without_batchnorm
from nasforge.estimators.proxy_scores import _zero_grads as _zero_grads

if TYPE_CHECKING:
    from nasforge.data import Dataset
    from nasforge.spaces.base import Arch, SearchSpace

#: public names, the score functions' (from :mod:`nasforge.estimators.proxy_scores`) included
__all__ = [
    "DATA_DEPENDENT", "DATA_FREE", "DEFAULT_VOTE", "INPUT_SOURCES", "LOG_SCALE", "LOSS_BASED",
    "PROXY_NAMES", "FisherProxy", "FlopsProxy", "GradNormProxy", "JacobCovProxy",
    "NaswotProxy", "ParamsProxy", "SnipProxy", "SynflowProxy", "ZeroCostProxy",
    "ZeroCostVote", "build_network", "check_proxies", "compute_proxies", "compute_proxy",
    "fisher", "flops", "grad_norm", "jacob_cov", "loss_proxies", "minibatch", "naswot",
    "params", "rank_vote", "snip", "synflow", "transform",
]  # fmt: skip


# -- estimators -----------------------------------------------------------------------------
class ZeroCostProxy(Estimator):
    """Base of the single-proxy estimators: build at init, score, report params alongside."""

    proxy: str = ""
    needs_data = True

    def __init__(
        self,
        batch_size: int = 64,
        seed: int = 0,
        inputs: str = "auto",
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        device: str = "cpu",
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 2:
            raise NasforgeError(f"batch_size must be an integer >= 2, got {batch_size!r}")
        if inputs not in INPUT_SOURCES:
            raise NasforgeError(f"inputs must be one of {', '.join(INPUT_SOURCES)}, not {inputs!r}")
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3:
            raise NasforgeError(
                f"input_shape must be (channels, height, width), got {input_shape!r}"
            )
        self.batch_size, self.seed, self.inputs = batch_size, int(seed), inputs
        self.input_shape, self.num_classes, self.device = shape, int(num_classes), device

    def config(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "seed": self.seed,
            "inputs": self.inputs,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "device": self.device,
        }

    def _shape(self, data: Dataset | None) -> tuple[tuple[int, ...], int]:
        if data is not None and self.inputs != "noise":
            return tuple(data.input_shape), max(1, data.num_classes)
        return self.input_shape, self.num_classes

    def _evaluate(
        self, arch: Arch, space: SearchSpace, data: Dataset | None, fidelity: dict[str, Any]
    ) -> Result:
        shape, classes = self._shape(data)
        net = build_network(arch, space, shape, classes, self.seed, self.device)
        report: dict[str, float] = {}
        x = y = None
        if self.proxy in DATA_DEPENDENT:
            x, y, noise = minibatch(data, self.batch_size, self.seed, shape, classes, self.inputs)
            x, y = x.to(self.device), y.to(self.device)
            report["proxy_input_noise"] = float(noise)
        t0 = time.perf_counter()
        score = compute_proxy(self.proxy, net, x, y, shape)
        report["proxy_seconds"] = time.perf_counter() - t0
        if not math.isfinite(score):
            return Result.failed(
                f"{self.proxy} is not finite ({score}): the network's output does not depend on "
                "its input (e.g. every path is cut by 'none' ops)"
            )
        metrics = {self.proxy: score}
        if self.proxy != "params":
            metrics["params"] = params(net)
        return Result(metrics=metrics, report=report)


def _proxy_estimator(proxy_name: str, doc: str, data_free: bool) -> type[ZeroCostProxy]:
    cls = type(
        f"{proxy_name.title().replace('_', '')}Proxy",
        (ZeroCostProxy,),
        {"proxy": proxy_name, "needs_data": not data_free, "__doc__": doc, "__module__": __name__},
    )
    return register(proxy_name)(cls)  # type: ignore[return-value]


SynflowProxy = _proxy_estimator(
    "synflow", "SynFlow zero-cost proxy (data-free; all-ones input).", True
)
NaswotProxy = _proxy_estimator(
    "naswot", "NASWOT: log-det of the ReLU activation-pattern kernel.", False
)
SnipProxy = _proxy_estimator("snip", "SNIP: sum of |weight x loss gradient| at init.", False)
GradNormProxy = _proxy_estimator(
    "grad_norm", "Sum of per-layer loss-gradient norms at init.", False
)
FisherProxy = _proxy_estimator("fisher", "Fisher channel saliency summed over channels.", False)
JacobCovProxy = _proxy_estimator(
    "jacob_cov", "Jacobian covariance of input gradients (Mellor v1).", False
)
ParamsProxy = _proxy_estimator("params", "Parameter count as a proxy (no forward pass).", True)
FlopsProxy = _proxy_estimator("flops", "Forward FLOPs of one sample as a proxy.", True)



@register("zc-vote")
class ZeroCostVote(ZeroCostProxy):
    """Rank vote of several proxies for one arch, ranked against a calibration pool.

    A rank needs a reference pool, so a single architecture is compared with a
    calibration pool of ``calibration_size`` random archs of the same space (sampled
    with ``seed``, scored once on first use and kept in :meth:`config`, so a resumed
    run gives the same numbers; or given as ``calibration={proxy: [values]}``).
    ``method="rank"`` (default): the mean over proxies of the arch's mid-rank percentile
    in the pool, in [0, 1] -- over the pool itself exactly :func:`rank_vote`, and
    robust to heavy tails (jacob_cov has them). ``method="zscore"``: mean z-score of
    the transformed scores (log scale for multiplicative proxies), clipped to [-10, 10].
    """

    proxy = "zc_vote"

    def __init__(
        self,
        proxies: Sequence[str] | str = DEFAULT_VOTE,
        batch_size: int = 64,
        seed: int = 0,
        inputs: str = "auto",
        input_shape: Sequence[int] = (3, 32, 32),
        num_classes: int = 10,
        device: str = "cpu",
        method: str = "rank",
        calibration_size: int = 32,
        calibration: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        super().__init__(batch_size, seed, inputs, input_shape, num_classes, device)
        if isinstance(proxies, str):
            proxies = proxies.split(",")
        self.proxies = check_proxies(proxies)
        if method not in ("rank", "zscore"):
            raise NasforgeError(f"zc-vote: method must be 'rank' or 'zscore', not {method!r}")
        self.method = method
        if (
            isinstance(calibration_size, bool)
            or not isinstance(calibration_size, int)
            or calibration_size < 2
        ):
            raise NasforgeError(
                f"calibration_size must be an integer >= 2, got {calibration_size!r}"
            )
        self.calibration_size = calibration_size
        self.calibration: dict[str, np.ndarray] | None = None
        if calibration is not None:
            missing = [p for p in self.proxies if p not in calibration]
            short = [p for p in self.proxies if p in calibration and len(calibration[p]) < 2]
            if missing or short:
                raise NasforgeError(
                    f"zc-vote: calibration needs >= 2 values for each of {self.proxies}; "
                    f"missing {missing}, too short {short}"
                )
            self.calibration = {p: np.sort(np.asarray(calibration[p], float)) for p in self.proxies}

    def config(self) -> dict[str, Any]:
        cfg = {
            **super().config(),
            "proxies": list(self.proxies),
            "method": self.method,
            "calibration_size": self.calibration_size,
        }
        if self.calibration is not None:
            cfg["calibration"] = {p: v.tolist() for p, v in self.calibration.items()}
        return cfg

    def raw_scores(
        self, arch: Arch, space: SearchSpace, data: Dataset | None = None
    ) -> dict[str, float]:
        """Every member proxy of ``arch`` on one network (same init, same minibatch)."""
        shape, classes = self._shape(data)
        net = build_network(arch, space, shape, classes, self.seed, self.device)
        x, y, _ = minibatch(data, self.batch_size, self.seed, shape, classes, self.inputs)
        x, y = x.to(self.device), y.to(self.device)
        return compute_proxies(self.proxies, net, x, y, shape)

    def calibrate(self, space: SearchSpace, data: Dataset | None = None) -> dict[str, np.ndarray]:
        """Score ``calibration_size`` random archs; keep each proxy's finite values (sorted)."""
        rng = np.random.default_rng(self.seed)
        rows = [
            self.raw_scores(space.sample(rng), space, data) for _ in range(self.calibration_size)
        ]
        ref: dict[str, np.ndarray] = {}
        for p in self.proxies:
            v = np.array([transform(p, r[p]) for r in rows], dtype=float)
            v = v[np.isfinite(v)]
            if len(v) < 2:
                raise NasforgeError(f"zc-vote: proxy {p} is degenerate on the calibration pool")
            ref[p] = np.sort(v)
        self.calibration = ref
        return ref

    def combine(self, raw: Mapping[str, float]) -> float:
        """The vote of one architecture's raw proxy scores (calibrate first)."""
        if self.calibration is None:
            raise NasforgeError("zc-vote: call calibrate() (or pass calibration=) before combine()")
        parts = []
        for p in self.proxies:
            ref = self.calibration[p]
            t = transform(p, raw[p])
            if self.method == "rank":
                if math.isnan(t):
                    parts.append(0.0)
                    continue
                lo, hi = np.searchsorted(ref, t, "left"), np.searchsorted(ref, t, "right")
                parts.append(float(lo + hi) / (2 * len(ref)))
            else:
                std = float(ref.std()) or 1.0
                z = (t - float(ref.mean())) / std
                parts.append(-10.0 if math.isnan(z) else float(np.clip(z, -10.0, 10.0)))
        return float(np.mean(parts))

    def _evaluate(
        self, arch: Arch, space: SearchSpace, data: Dataset | None, fidelity: dict[str, Any]
    ) -> Result:
        report: dict[str, float] = {}
        if self.calibration is None:
            t0 = time.perf_counter()
            self.calibrate(space, data)
            report["calibration_seconds"] = time.perf_counter() - t0
        raw = self.raw_scores(arch, space, data)
        metrics = {"zc_vote": self.combine(raw)}
        metrics.update({p: v for p, v in raw.items() if math.isfinite(v)})
        report["proxy_input_noise"] = float(data is None or self.inputs == "noise")
        return Result(metrics=metrics, report=report)
