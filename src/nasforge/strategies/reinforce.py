"""REINFORCE controller (Williams 1992; Zoph & Le 2017; ENAS-style per-decision policy).

The policy is one independent categorical distribution per choice of the space
(logits in numpy: no RNN is needed for a fixed, ordered list of decisions). After
each result the logits take one Adam step along the policy gradient
``A * grad log pi(arch) + beta * grad H(pi)``, where the advantage ``A`` is the score
minus an exponential moving-average baseline, divided by a running standard
deviation so that ``lr`` and ``entropy_weight`` mean the same whatever the metric's
scale. The entropy bonus keeps the policy from collapsing on an early lucky pick.
Only active choices (see ``SearchSpace.is_active``) receive a gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.spaces.base import Arch, SearchSpace
from nasforge.strategies import register
from nasforge.strategies.base import Past, Strategy, Suggestion
from nasforge.strategies.local_search import sample_unseen


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


@register("reinforce")
class Reinforce(Strategy):
    """REINFORCE: per-choice categorical policy, EMA baseline, entropy bonus, Adam."""

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        metric: str = "val_accuracy",
        mode: str = "max",
        lr: float = 0.1,
        baseline_decay: float = 0.9,
        entropy_weight: float = 0.05,
        beta1: float = 0.9,
        beta2: float = 0.999,
        max_retries: int = 100,
    ) -> None:
        super().__init__(space, seed, metric, mode)
        if lr <= 0:
            raise NasforgeError("reinforce: lr must be positive")
        if not 0.0 <= baseline_decay < 1.0:
            raise NasforgeError("reinforce: baseline_decay must be in [0, 1)")
        if entropy_weight < 0:
            raise NasforgeError("reinforce: entropy_weight must be >= 0")
        self.lr = float(lr)
        self.baseline_decay = float(baseline_decay)
        self.entropy_weight = float(entropy_weight)
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.max_retries = int(max_retries)
        sizes = [len(c.options) for c in space.choices()]
        self.logits = [np.zeros(n) for n in sizes]
        self.m = [np.zeros(n) for n in sizes]  # Adam first moment
        self.v = [np.zeros(n) for n in sizes]  # Adam second moment
        self.steps = 0
        self.baseline: float | None = None
        self.reward_var = 0.0  # EMA of squared deviation from the baseline
        self.worst = math.inf  # reward given to failed evaluations
        self.seen: set[str] = set()

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "lr": self.lr,
            "baseline_decay": self.baseline_decay,
            "entropy_weight": self.entropy_weight,
        }

    def probs(self) -> list[np.ndarray]:
        """The policy's current per-choice probabilities (for inspection and tests)."""
        return [_softmax(z) for z in self.logits]

    def _sample_policy(self) -> Arch:
        choices = self.space.choices()
        vals = [
            c.options[int(self.rng.choice(len(c.options), p=p))]
            for c, p in zip(choices, self.probs(), strict=True)
        ]
        return self.space.make(vals)

    def ask(self) -> Suggestion:
        arch = self._sample_policy()
        for _ in range(self.max_retries):
            if arch.text not in self.seen:
                break
            arch = self._sample_policy()
        else:  # the policy has concentrated on seen archs: explore uniformly
            arch = sample_unseen(self.space, self.rng, self.seen, self.max_retries)
        self.seen.add(arch.text)
        return Suggestion(arch)

    def _tell(self, suggestion: Suggestion, result: Result) -> None:
        self.seen.add(suggestion.arch.text)
        r = self.score(result)
        if math.isfinite(r):
            self.worst = min(self.worst, r)
        elif math.isfinite(self.worst):
            r = self.worst  # a failure is as bad as the worst success seen
        else:
            return  # nothing to compare a failure with yet
        if self.baseline is None:
            self.baseline = r
        adv = r - self.baseline
        d = self.baseline_decay
        self.reward_var = d * self.reward_var + (1 - d) * adv * adv
        std = math.sqrt(self.reward_var)
        adv_n = adv / std if std > 1e-12 else 0.0
        self.baseline = d * self.baseline + (1 - d) * r
        self._step(suggestion.arch, adv_n)

    def _step(self, arch: Arch, adv: float) -> None:
        """One Adam ascent step on ``adv * log pi(arch) + entropy_weight * H(pi)``."""
        values = arch.as_dict()
        self.steps += 1
        t = self.steps
        for i, c in enumerate(self.space.choices()):
            p = _softmax(self.logits[i])
            logp = np.log(p + 1e-12)
            ent = -float((p * logp).sum())
            grad = self.entropy_weight * (-p * (logp + ent))
            if self.space.is_active(c.name, values):
                onehot = np.zeros_like(p)
                onehot[c.options.index(values[c.name])] = 1.0
                grad = grad + adv * (onehot - p)
            self.m[i] = self.beta1 * self.m[i] + (1 - self.beta1) * grad
            self.v[i] = self.beta2 * self.v[i] + (1 - self.beta2) * grad * grad
            mh = self.m[i] / (1 - self.beta1**t)
            vh = self.v[i] / (1 - self.beta2**t)
            self.logits[i] = self.logits[i] + self.lr * mh / (np.sqrt(vh) + 1e-8)

    def rebuild(self, asked: Sequence[Past], told: Sequence[Past]) -> None:
        """Seen: every ask (the policy, baseline and Adam moments are in the state)."""
        self.seen = {p.suggestion.arch.text for p in asked}

    def _history_state(self) -> dict[str, Any]:
        return {"seen": sorted(self.seen)}

    def _state(self) -> dict[str, Any]:
        return {
            "logits": [z.tolist() for z in self.logits],
            "adam_m": [m.tolist() for m in self.m],
            "adam_v": [v.tolist() for v in self.v],
            "steps": self.steps,
            "baseline": self.baseline,
            "reward_var": self.reward_var,
            "worst": self.worst if math.isfinite(self.worst) else None,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        sizes = [len(c.options) for c in self.space.choices()]
        logits = [np.asarray(z, dtype=np.float64) for z in state.get("logits", [])]
        if [len(z) for z in logits] != sizes:
            raise NasforgeError("reinforce: saved policy does not match this space's choices")
        self.logits = logits
        self.m = [np.asarray(z, dtype=np.float64) for z in state["adam_m"]]
        self.v = [np.asarray(z, dtype=np.float64) for z in state["adam_v"]]
        self.steps = int(state.get("steps", 0))
        b = state.get("baseline")
        self.baseline = None if b is None else float(b)
        self.reward_var = float(state.get("reward_var", 0.0))
        w = state.get("worst")
        self.worst = math.inf if w is None else float(w)
        if "seen" in state:  # a state from before run format 2
            self.seen = set(state["seen"])
