"""Optuna samplers as nasforge strategies (``optuna-tpe``, ``optuna-nsga2``).

Every nasforge space is an ordered tuple of categorical choices, so it maps onto
Optuna one-to-one: choice ``name`` becomes a ``CategoricalDistribution`` over the
*indices* of its options (indices are always JSON-able and unambiguous, and Optuna's
categorical kernels only ever see indices anyway). The adapter drives an in-memory
study through ``study.ask(fixed_distributions)`` / ``study.tell``; Optuna itself is
not re-implemented.

Duplicates: when Optuna proposes an architecture that was already told, the trial is
told the known value and Optuna is asked again (``max_retries`` times, then a random
unseen architecture is enqueued), so a table or a training run is never queried twice.

Resumability: Optuna samplers hold a ``numpy.random.RandomState`` and are not JSON.
The study is not saved: each ask notes with its trial (``Suggestion.note``) the Optuna
trials it made (params, the values told to duplicates, system attrs: NSGA-II keeps its
generations there), the study system attrs it set (NSGA-II's parent cache) and the tell
count; :meth:`OptunaStrategy.rebuild` replays asks and tells in the order they happened
and recreates the same study with ``study.add_trial``. The saved state holds the number
of asks and the asks still out. (A state saved before run format 2 holds the whole study
and still loads.) To make the continuation *exactly* the uninterrupted run, the sampler's random
generators are re-seeded before every ask from ``(seed, ask number)`` instead of running
one seeded stream (a sampler without the ``LazyRandomState`` generators Optuna uses
today is rebuilt per ask instead, which is correct but loses its search-space cache).
Trade-off: the adapter's random stream differs from ``TPESampler(seed=s)`` driven
directly (statistically the same algorithm, not the same draws).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.spaces.base import Arch, SearchSpace
from nasforge.strategies import register
from nasforge.strategies.base import Past, Strategy, Suggestion, interleaved
from nasforge.strategies.local_search import sample_unseen


def _optuna() -> Any:
    import optuna  # deferred: importing optuna costs ~0.5 s

    return optuna


def space_distributions(space: SearchSpace) -> dict[str, Any]:
    """Choice name -> ``CategoricalDistribution`` over the option indices of that choice."""
    cd = _optuna().distributions.CategoricalDistribution
    return {c.name: cd(tuple(range(len(c.options)))) for c in space.choices()}


def arch_to_params(space: SearchSpace, arch: Arch) -> dict[str, int]:
    """The Optuna params (option indices) of ``arch``."""
    d = arch.as_dict()
    return {c.name: _index(c.options, d[c.name]) for c in space.choices()}


def params_to_arch(space: SearchSpace, params: dict[str, Any]) -> Arch:
    """The (canonical) arch that Optuna params (option indices) describe."""
    return space.make([c.options[int(params[c.name])] for c in space.choices()])


def _index(options: Sequence[Any], value: Any) -> int:
    for i, o in enumerate(options):  # bools only match bools (True == 1 in Python)
        if o == value and isinstance(o, bool) == isinstance(value, bool):
            return i
    raise NasforgeError(f"value {value!r} is not one of the options {list(options)}")


def _sampler_rngs(sampler: Any) -> list[np.random.RandomState]:
    """The random generators inside an Optuna sampler, in a fixed order (shared ones once).

    Optuna keeps them in ``LazyRandomState`` objects held by the sampler and by its
    helpers (NSGA-II's child-generation strategy, the inner RandomSampler).
    """
    from optuna.samplers._lazy_random_state import LazyRandomState

    found: dict[int, np.random.RandomState] = {}
    visited: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        if id(obj) in visited or depth > 3:
            return
        visited.add(id(obj))
        for v in vars(obj).values():
            if isinstance(v, LazyRandomState):
                found.setdefault(id(v), v.rng)
            elif isinstance(v, np.random.RandomState):
                found.setdefault(id(v), v)
            elif type(v).__module__.startswith("optuna") and hasattr(v, "__dict__"):
                visit(v, depth + 1)

    visit(sampler, 0)
    return list(found.values())


_NONE = object()  # "no such key" (None is a value)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError):
            continue
        out[k] = v
    return out


class OptunaStrategy(Strategy):
    """Base of the Optuna-backed strategies: subclasses say which sampler to build."""

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        metric: str = "val_accuracy",
        mode: str = "max",
        metrics: Sequence[str] | str | None = None,
        directions: Sequence[str] | str | None = None,
        sampler_options: dict[str, Any] | None = None,
        max_retries: int = 10,
        quiet: bool = True,
    ) -> None:
        super().__init__(space, seed, metric, mode)
        optuna = _optuna()
        if quiet:  # one INFO line per trial would drown the search's own output
            optuna.logging.set_verbosity(optuna.logging.WARNING)
        if isinstance(metrics, str):
            metrics = [m.strip() for m in metrics.split(",") if m.strip()]
        if isinstance(directions, str):
            directions = [d.strip() for d in directions.split(",") if d.strip()]
        self.metrics = list(metrics) if metrics else None
        if self.metrics is None:
            if directions and len(directions) != 1:
                raise NasforgeError("directions needs one entry per metric; pass metrics=... too")
            self.directions = ["maximize"]  # the single objective is self.score(): larger is better
        else:
            self.directions = list(directions or ["maximize"] * len(self.metrics))
            if len(self.directions) != len(self.metrics):
                raise NasforgeError(
                    f"{len(self.metrics)} metrics but {len(self.directions)} directions; "
                    "give one direction (maximize/minimize) per metric"
                )
        bad = [d for d in self.directions if d not in ("maximize", "minimize")]
        if bad:
            raise NasforgeError(f"directions must be 'maximize' or 'minimize', not {bad}")
        self.sampler_options = dict(sampler_options or {})
        self.max_retries = int(max_retries)
        self.dists = space_distributions(space)
        self.n_asks = 0
        self.known: dict[str, list[float] | None] = {}  # told arch -> values (None: failed)
        self.pending: dict[str, list[int]] = {}  # asked arch -> running trial numbers
        self._sampler(0)  # fail early on bad sampler options
        self.study = self._new_study()

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "metrics": self.metrics,
            "directions": self.directions,
            "sampler_options": self.sampler_options,
        }

    # -- to be provided by subclasses -------------------------------------------------------
    def _make_sampler(self, seed: int, **options: Any) -> Any:
        raise NotImplementedError

    def _ask_seed(self, n: int) -> int:
        return int(np.random.SeedSequence([self.seed, n]).generate_state(1)[0])

    def _seed_sampler(self, n: int) -> None:
        """Re-seed (or, failing that, rebuild) the sampler for ask ``n``: exact resumes."""
        rngs = _sampler_rngs(self.study.sampler)
        if not rngs:
            self.study.sampler = self._sampler(n)
            return
        states = np.random.SeedSequence([self.seed, n]).generate_state(len(rngs))
        for rng, s in zip(rngs, states, strict=True):
            rng.seed(int(s))

    def _sampler(self, n: int) -> Any:
        """A new sampler seeded from (seed, n)."""
        s = self._ask_seed(n)
        try:
            with warnings.catch_warnings():  # e.g. "multivariate is experimental", once per ask
                warnings.simplefilter("ignore", _optuna().exceptions.ExperimentalWarning)
                return self._make_sampler(s, **self.sampler_options)
        except (TypeError, ValueError) as e:
            raise NasforgeError(
                f"{self.name}: bad sampler_options {self.sampler_options}: {e}"
            ) from None

    def _new_study(self) -> Any:
        optuna = _optuna()
        return optuna.create_study(directions=self.directions, sampler=self._sampler(0))

    # -- ask/tell ----------------------------------------------------------------------------
    def _values(self, result: Result) -> list[float] | None:
        """Objective values of a result, or None when it failed / lacks a metric."""
        if self.metrics is None:
            s = self.score(result)
            return [s] if math.isfinite(s) else None
        if not result.ok:
            return None
        vals = []
        for m in self.metrics:
            v = result.metrics.get(m)
            if v is None or not math.isfinite(float(v)):
                return None
            vals.append(float(v))
        return vals

    def _tell_trial(self, number: int, values: list[float] | None) -> None:
        state = _optuna().trial.TrialState
        if values is None:
            self.study.tell(number, state=state.FAIL)
        else:
            self.study.tell(number, values)

    def ask(self) -> Suggestion:
        arch: Arch | None = None
        storage, sid = self.study._storage, self.study._study_id
        attrs_before = dict(storage.get_study_system_attrs(sid))
        made: list[dict[str, Any]] = []  # the Optuna trials of this ask, for the note
        names = list(self.dists)
        for attempt in range(self.max_retries + 1):
            if attempt == self.max_retries:  # Optuna keeps repeating itself: enqueue a new arch
                seen = set(self.known) | set(self.pending)
                fresh = sample_unseen(self.space, self.rng, seen)
                self.study.enqueue_trial(arch_to_params(self.space, fresh))
            self._seed_sampler(self.n_asks)
            self.n_asks += 1
            trial = self.study.ask(self.dists)
            arch = params_to_arch(self.space, trial.params)
            rec: dict[str, Any] = {"p": [int(trial.params[k]) for k in names]}
            attrs = _jsonable(dict(storage.get_trial_system_attrs(trial._trial_id)))
            if attrs:
                rec["a"] = attrs
            made.append(rec)
            if attempt < self.max_retries:
                if arch.text in self.known:  # tell Optuna what it already knows, ask again
                    rec["v"] = self.known[arch.text]
                    self._tell_trial(trial.number, self.known[arch.text])
                    continue
                if arch.text in self.pending:  # being evaluated: no value to tell yet
                    rec["v"] = None
                    self._tell_trial(trial.number, None)
                    continue
            self.pending.setdefault(arch.text, []).append(trial.number)
            break
        assert arch is not None
        note: dict[str, Any] = {"t": self.n_told, "trials": made}
        attrs_after = storage.get_study_system_attrs(sid)
        changed = {k: v for k, v in attrs_after.items() if attrs_before.get(k, _NONE) != v}
        if changed:
            note["study"] = _jsonable(changed)
        return Suggestion(arch, note=note)

    def _tell(self, suggestion: Suggestion, result: Result) -> None:
        text = suggestion.arch.text
        values = self._values(result)
        numbers = self.pending.get(text)
        if numbers:
            self._tell_trial(numbers.pop(0), values)
            if not numbers:
                del self.pending[text]
        else:  # a suggestion this study did not make (e.g. seeded by the user): record it
            optuna = _optuna()
            st = optuna.trial.TrialState
            self.study.add_trial(
                optuna.trial.create_trial(
                    state=st.FAIL if values is None else st.COMPLETE,
                    values=values,
                    params=arch_to_params(self.space, suggestion.arch),
                    distributions=self.dists,
                )
            )
        if text not in self.known or values is not None:
            self.known[text] = values

    # -- persistence -------------------------------------------------------------------------
    def rebuild(self, asked: Sequence[Past], told: Sequence[Past]) -> None:
        """The study, trial for trial, from the asks' notes and the tells, replayed in the
        order they happened; ``known`` from the tells."""
        optuna = _optuna()
        st = optuna.trial.TrialState
        names = list(self.dists)
        specs: list[list[Any]] = []  # [params, state, values, system attrs], by trial number
        open_: dict[str, list[int]] = {}  # arch -> numbers of its running trials
        study_attrs: dict[str, Any] = {}
        self.known = {}
        for kind, p in interleaved(asked, told):
            text = p.suggestion.arch.text
            if kind == "ask":
                made = (p.suggestion.note or {}).get("trials") or []
                for j, t in enumerate(made):
                    params = dict(zip(names, (int(x) for x in t["p"]), strict=True))
                    if j == len(made) - 1:  # the trial handed out: told later
                        specs.append([params, st.RUNNING, None, t.get("a") or {}])
                    else:  # a duplicate, told at once
                        v = t.get("v")
                        specs.append([params, st.FAIL if v is None else st.COMPLETE,
                                      None if v is None else [float(x) for x in v],
                                      t.get("a") or {}])
                if made:
                    open_.setdefault(text, []).append(len(specs) - 1)
                study_attrs.update((p.suggestion.note or {}).get("study") or {})
                continue
            values = self._values(p.result)  # type: ignore[arg-type]
            state = st.FAIL if values is None else st.COMPLETE
            numbers = open_.get(text)
            if numbers:
                specs[numbers.pop(0)][1:3] = [state, values]
                if not numbers:
                    del open_[text]
            else:  # told without an ask of ours: added at tell time, as _tell does
                specs.append([arch_to_params(self.space, p.suggestion.arch), state, values, {}])
            if text not in self.known or values is not None:
                self.known[text] = values
        self.study = self._new_study()
        for params, state, values, attrs in specs:
            self.study.add_trial(optuna.trial.create_trial(
                state=state, values=values if state == st.COMPLETE else None, params=params,
                distributions={k: self.dists[k] for k in params}, system_attrs=dict(attrs)))
        storage, sid = self.study._storage, self.study._study_id
        for k, v in study_attrs.items():
            storage.set_study_system_attr(sid, k, v)
        self.pending = open_

    def _state(self) -> dict[str, Any]:
        return {
            "n_asks": self.n_asks,
            "pending": [[t, list(ns)] for t, ns in self.pending.items()],
        }

    def _history_state(self) -> dict[str, Any]:
        trials = []
        for t in self.study.get_trials(deepcopy=False):
            trials.append(
                {
                    "params": {k: int(v) for k, v in t.params.items()},
                    "state": t.state.name,
                    "values": None if t.values is None else [float(v) for v in t.values],
                    "system_attrs": _jsonable(dict(t.system_attrs)),
                }
            )
        study_attrs = self.study._storage.get_study_system_attrs(self.study._study_id)
        return {
            "trials": trials,
            "study_system_attrs": _jsonable(dict(study_attrs)),
            "known": [[t, v] for t, v in self.known.items()],
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        if "trials" in state:  # a state from before run format 2: the whole study
            self._load_study(state)
        self.n_asks = int(state.get("n_asks", 0))
        self.pending = {t: [int(n) for n in ns] for t, ns in state.get("pending", [])}

    def _load_study(self, state: dict[str, Any]) -> None:
        optuna = _optuna()
        st = optuna.trial.TrialState
        self.study = self._new_study()
        for t in state.get("trials", []):
            s = st[t["state"]]
            if s == st.WAITING:
                continue
            self.study.add_trial(
                optuna.trial.create_trial(
                    state=s,
                    values=t["values"] if s == st.COMPLETE else None,
                    params=dict(t["params"]),
                    distributions={k: self.dists[k] for k in t["params"]},
                    system_attrs=dict(t.get("system_attrs") or {}),
                )
            )
        # NSGA-II caches parent populations (by trial id) here; ids match after the replay
        storage, sid = self.study._storage, self.study._study_id
        for k, v in (state.get("study_system_attrs") or {}).items():
            storage.set_study_system_attr(sid, k, v)
        self.known = {
            t: (None if v is None else [float(x) for x in v]) for t, v in state.get("known", [])
        }


@register("optuna-tpe")
class OptunaTPE(OptunaStrategy):
    """Optuna's TPESampler (seeded) through the ask/tell adapter; duplicates never re-queried."""

    def _make_sampler(self, seed: int, **options: Any) -> Any:
        return _optuna().samplers.TPESampler(seed=seed, **options)


@register("optuna-nsga2")
class OptunaNSGA2(OptunaStrategy):
    """Optuna's NSGAIISampler; multi-objective with ``metrics=[...]`` and ``directions=[...]``."""

    def _make_sampler(self, seed: int, **options: Any) -> Any:
        return _optuna().samplers.NSGAIISampler(seed=seed, **options)
