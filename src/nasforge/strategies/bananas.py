"""BANANAS: Bayesian optimization with a neural ensemble predictor (White et al., AAAI 2021).

Why it works: a small ensemble of MLPs, trained on the (encoding, score) pairs told so
far, gives a mean and a spread for any architecture, and the spread is a usable
uncertainty for Bayesian optimization; no Gaussian process over a discrete space is
needed. Each ask generates candidates by mutating the best architectures found so far
(plus a few random ones), scores them with an acquisition function over the ensemble
(independent Thompson sampling by default, or expected improvement / UCB), and returns
the best candidate that was neither evaluated nor is still pending. With the path
encoding of cell spaces (:mod:`nasforge.strategies.encodings`) this is the paper's
setting; any other space uses its one-hot encoding.

Exploration: members that differ only in their initialization agree too well away
from the data, so Thompson sampling turns greedy and can stay in one basin for hundreds
of queries. Two general remedies fix most of that: each member trains on its own
bootstrap resample, and each member carries a fixed random "prior" network (Osband et
al., NeurIPS 2018: randomized prior functions) scaled to ``prior_scale`` standard
deviations of the scores, which the trained part learns to cancel where there is data
and which keeps the members apart where there is none. The loss is the paper's mean
absolute error, which a few very bad architectures cannot dominate.

Equivalent architectures (``skip_equivalent``, on by default): an arch whose
``space.equivalence_key`` matches one already told or pending is never proposed; on
NAS-Bench-201 about 40 % of the strings are another string's network again.

Cost: the ensemble is one batched model (weights shaped ``(members, in, out)``) trained
full-batch with Adam and hand-written gradients, on one thread, and retrained every
``retrain_every`` tells (the paper retrains every 10; set 1 when an evaluation costs
minutes anyway). Determinism and resume: each training draws its seed from the
strategy's generator and uses a private ``torch.Generator``, and the state stores that
seed and how many told points it used, so a resumed strategy refits the same predictor
from the told points (rebuilt from the run's trials) and continues with exactly the same
queries.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from scipy.special import ndtr

from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.spaces.base import Arch, SearchSpace
from nasforge.strategies import register
from nasforge.strategies.base import Past, Strategy, Suggestion, check_flag
from nasforge.strategies.encodings import ENCODINGS, make_encoder

ACQUISITIONS = ("its", "ei", "ucb")
LOSSES = ("mse", "mae")


@contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch on one thread (tiny matrices: threads only add overhead and nondeterminism)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class MLPEnsemble:
    """``members`` independent ReLU MLPs evaluated as one batched model.

    Members differ only in their random initialization (as in BANANAS). Training is
    full-batch Adam on the mean squared error with explicit gradients: at a few hundred
    points, autograd's and the optimizer's per-tensor bookkeeping would cost more than
    the arithmetic. All weights live in one flat buffer (so an Adam step is a handful of
    ops), and the first layer of all members is a single matrix product.
    """

    def __init__(
        self, in_dim: int, hidden: Sequence[int], members: int, generator: torch.Generator
    ) -> None:
        self.in_dim, self.members, self.hidden = in_dim, members, list(hidden)
        e, h0 = members, self.hidden[0]
        shapes: list[tuple[int, ...]] = [(in_dim, e * h0), (1, e * h0)]
        fans = [in_dim, in_dim]
        dims = [*self.hidden, 1]
        for a, b in zip(dims[:-1], dims[1:], strict=True):
            shapes += [(e, a, b), (e, 1, b)]
            fans += [a, a]
        sizes = [math.prod(s) for s in shapes]
        self.flat = torch.empty(sum(sizes))
        self.params: list[torch.Tensor] = []
        for chunk, shape, fan in zip(self.flat.split(sizes), shapes, fans, strict=True):
            bound = 1.0 / math.sqrt(fan)  # torch.nn.Linear's default range
            chunk.copy_(torch.rand(chunk.numel(), generator=generator).mul_(2 * bound).sub_(bound))
            self.params.append(chunk.view(shape))
        self._sizes, self._shapes = sizes, shapes

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Outputs ``(members, n, 1)`` and the hidden activations (for the backward pass)."""
        n = x.shape[0]
        z = torch.addmm(self.params[1], x, self.params[0]).relu_()
        z = z.view(n, self.members, self.hidden[0]).transpose(0, 1)
        acts = [z]
        n_layers = len(self.params) // 2
        for k in range(1, n_layers):
            z = torch.baddbmm(self.params[2 * k + 1], z, self.params[2 * k])
            if k < n_layers - 1:
                z = z.relu_()
                acts.append(z)
        return z, acts

    @torch.no_grad()
    def fit(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        steps: int,
        lr: float,
        weight_decay: float,
        loss: str = "mse",
        sample_weight: torch.Tensor | None = None,
    ) -> None:
        """Full-batch Adam on the mean squared (or absolute) error, every member at once.

        ``sample_weight`` (shape ``(members, n, 1)``) weights each member's points, e.g.
        bootstrap counts, so members can train on different resamples in one batch.
        """
        n = x.shape[0]
        scale: torch.Tensor | float = (2.0 if loss == "mse" else 1.0) / n
        if sample_weight is not None:
            scale = sample_weight * scale
        target = y.reshape(-1, n, 1)  # one target for all members, or one per member
        xt = x.t().contiguous()
        flat, params = self.flat, self.params
        grad = torch.empty_like(flat)
        grads = [g.view(s) for g, s in zip(grad.split(self._sizes), self._shapes, strict=True)]
        m, v = torch.zeros_like(flat), torch.zeros_like(flat)
        b1, b2, eps = 0.9, 0.999, 1e-8
        n_layers = len(params) // 2
        relu_bwd = torch.ops.aten.threshold_backward
        for step in range(1, steps + 1):
            out, acts = self._forward(x)
            g = out.sub_(target) if loss == "mse" else out.sub_(target).sign_()
            g = g.mul_(scale)
            for k in reversed(range(1, n_layers)):
                a = acts[k - 1]
                torch.bmm(a.transpose(1, 2), g, out=grads[2 * k])
                torch.sum(g, 1, keepdim=True, out=grads[2 * k + 1])
                g = relu_bwd(torch.bmm(g, params[2 * k].transpose(1, 2)), a, 0.0)
            g0 = g.transpose(0, 1).reshape(n, -1)
            torch.mm(xt, g0, out=grads[0])
            torch.sum(g0, 0, keepdim=True, out=grads[1])
            if weight_decay:
                grad.add_(flat, alpha=weight_decay)
            m.mul_(b1).add_(grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
            denom = v.sqrt().div_(math.sqrt(1 - b2**step)).add_(eps)
            flat.addcdiv_(m, denom, value=-lr / (1 - b1**step))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions of every member, shape ``(members, n)``."""
        return self._forward(x)[0].squeeze(-1)


@register("bananas")
class Bananas(Strategy):
    """Predictor-based BO: MLP-ensemble surrogate, mutation-based acquisition optimization."""

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        metric: str = "val_accuracy",
        mode: str = "max",
        num_init: int = 10,
        ensemble_size: int = 5,
        hidden: Sequence[int] = (32, 32),
        train_steps: int = 100,
        lr: float = 0.01,
        weight_decay: float = 0.0,
        acquisition: str = "its",
        ucb_beta: float = 1.0,
        encoding: str = "auto",
        num_parents: int = 10,
        mutations_per_parent: int = 10,
        max_mutations: int = 2,
        num_random: int = 10,
        retrain_every: int = 3,
        max_retries: int = 100,
        loss: str = "mae",
        bootstrap: bool = True,
        prior_scale: float = 0.3,
        skip_equivalent: bool = True,
    ) -> None:
        super().__init__(space, seed, metric, mode)
        if acquisition not in ACQUISITIONS:
            raise NasforgeError(
                f"acquisition must be one of {list(ACQUISITIONS)}, not {acquisition!r}"
            )
        if loss not in LOSSES:
            raise NasforgeError(f"loss must be one of {list(LOSSES)}, not {loss!r}")
        if encoding not in ENCODINGS:
            raise NasforgeError(f"encoding must be one of {list(ENCODINGS)}, not {encoding!r}")
        ints = {
            "num_init": (num_init, 1),
            "ensemble_size": (ensemble_size, 1),
            "train_steps": (train_steps, 1),
            "num_parents": (num_parents, 1),
            "mutations_per_parent": (mutations_per_parent, 0),
            "max_mutations": (max_mutations, 1),
            "num_random": (num_random, 0),
            "retrain_every": (retrain_every, 1),
            "max_retries": (max_retries, 1),
        }
        for key, (val, low) in ints.items():
            if isinstance(val, bool) or not isinstance(val, int) or val < low:
                raise NasforgeError(f"{key} must be an integer >= {low}, got {val!r}")
        hidden = [int(h) for h in hidden]
        if not hidden or any(h < 1 for h in hidden):
            raise NasforgeError(f"hidden must be a non-empty list of widths >= 1, got {hidden!r}")
        if mutations_per_parent == 0 and num_random == 0:
            raise NasforgeError("mutations_per_parent and num_random cannot both be 0")
        if not lr > 0 or weight_decay < 0 or ucb_beta < 0 or prior_scale < 0:
            raise NasforgeError(
                "lr must be > 0; weight_decay, ucb_beta and prior_scale must be >= 0"
            )
        self.num_init = num_init
        self.ensemble_size = ensemble_size
        self.hidden = hidden
        self.train_steps = train_steps
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.acquisition = acquisition
        self.ucb_beta = float(ucb_beta)
        self.encoding = encoding
        self.num_parents = num_parents
        self.mutations_per_parent = mutations_per_parent
        self.max_mutations = max_mutations
        self.num_random = num_random
        self.retrain_every = retrain_every
        self.max_retries = max_retries
        self.loss = loss
        self.bootstrap = check_flag("bootstrap", bootstrap)
        self.prior_scale = float(prior_scale)
        self.skip_equivalent = check_flag("skip_equivalent", skip_equivalent)
        self.encoder = make_encoder(space, encoding)

        self.told: list[tuple[Arch, float]] = []
        self.seen: set[Arch] = set()
        self.seen_keys: set[str] = set()  # space.equivalence_key of told archs
        self.pending: dict[Arch, None] = {}  # ordered: state round-trips in ask order
        self.n_asked = 0
        # the current predictor: trained on told[:n_trained] from train_seed; rebuilt lazily
        self.n_trained = 0
        self.train_seed = 0
        self._model: MLPEnsemble | None = None
        self._prior: tuple[MLPEnsemble, torch.Tensor] | None = None
        self._y_mean, self._y_std, self._y_best = 0.0, 1.0, 0.0

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "num_init": self.num_init,
            "ensemble_size": self.ensemble_size,
            "hidden": list(self.hidden),
            "train_steps": self.train_steps,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "acquisition": self.acquisition,
            "ucb_beta": self.ucb_beta,
            "encoding": self.encoding,
            "num_parents": self.num_parents,
            "mutations_per_parent": self.mutations_per_parent,
            "max_mutations": self.max_mutations,
            "num_random": self.num_random,
            "retrain_every": self.retrain_every,
            "max_retries": self.max_retries,
            "loss": self.loss,
            "bootstrap": self.bootstrap,
            "prior_scale": self.prior_scale,
            "skip_equivalent": self.skip_equivalent,
        }

    # -- ask / tell ------------------------------------------------------------------------
    def ask(self) -> Suggestion:
        """Random during the first ``num_init`` asks, then the acquisition's best new candidate."""
        self.n_asked += 1
        finite = sum(1 for _, s in self.told if math.isfinite(s))
        arch = None
        if self.n_asked > self.num_init and finite >= 2:
            arch = self._propose()
        if arch is None:
            arch = self._random_unseen()
        self.pending[arch] = None
        return Suggestion(arch)

    def _tell(self, suggestion: Suggestion, result: Result) -> None:
        arch = suggestion.arch
        self.pending.pop(arch, None)
        self.seen.add(arch)
        self.seen_keys.add(self.space.equivalence_key(arch))
        self.told.append((arch, self.score(result)))

    def _excluded(self, arch: Arch) -> bool:
        """Told or pending, or (``skip_equivalent``) the same network as a told/pending one."""
        if arch in self.seen or arch in self.pending:
            return True
        if not self.skip_equivalent:
            return False
        key = self.space.equivalence_key(arch)
        return key in self.seen_keys or any(
            self.space.equivalence_key(p) == key for p in self.pending
        )

    def _random_unseen(self) -> Arch:
        arch = self.space.sample(self.rng)
        for _ in range(self.max_retries):
            if not self._excluded(arch):
                break
            arch = self.space.sample(self.rng)
        return arch

    # -- the predictor ---------------------------------------------------------------------
    def _training_data(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Encodings and scores of ``told[:n]``; failures count as the worst finite score."""
        archs = [a for a, _ in self.told[:n]]
        ys = np.array([s for _, s in self.told[:n]], dtype=np.float64)
        finite = np.isfinite(ys)
        ys[~finite] = ys[finite].min()
        return self.encoder.many(archs), ys

    def _fit(self, n: int, seed: int) -> None:
        x, ys = self._training_data(n)
        mean, std = float(ys.mean()), float(ys.std())
        std = std if std > 1e-12 else 1.0
        y = (ys - mean) / std
        gen = torch.Generator().manual_seed(seed)
        with _single_thread():
            model = MLPEnsemble(x.shape[1], self.hidden, self.ensemble_size, gen)
            w = None
            if self.bootstrap:  # each member sees its own resample: wider spread where data is thin
                e, n = self.ensemble_size, len(y)
                idx = torch.randint(n, (e, n), generator=gen)
                w = torch.zeros(e, n).scatter_add_(1, idx, torch.ones(e, n)).unsqueeze(-1)
            xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))
            self._prior = None
            if self.prior_scale > 0:
                prior = MLPEnsemble(x.shape[1], self.hidden, self.ensemble_size, gen)
                p = prior.predict(xt)
                self._prior = (prior, self.prior_scale / p.std(1, keepdim=True).clamp_min(1e-6))
                yt = yt.unsqueeze(0) - p * self._prior[1]
            model.fit(xt, yt, self.train_steps, self.lr, self.weight_decay, self.loss, w)
        self._model = model
        self._y_mean, self._y_std, self._y_best = mean, std, float(y.max())

    def _ensure_model(self) -> MLPEnsemble:
        """Retrain when ``retrain_every`` new results arrived; rebuild after a resume."""
        if self._model is None and self.n_trained > 0:
            self._fit(self.n_trained, self.train_seed)  # same data, same seed: same model
        if self._model is None or len(self.told) - self.n_trained >= self.retrain_every:
            self.n_trained = len(self.told)
            self.train_seed = int(self.rng.integers(2**62))
            self._fit(self.n_trained, self.train_seed)
        assert self._model is not None
        return self._model

    def predict(self, archs: Sequence[Arch]) -> tuple[np.ndarray, np.ndarray]:
        """Ensemble mean and standard deviation of the score of ``archs`` (score units)."""
        model = self._ensure_model()
        with _single_thread():
            xc = torch.from_numpy(self.encoder.many(archs))
            pt = model.predict(xc)
            if self._prior is not None:
                pt = pt + self._prior[0].predict(xc) * self._prior[1]
            p = pt.double().numpy()
        return p.mean(0) * self._y_std + self._y_mean, p.std(0) * self._y_std

    # -- acquisition -----------------------------------------------------------------------
    def _candidates(self) -> list[Arch]:
        """Mutations of the best told archs plus random samples: new, unique, in a fixed order."""
        ranked = sorted(
            (i for i, (_, s) in enumerate(self.told) if math.isfinite(s)),
            key=lambda i: (-self.told[i][1], i),
        )
        out: dict[Arch, None] = {}
        for i in ranked[: self.num_parents]:
            parent = self.told[i][0]
            for _ in range(self.mutations_per_parent):
                child = parent
                for _ in range(int(self.rng.integers(1, self.max_mutations + 1))):
                    child = self.space.mutate(child, self.rng)
                if not self._excluded(child):
                    out[child] = None
        for _ in range(self.num_random):
            a = self.space.sample(self.rng)
            if not self._excluded(a):
                out[a] = None
        return list(out)

    def _acquire(self, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        """Acquisition values (larger is better), in standardized score units."""
        mu = (mean - self._y_mean) / self._y_std
        sd = np.maximum(std / self._y_std, 1e-9)
        if self.acquisition == "its":
            return mu + sd * self.rng.standard_normal(len(mu))
        if self.acquisition == "ucb":
            return mu + self.ucb_beta * sd
        z = (mu - self._y_best) / sd
        pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        return (mu - self._y_best) * ndtr(z) + sd * pdf

    def _propose(self) -> Arch | None:
        cands = self._candidates()
        if not cands:
            return None
        mean, std = self.predict(cands)
        acq = self._acquire(mean, std)
        return cands[int(np.argmax(acq))]

    # -- persistence -----------------------------------------------------------------------
    def rebuild(self, asked: Sequence[Past], told: Sequence[Past]) -> None:
        """The told points in told order (the predictor is refit from them on demand)."""
        self.told = [(p.suggestion.arch, self.score(p.result)) for p in told]  # type: ignore[arg-type]
        self.seen = {a for a, _ in self.told}
        self.seen_keys = {self.space.equivalence_key(a) for a in self.seen}

    def _history_state(self) -> dict[str, Any]:
        return {"told": [[a.text, s if math.isfinite(s) else None] for a, s in self.told]}

    def _state(self) -> dict[str, Any]:
        return {
            "pending": [a.text for a in self.pending],
            "n_asked": self.n_asked,
            "n_trained": self.n_trained,
            "train_seed": self.train_seed,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        if "told" in state:  # a state from before run format 2
            self.told = [(self._arch(t), -math.inf if s is None else float(s))
                         for t, s in state["told"]]
            self.seen = {a for a, _ in self.told}
            self.seen_keys = {self.space.equivalence_key(a) for a in self.seen}
        self.pending = {self._arch(t): None for t in state.get("pending", [])}
        self.n_asked = int(state.get("n_asked", 0))
        self.n_trained = int(state.get("n_trained", 0))
        self.train_seed = int(state.get("train_seed", 0))
        self._model = None
