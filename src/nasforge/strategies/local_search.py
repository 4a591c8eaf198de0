"""Local search (hill climbing over one-choice neighbourhoods) with random restarts.

White et al. ("Local search is state of the art for NAS benchmarks", 2020; NASLib)
found that plain hill climbing is among the strongest black-box strategies on
NAS-Bench-201: neighbouring cells have strongly correlated accuracies. The search
starts from the best of ``n_init`` random samples, evaluates the unseen neighbours
of the current architecture in random order and moves on the first improvement
(``improvement="first"``) or after the whole neighbourhood (``"best"``); at a local
optimum it restarts from the best of ``restart_init`` fresh random samples.
Scores of architectures already seen are reused, never re-queried.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.spaces.base import Arch, SearchSpace
from nasforge.strategies import register
from nasforge.strategies.base import Past, Strategy, Suggestion, check_flag

#: what to do at a local optimum: fresh random samples; a few random mutations of the best
#: arch so far (iterated local search); or climb on from the best arch whose
#: neighbourhood has not been scanned yet (best-first)
RESTARTS = ("random", "perturb", "frontier")
#: spaces up to this size are enumerated when random sampling keeps hitting seen archs
_ENUMERATE_LIMIT = 200_000


def sample_unseen(
    space: SearchSpace,
    rng: np.random.Generator,
    seen: set[str],
    max_retries: int = 100,
    key: Callable[[Arch], str] | None = None,
) -> Arch:
    """A uniformly random arch whose ``key`` (default: string) is not in ``seen``.

    A seen one only if all are. Rejection sampling first; after ``max_retries`` misses a
    small space is enumerated so the search does not repeat itself while unseen
    architectures remain.
    """
    k = key or (lambda a: a.text)
    arch = space.sample(rng)
    for _ in range(max_retries):
        if k(arch) not in seen:
            return arch
        arch = space.sample(rng)
    if space.size <= _ENUMERATE_LIMIT:
        rest = [a for a in space.enumerate() if k(a) not in seen]
        if rest:
            return rest[int(rng.integers(len(rest)))]
    return arch


def _enc(score: float) -> float | None:
    """JSON has no infinities: a failed (-inf) score is stored as null."""
    return score if math.isfinite(score) else None


def _dec(v: float | None) -> float:
    return -math.inf if v is None else float(v)


@register("local-search")
class LocalSearch(Strategy):
    """Hill climbing over one-choice neighbours from the best of a few random samples; restarts."""

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        metric: str = "val_accuracy",
        mode: str = "max",
        n_init: int = 5,
        improvement: str = "first",
        restart_init: int | None = None,
        restart: str = "random",
        perturb_steps: int = 2,
        order: str = "random",
        ridge: float = 1.0,
        max_retries: int = 100,
        skip_equivalent: bool = True,
        warm_start: bool = True,
    ) -> None:
        super().__init__(space, seed, metric, mode)
        self._set_warm_start(warm_start)
        if n_init < 1:
            raise NasforgeError("local-search: n_init must be at least 1")
        if improvement not in ("first", "best"):
            raise NasforgeError(
                f"local-search: improvement must be 'first' or 'best', not {improvement!r}"
            )
        if restart not in RESTARTS:
            raise NasforgeError(f"local-search: restart must be one of {RESTARTS}, not {restart!r}")
        if order not in ("random", "model"):
            raise NasforgeError(f"local-search: order must be 'random' or 'model', not {order!r}")
        if perturb_steps < 1:
            raise NasforgeError("local-search: perturb_steps must be at least 1")
        if restart_init is not None and restart_init < 1:
            raise NasforgeError("local-search: restart_init must be at least 1")
        self.n_init = int(n_init)
        self.improvement = improvement
        self.restart_init = int(restart_init) if restart_init is not None else int(n_init)
        self.restart = restart
        self.perturb_steps = int(perturb_steps)
        self.order = order
        self.ridge = float(ridge)
        self.max_retries = int(max_retries)
        self.skip_equivalent = check_flag("local-search: skip_equivalent", skip_equivalent)
        self._keys: dict[str, str] = {}  # text -> space.equivalence_key (a memo)
        self.expanded: set[str] = set()  # archs whose neighbourhood has been fully scanned
        #: expansions not yet noted with an ask (the next ask's note carries them)
        self.unnoted: list[str] = []
        self.scores: dict[str, float] = {}  # told archs -> score (larger is better)
        self.pending: list[str] = []  # asked, not yet told
        self.phase = "init"
        self.batch: list[str] = []  # random samples of the current (re)start
        self.batch_left = self.n_init
        self.current: str | None = None
        self.current_score = -math.inf
        self.queue: list[str] = []  # neighbours of current still to ask
        self.scan: list[str] = []  # neighbours of current asked in this scan
        self.n_restarts = 0

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "n_init": self.n_init,
            "improvement": self.improvement,
            "restart_init": self.restart_init,
            "restart": self.restart,
            "perturb_steps": self.perturb_steps,
            "order": self.order,
            "ridge": self.ridge,
            "skip_equivalent": self.skip_equivalent,
            **({} if self.warm_start else {"warm_start": False}),
        }

    # -- ask/tell ------------------------------------------------------------------------
    def _seen(self) -> set[str]:
        """Keys of the told and pending archs (see :meth:`_key`)."""
        return {self._key(t) for t in self.scores} | {self._key(t) for t in self.pending}

    def _key(self, text: str) -> str:
        """The arch itself, or its network (``skip_equivalent``): equivalents count as seen."""
        if not self.skip_equivalent:
            return text
        k = self._keys.get(text)
        if k is None:
            k = self._keys[text] = self.space.equivalence_key(self._arch(text))
        return k

    def _random(self) -> str:
        seen = self._seen()
        while (known := self.next_known()) is not None:  # known-good designs first
            if self._key(known.text) not in seen:
                return known.text
        key = lambda a: self._key(a.text)  # noqa: E731 - the text itself without skip_equivalent
        return sample_unseen(self.space, self.rng, self._seen(), self.max_retries, key).text

    def ask(self) -> Suggestion:
        text: str | None = None
        if self.phase == "init":
            text = self._perturbed() if self.restart == "perturb" and self.n_restarts else None
            text = text or self._random()
            # asks beyond the batch (parallel workers waiting on its results) explore
            # without joining it: a batch that took every ask would never be complete
            # while workers stay busy, and the climb would never start
            if self.batch_left > 0:
                self.batch.append(text)
                self.batch_left -= 1
        else:
            seen = self._seen()
            while self.queue:
                cand = self.queue.pop(0)
                if self._key(cand) not in seen:
                    text = cand
                    self.scan.append(cand)
                    break
            if text is None:  # neighbourhood handed out, results outstanding: explore
                text = self._random()
        self.pending.append(text)
        note = None
        if self.unnoted:  # stored with this trial: the saved state need not list them all
            note, self.unnoted = {"expanded": self.unnoted}, []
        return Suggestion(self._arch(text), note=note)

    def _tell(self, suggestion: Suggestion, result: Result) -> None:
        text = suggestion.arch.text
        score = self.score(result)
        self.scores[text] = score
        if text in self.pending:
            self.pending.remove(text)
        if self.phase == "init":
            if self.batch_left == 0 and not any(t in self.pending for t in self.batch):
                best = max(self.batch, key=lambda t: self.scores.get(t, -math.inf))
                self._move(best)
            return
        if self.improvement == "first" and text in self.scan and score > self.current_score:
            self._move(text)
            return
        self._settle()

    # -- the climb -------------------------------------------------------------------------
    def _move(self, text: str) -> None:
        """Climb to ``text``, then settle (an iterative loop: chains of known archs can be long)."""
        self.phase = "climb"
        self._set_current(text)
        self._settle()

    def _set_current(self, text: str) -> None:
        """Make ``text`` current (hopping on through known better neighbours); queue the rest."""
        while True:
            self.current = text
            self.current_score = self.scores.get(text, -math.inf)
            nbrs = [a.text for a in self.space.neighbors(self._arch(text))]
            known = [t for t in nbrs if t in self.scores and t not in self.expanded
                     and self.scores[t] > self.current_score]  # fmt: skip
            if self.improvement == "first" and known:
                text = max(known, key=lambda t: self.scores[t])
                continue
            break
        seen = self._seen()
        fresh: list[str] = []
        for t in nbrs:  # one of several equivalent neighbours, none already seen
            if self._key(t) not in seen:
                fresh.append(t)
                seen.add(self._key(t))
        self.queue = [fresh[int(i)] for i in self.rng.permutation(len(fresh))]
        if self.order == "model":
            pred = self._predict(self.queue)
            if pred is not None:  # most promising first; ties keep the random order
                ranked = sorted(range(len(self.queue)), key=lambda i: -pred[i])
                self.queue = [self.queue[i] for i in ranked]
        self.scan = []

    def _predict(self, texts: list[str]) -> np.ndarray | None:
        """Ridge regression of score on ``space.encode`` (one-hot per choice), or None.

        Why: neighbours differ in one choice, and an additive model of the choices is a
        cheap, space-agnostic guess of which change helps; visiting those first makes the
        first improvement come sooner. It only reorders the scan; the climb is unchanged.
        """
        told = [(t, sc) for t, sc in self.scores.items() if math.isfinite(sc)]
        if len(told) < 3 or not texts:
            return None
        x = np.stack([self.space.encode(self._arch(t)) for t, _ in told]).astype(np.float64)
        y = np.array([sc for _, sc in told])
        mu = y.mean()
        a = x.T @ x + self.ridge * np.eye(x.shape[1])
        w = np.linalg.solve(a, x.T @ (y - mu))
        xq = np.stack([self.space.encode(self._arch(t)) for t in texts]).astype(np.float64)
        return xq @ w + mu

    def _settle(self) -> None:
        """While the current neighbourhood is fully known: move on, or restart at an optimum."""
        while self.phase == "climb" and self.current is not None:
            if self.queue or any(t in self.pending for t in self.scan):
                return  # something left to ask, or results to wait for
            # never back to an expanded arch: every pass expands a new one, so this ends
            nbrs = [a.text for a in self.space.neighbors(self._arch(self.current))]
            known = [t for t in nbrs if t in self.scores and t not in self.expanded]
            best = max(known, key=lambda t: self.scores[t]) if known else None
            if best is not None and self.scores[best] > self.current_score:
                self._set_current(best)
                continue
            self.expanded.add(self.current)  # a local optimum
            self.unnoted.append(self.current)
            self.n_restarts += 1
            if self.restart == "frontier":
                open_ = [(sc, t) for t, sc in self.scores.items()
                         if t not in self.expanded and math.isfinite(sc)]  # fmt: skip
                if open_:
                    self._set_current(max(open_, key=lambda p: p[0])[1])
                    continue
            # start again from fresh random samples (or a perturbed best)
            self.phase = "init"
            self.batch = []
            self.batch_left = self.restart_init
            self.current, self.current_score = None, -math.inf
            self.queue, self.scan = [], []

    def _perturbed(self) -> str | None:
        """An unseen arch a few random mutations away from the best so far (None: none found)."""
        told = [(sc, t) for t, sc in self.scores.items() if math.isfinite(sc)]
        if not told:
            return None
        best = self._arch(max(told, key=lambda p: p[0])[1])
        seen = self._seen()
        for _ in range(self.max_retries):
            a = best
            for _ in range(self.perturb_steps):
                a = self.space.mutate(a, self.rng)
            if self._key(a.text) not in seen:
                return a.text
        return None

    # -- persistence -----------------------------------------------------------------------
    def rebuild(self, asked: Sequence[Past], told: Sequence[Past]) -> None:
        """Scores from the tells (in told order, as the dict had them); the expanded archs
        from the notes of the asks."""
        self.scores = {}
        for p in told:
            self.scores[p.suggestion.arch.text] = self.score(p.result)  # type: ignore[arg-type]
        self.expanded = {t for p in asked for t in (p.suggestion.note or {}).get("expanded", [])}

    def _history_state(self) -> dict[str, Any]:
        return {
            "scores": [[t, _enc(s)] for t, s in self.scores.items()],
            "expanded": sorted(self.expanded),
        }

    def _state(self) -> dict[str, Any]:
        return {
            "unnoted": list(self.unnoted),
            "pending": list(self.pending),
            "phase": self.phase,
            "batch": list(self.batch),
            "batch_left": self.batch_left,
            "current": self.current,
            "current_score": _enc(self.current_score),
            "queue": list(self.queue),
            "scan": list(self.scan),
            "n_restarts": self.n_restarts,
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        if "scores" in state:  # a state from before run format 2
            self.scores = {t: _dec(s) for t, s in state["scores"]}
            self.expanded = set(state.get("expanded", []))
        self.unnoted = [str(t) for t in state.get("unnoted", [])]
        self.expanded |= set(self.unnoted)
        self.pending = list(state.get("pending", []))
        self.phase = state.get("phase", "init")
        self.batch = list(state.get("batch", []))
        self.batch_left = int(state.get("batch_left", self.n_init))
        self.current = state.get("current")
        self.current_score = _dec(state.get("current_score"))
        self.queue = list(state.get("queue", []))
        self.scan = list(state.get("scan", []))
        self.n_restarts = int(state.get("n_restarts", 0))
