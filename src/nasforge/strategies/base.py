"""Search-strategy interface: what to try next, in ask/tell form (as in Optuna).

A strategy never evaluates anything itself. The experiment loop calls :meth:`ask`
for the next :class:`Suggestion` (several may be outstanding at once when workers run
in parallel), evaluates it, and calls :meth:`tell` with the result.

Persistence is in two parts, so that what is saved after every step does not grow with
the run: :meth:`state_dict` holds only O(1) data (counters, the random generator, a
bounded population, the asks still out), and everything that grows with the run (what
was seen, told scores, an Optuna study) is rebuilt by :meth:`rebuild` from the run's
trials, which the store keeps anyway, in the order they were asked and told. A strategy
can ask the store to keep a small JSON note with a trial (``Suggestion.note``) for what
the trials alone do not show. A search resumed from ``load_state_dict(state, trials)``
makes exactly the queries it would have made.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.spaces.base import Arch, SearchSpace

if TYPE_CHECKING:
    from nasforge.store import TrialRecord

#: ``state_dict()["history"]`` of a state whose history lives in the run's trials; a state
#: without it (written before run format 2) holds the whole history itself
HISTORY_IN_TRIALS = "trials"


def check_flag(name: str, value: Any) -> bool:
    """``value`` if it is a bool, else a clear error.

    ``--strategy-opt skip_equivalent=false`` arrives as ``False``; a typo such as ``=flase``
    arrives as a string, which ``bool()`` would silently read as true.
    """
    if not isinstance(value, bool | np.bool_):
        raise NasforgeError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def check_seed(value: Any) -> int:
    """A non-negative integer seed (``--strategy-opt seed=abc`` is the user's error)."""
    ok = isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)
    if not ok or value < 0:
        raise NasforgeError(f"seed must be a non-negative integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class Suggestion:
    """An architecture to evaluate, and at which fidelity (None: the estimator's default)."""

    arch: Arch
    fidelity: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    #: JSON the strategy wants stored with this trial (once, not in every saved state) for
    #: its :meth:`Strategy.rebuild`; None for most asks
    note: dict[str, Any] | None = field(default=None, hash=False, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.arch.text, "fidelity": self.fidelity}

    @classmethod
    def from_json(cls, d: dict[str, Any], space: SearchSpace) -> Suggestion:
        return cls(space.parse(d["arch"]), d.get("fidelity"))


@dataclass(frozen=True)
class Past:
    """One trial of the run as the strategy saw it, for :meth:`Strategy.rebuild`."""

    suggestion: Suggestion  # as asked, with its note
    result: Result | None  # as told (None: asked, not told yet)


class Strategy(ABC):
    """Base class of search strategies.

    ``metric`` names the result metric to optimize and ``mode`` says whether larger
    (``"max"``) or smaller (``"min"``) is better; failed results score ``-inf``.
    Subclasses implement :meth:`ask`, :meth:`_tell`, :meth:`_state` / :meth:`_load_state`
    for the O(1) data they keep beyond the random generator, and :meth:`rebuild` for the
    rest (the default replays :meth:`_tell`).
    """

    name: str = "strategy"
    #: declared capabilities the loop reads (never probed by name): the objectives a
    #: multi-objective strategy optimizes (None: the single ``metric``/``mode``), and the
    #: fidelity key a multi-fidelity strategy grows (None: every trial at one fidelity)
    objectives: list[Any] | None = None
    resource: str | None = None

    def __init__(
        self, space: SearchSpace, seed: int = 0, metric: str = "val_accuracy", mode: str = "max"
    ) -> None:
        if mode not in ("max", "min"):
            raise NasforgeError(f"mode must be 'max' or 'min', not {mode!r}")
        self.space = space
        self.seed = check_seed(seed)
        self.metric = metric
        self.mode = mode
        self.rng = np.random.default_rng(self.seed)
        self.n_told = 0
        #: the space's known-good designs, tried before random samples (``warm_start``)
        self.warm_start = True
        self._known = [a.text for a in space.known_good()]
        self.n_known_used = 0
        #: loaded from a state that holds the whole history (a run from before format 2):
        #: keep writing that format, whose history the run's trials cannot replace
        self._full_state = False

    def order_known_for(self, n_examples: int) -> None:
        """Try the space's known-good designs in its order for a data set of
        ``n_examples`` (:meth:`~nasforge.spaces.base.SearchSpace.known_good_for`); called
        before the first ``ask`` (and before a resumed state is loaded, which keeps only
        how many were used)."""
        self._known = [a.text for a in self.space.known_good_for(int(n_examples))]

    # -- the interface -----------------------------------------------------------------
    @abstractmethod
    def ask(self) -> Suggestion:
        """The next architecture (and fidelity) to evaluate."""

    def tell(self, suggestion: Suggestion, result: Result) -> None:
        """Report the result of evaluating ``suggestion``."""
        self.n_told += 1
        self._tell(suggestion, result)

    @abstractmethod
    def _tell(self, suggestion: Suggestion, result: Result) -> None: ...

    def score(self, result: Result) -> float:
        """The result as one number where larger is better (``-inf`` if failed/missing)."""
        if not result.ok or self.metric not in result.metrics:
            return -math.inf
        v = float(result.metrics[self.metric])
        if not math.isfinite(v):
            return -math.inf
        return v if self.mode == "max" else -v

    # -- persistence ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable O(1) state; with the run's trials (:meth:`rebuild`) enough to
        continue exactly where the strategy stopped."""
        own = self._state()
        if self._full_state:
            own = {**own, **self._history_state()}
        out = {
            "strategy": self.name,
            "seed": self.seed,
            "n_told": self.n_told,
            "rng": self.rng.bit_generator.state,
            "n_known_used": self.n_known_used,
            "own": own,
        }
        if not self._full_state:
            out["history"] = HISTORY_IN_TRIALS
        return out

    def load_state_dict(self, state: dict[str, Any],
                        trials: Sequence[TrialRecord] | None = None) -> None:
        """Restore a :meth:`state_dict` on a fresh strategy, rebuilding its history from the
        run's ``trials`` (:meth:`~nasforge.store.RunStore.trials`, or a :class:`History`);
        without them the strategy continues as if nothing had been told before.

        The state comes from a file, so it is untrusted: a malformed one is a
        :class:`~nasforge.errors.RunDirError`, never a KeyError."""
        self._restore(state, None if trials is None else self.past(trials))

    def _restore(self, state: dict[str, Any],
                 past: tuple[list[Past], list[Past]] | None) -> None:
        """:meth:`load_state_dict` with the trials already read (wrappers hand on theirs)."""
        from nasforge.errors import RunDirError

        if not isinstance(state, dict):
            raise RunDirError(f"the saved {self.name} strategy state is not an object")
        if state.get("strategy", self.name) != self.name:
            raise NasforgeError(
                f"saved state is for strategy {state.get('strategy')!r}, not {self.name!r}"
            )
        in_trials = state.get("history") == HISTORY_IN_TRIALS
        try:
            # first the history, then the O(1) state over it (a replay of tells may move
            # counters, the generator or a population: the saved ones are what counts)
            if in_trials and past is not None:
                self.rebuild(*past)
            self._full_state = not in_trials
            self.rng.bit_generator.state = state["rng"]
            self.n_told = int(state.get("n_told", 0))
            # a state saved before warm starts existed: the run started from random samples
            self.n_known_used = int(state.get("n_known_used", len(self._known)))
            self._load_state(state.get("own") or {})
        except NasforgeError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise RunDirError(
                f"the saved {self.name} strategy state is damaged ({type(e).__name__}: "
                f"{str(e)[:200]}); start a new run with another --out directory"
            ) from None

    def past(self, trials: Sequence[TrialRecord]) -> tuple[list[Past], list[Past]]:
        """The trials as ``(asked, told)``: all in ask (id) order, and the finished ones in
        the order they were told (trials of a format-1 run: in ``finished_at`` order)."""
        asked: list[Past] = []
        done: list[tuple[int, float, int, Past]] = []
        for r in sorted(trials, key=lambda t: t.id):
            res = None if not r.done else Result(
                dict(r.metrics), float(r.cost or 0.0), r.status, r.error)  # type: ignore[arg-type]
            p = Past(Suggestion(self._arch(r.arch), r.fidelity, r.note), res)
            asked.append(p)
            if res is not None:
                first = -1 if r.told is None else int(r.told)
                done.append((first, float(r.finished_at or 0.0), r.id, p))
        done.sort(key=lambda d: d[:3])
        return asked, [d[3] for d in done]

    def rebuild(self, asked: Sequence[Past], told: Sequence[Past]) -> None:
        """Rebuild what grows with the run from its trials: ``asked`` in ask order (running
        ones have no result), ``told`` in the order they were told. Called on a fresh
        strategy, before the O(1) state is loaded over it; the default replays ``_tell``."""
        for p in told:
            assert p.result is not None
            self._tell(p.suggestion, p.result)

    def _state(self) -> dict[str, Any]:
        """The O(1) part of the strategy's own state (all of it if :meth:`rebuild` is the
        default replay and ``_tell`` keeps nothing that grows)."""
        return {}

    def _history_state(self) -> dict[str, Any]:
        """What :meth:`rebuild` restores, in the state format of runs before format 2: only
        written for a strategy resumed from such a state."""
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        pass

    def config(self) -> dict[str, Any]:
        """Constructor arguments (besides space), stored with a run."""
        return {"seed": self.seed, "metric": self.metric, "mode": self.mode}

    # -- helpers for subclasses ----------------------------------------------------------
    def _arch(self, text: str) -> Arch:
        return self.space.parse(text)

    def next_known(self, seen: Any = ()) -> Arch | None:
        """The next of the space's known-good designs not in ``seen`` (archs or texts), or
        None once they are used up (or ``warm_start`` is off).

        Strategies call this where they would draw a random initial architecture: a
        search then starts from what a practitioner would write (and can only improve on
        it), not from random chains that are mostly far worse.
        """
        while self.warm_start and self.n_known_used < len(self._known):
            text = self._known[self.n_known_used]
            self.n_known_used += 1
            arch = self._arch(text)
            if arch not in seen and text not in seen:
                return arch
        return None

    def _set_warm_start(self, value: Any) -> None:
        self.warm_start = check_flag(f"{self.name}: warm_start", value)


class History:
    """A search's asks and tells kept in memory as the run store keeps them, so that a
    loop without a store (a custom one, a test) can still restore a strategy exactly:
    ``fresh.load_state_dict(state, history.trials)``. :meth:`watch` records a strategy's
    own asks and tells."""

    def __init__(self) -> None:
        self.trials: list[TrialRecord] = []
        self.n_told = 0

    def watch(self, strategy: Strategy) -> Strategy:
        """Record every ask and tell of ``strategy`` from now on (returns it)."""
        ask, tell = strategy.ask, strategy.tell

        def asked() -> Suggestion:
            s = ask()
            self.asked(s)
            return s

        def told(s: Suggestion, r: Result) -> None:
            tell(s, r)
            self.told(s, r)

        strategy.ask, strategy.tell = asked, told  # type: ignore[method-assign]
        return strategy

    def asked(self, s: Suggestion) -> None:
        import json

        from nasforge.store import TrialRecord, _dumps

        note = None if s.note is None else json.loads(_dumps(s.note))  # as the store has it
        self.trials.append(TrialRecord(len(self.trials) + 1, s.arch.text, s.fidelity, "running",
                                       note=note))

    def told(self, s: Suggestion, r: Result) -> None:
        """The result of the earliest running trial of the same arch and fidelity."""
        for t in self.trials:
            if t.status == "running" and t.arch == s.arch.text and t.fidelity == s.fidelity:
                self.n_told += 1
                t.status = "ok" if r.ok else "failed"
                t.metrics, t.cost, t.error = dict(r.metrics), r.cost, r.error
                t.told = self.n_told
                return
        raise NasforgeError(f"told {s.arch.text} that was never asked")


def interleaved(asked: Sequence[Past], told: Sequence[Past]) -> Iterator[tuple[str, Past]]:
    """``("ask", p)`` and ``("tell", p)`` in the order they happened, for a rebuild that
    must replay the two together: the asks whose note holds ``"t"`` (the tell count when
    they were made) among all tells. Asks without it are left out."""
    noted = [p for p in asked if (p.suggestion.note or {}).get("t") is not None]
    j = 0
    for k, p in enumerate(told, 1):
        while j < len(noted) and int(noted[j].suggestion.note["t"]) < k:  # type: ignore[index]
            yield "ask", noted[j]
            j += 1
        yield "tell", p
    for p in noted[j:]:
        yield "ask", p
