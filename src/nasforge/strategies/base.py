"""Search-strategy interface: what to try next, in ask/tell form (as in Optuna).

A strategy never evaluates anything itself. The experiment loop calls :meth:`ask`
for the next :class:`Suggestion` (several may be outstanding at once when workers run
in parallel), evaluates it, and calls :meth:`tell` with the result. The whole state,
the random generator included, serializes to JSON with :meth:`state_dict`, so a
search resumed from a checkpoint makes exactly the queries it would have made.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.spaces.base import Arch, SearchSpace


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

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.arch.text, "fidelity": self.fidelity}

    @classmethod
    def from_json(cls, d: dict[str, Any], space: SearchSpace) -> Suggestion:
        return cls(space.parse(d["arch"]), d.get("fidelity"))


class Strategy(ABC):
    """Base class of search strategies.

    ``metric`` names the result metric to optimize and ``mode`` says whether larger
    (``"max"``) or smaller (``"min"``) is better; failed results score ``-inf``.
    Subclasses implement :meth:`ask`, :meth:`_tell`, and :meth:`_state` /
    :meth:`_load_state` for whatever they keep beyond the random generator.
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
        """JSON-serializable state: enough to continue exactly where the strategy stopped."""
        return {
            "strategy": self.name,
            "seed": self.seed,
            "n_told": self.n_told,
            "rng": self.rng.bit_generator.state,
            "n_known_used": self.n_known_used,
            "own": self._state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`. The state comes from a file, so it is untrusted: a
        malformed one is a :class:`~nasforge.errors.RunDirError`, never a KeyError."""
        from nasforge.errors import RunDirError

        if not isinstance(state, dict):
            raise RunDirError(f"the saved {self.name} strategy state is not an object")
        if state.get("strategy", self.name) != self.name:
            raise NasforgeError(
                f"saved state is for strategy {state.get('strategy')!r}, not {self.name!r}"
            )
        try:
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

    def _state(self) -> dict[str, Any]:
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
