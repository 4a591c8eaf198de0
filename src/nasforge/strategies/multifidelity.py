"""Multi-fidelity search: successive halving, Hyperband (Li et al. 2018), BOHB (Falkner 2018).

Most candidates are judged on a small budget (few epochs or a fraction of the data) and
only the best ``1/eta`` of each *rung* is promoted to ``eta`` times the budget, up to
``max_resource``. Budgets reach the estimator through ``Suggestion.fidelity``
(``{"epochs": 3}`` or ``{"data_fraction": 0.33}``, plus any fixed ``fidelity`` keys).

Schedule (Hyperband paper, with ``R = max_resource / min_resource``):
``s_max = floor(log_eta R)``; bracket ``s`` (``s_max`` down to 0) starts
``n = ceil((s_max + 1) / (s + 1) * eta**s)`` configurations at
``r = max_resource * eta**-s`` and its rung ``i`` keeps ``floor(n * eta**-i)`` of them at
``r * eta**i``. Successive halving is the single most aggressive bracket, repeated.

Asynchrony — the choice made here: promotions are *synchronous per rung* (a rung is
promoted only when all its results are in, exactly as in the papers, so a sequential
run is the textbook algorithm and promotions never depend on timing). When an ask comes
while every open bracket is waiting for results, the next bracket of the cycle is
opened instead (as HpBandSter runs BOHB iterations concurrently), so workers never idle.
ASHA-style early promotion was not used because it makes promotion decisions depend on
the order results arrive. The open brackets, the in-flight asks and the sampler's state
are in ``state_dict``; each ask notes its bracket, rung and member with its trial, from
which the finished brackets, the results and the seen set are rebuilt on resume, so a
resumed run asks exactly what an uninterrupted one would. An ask that is never told
stalls only its own bracket.

Failed results score ``-inf`` and are never promoted. :meth:`MultiFidelityStrategy.best`
reports the best architecture at the highest budget that has a successful result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nasforge._util import finite_or_none
from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.spaces.base import SearchSpace
from nasforge.strategies import register
from nasforge.strategies.base import Past, Strategy, Suggestion, interleaved
from nasforge.strategies.multifidelity_samplers import (
    ENUMERATE_LIMIT,
    KDESampler,
    RandomSampler,
    Sampler,
    StrategySampler,
    random_unseen,
)

#: public names, the samplers' (from :mod:`nasforge.strategies.multifidelity_samplers`)
#: included
__all__ = [
    "BOHB", "ENUMERATE_LIMIT", "Hyperband", "KDESampler", "MultiFidelityStrategy",
    "RandomSampler", "Rung", "Sampler", "StrategySampler", "SuccessiveHalving",
    "highest_fidelity_best", "hyperband_schedule", "random_unseen", "s_max",
    "successive_halving_schedule",
]  # fmt: skip

_EPS = 1e-9

Rung = tuple[int, float]  # (number of configurations, resource)


# -- schedules ---------------------------------------------------------------------------------
def _check(min_resource: float, max_resource: float, eta: float) -> None:
    if not eta > 1:
        raise NasforgeError(f"eta must be greater than 1 (3 is usual), got {eta!r}")
    if not 0 < min_resource <= max_resource:
        raise NasforgeError(
            f"need 0 < min_resource <= max_resource, got min_resource={min_resource!r}, "
            f"max_resource={max_resource!r}"
        )


def s_max(min_resource: float, max_resource: float, eta: float) -> int:
    """Number of halvings that fit between the budgets: ``floor(log_eta(max / min))``."""
    _check(min_resource, max_resource, eta)
    return int(math.floor(math.log(max_resource / min_resource) / math.log(eta) + _EPS))


def hyperband_schedule(
    min_resource: float, max_resource: float, eta: float = 3
) -> list[list[Rung]]:
    """Hyperband's brackets ``s = s_max .. 0``, each a list of rungs ``(n_i, r_i)``."""
    top = s_max(min_resource, max_resource, eta)
    out = []
    for s in range(top, -1, -1):
        n = math.ceil((top + 1) / (s + 1) * eta**s - _EPS)
        r = max_resource * eta ** (-s)
        out.append([(int(math.floor(n * eta ** (-i) + _EPS)), float(r * eta**i))
                    for i in range(s + 1)])
    return out


def successive_halving_schedule(min_resource: float, max_resource: float, eta: float = 3,
                                n_configs: int | None = None) -> list[Rung]:
    """One successive-halving bracket from ``~min_resource`` to ``max_resource``.

    ``n_configs`` (default ``eta**s_max``, so one survivor reaches the top) configurations
    start; each rung keeps ``max(1, floor(n / eta**i))``.
    """
    top = s_max(min_resource, max_resource, eta)
    n = int(round(eta**top)) if n_configs is None else int(n_configs)
    if n < 1:
        raise NasforgeError(f"n_configs must be at least 1, got {n_configs!r}")
    return [(max(1, int(math.floor(n * eta ** (-i) + _EPS))),
             float(max_resource * eta ** (i - top))) for i in range(top + 1)]


def highest_fidelity_best(records: Sequence[Any], resource: str = "epochs",
                          metric: str = "val_accuracy", mode: str = "max") -> int | None:
    """Index of the best successful record at the highest ``resource`` seen, or None.

    For the loop/report: with multi-fidelity, a 1-epoch score must not beat a 9-epoch
    one. Records are mappings (or objects) with ``fidelity`` and ``metrics``
    (and optionally ``status``); records without the resource rank lowest.
    """
    best: tuple[float, float, int] | None = None
    def get(rec: Any, key: str) -> Any:
        return rec.get(key) if isinstance(rec, Mapping) else getattr(rec, key, None)

    for i, rec in enumerate(records):
        if get(rec, "status") not in (None, "ok"):
            continue
        metrics = get(rec, "metrics") or {}
        v = finite_or_none(metrics.get(metric)) if isinstance(metrics, Mapping) else None
        if v is None:
            continue
        fid = get(rec, "fidelity") or {}
        r = float(fid.get(resource, -math.inf)) if isinstance(fid, Mapping) else -math.inf
        key = (r, v if mode == "max" else -v, -i)
        if best is None or key > best:
            best = key
    return None if best is None else -best[2]




# -- the engine ------------------------------------------------------------------------------------
def _enc(v: float | None) -> float | str | None:
    """Score to JSON: None = not told yet, "-inf" = failed."""
    if v is None or math.isfinite(v):
        return v
    return "-inf" if v < 0 else "inf"


def _dec(v: Any) -> float | None:
    return None if v is None else float(v)


_DEFAULT_RANGES = {"epochs": (1, 9), "data_fraction": (1 / 9, 1.0)}
_INTEGER_RESOURCES = {"epochs", "resolution", "steps", "batches"}


class MultiFidelityStrategy(Strategy):
    """Bracketed successive halving engine shared by ``successive-halving``, ``hyperband``
    and ``bohb`` (see the module docstring for the schedule and the asynchrony choice)."""

    def __init__(
        self,
        space: SearchSpace,
        seed: int = 0,
        metric: str = "val_accuracy",
        mode: str = "max",
        resource: str = "epochs",
        min_resource: float | None = None,
        max_resource: float | None = None,
        eta: float = 3,
        sampler: str | Sampler = "random",
        fidelity: Mapping[str, Any] | None = None,
        integer_resource: bool | None = None,
        sampler_options: Mapping[str, Any] | None = None,
        warm_start: bool = True,
    ) -> None:
        """``resource``: the fidelity key that grows (``"epochs"`` or ``"data_fraction"``,
        any key the estimator reads). ``fidelity``: fixed keys sent along with it.
        ``sampler``: ``"random"``, ``"kde"`` (BOHB's model), another strategy's name, or a
        :class:`Sampler`; ``sampler_options`` go to its constructor."""
        super().__init__(space, seed, metric, mode)
        self._set_warm_start(warm_start)  # rung 0 starts with the space's known-good designs
        if not isinstance(resource, str) or not resource:
            raise NasforgeError(
                "resource must be a fidelity key such as 'epochs' or 'data_fraction'"
            )
        lo, hi = _DEFAULT_RANGES.get(resource, (None, None))
        min_resource = lo if min_resource is None else min_resource
        max_resource = hi if max_resource is None else max_resource
        if min_resource is None or max_resource is None:
            raise NasforgeError(
                f"resource {resource!r} has no default range: pass min_resource and max_resource"
            )
        _check(float(min_resource), float(max_resource), float(eta))
        if resource == "data_fraction" and max_resource > 1:
            raise NasforgeError(f"data_fraction max_resource must be at most 1, got {max_resource}")
        self.resource = resource
        self.min_resource = float(min_resource)
        self.max_resource = float(max_resource)
        self.eta = float(eta)
        self.integer_resource = (resource in _INTEGER_RESOURCES if integer_resource is None
                                 else bool(integer_resource))
        self.fixed_fidelity = dict(fidelity or {})
        if resource in self.fixed_fidelity:
            raise NasforgeError(
                f"fidelity must not fix {resource!r}: it is the resource that grows"
            )
        self.sampler_options = dict(sampler_options or {})
        self.sampler = self._make_sampler(sampler)
        self.schedule = self._schedule()
        #: every bracket opened: {"id", "s", "current", "done", "rungs": [...]}
        self.brackets: list[dict[str, Any]] = []
        self.n_opened = 0
        #: asked but not told: [bracket id, rung, member index, arch text]
        self.in_flight: list[list[Any]] = []
        #: every tell that belonged to a bracket: (arch text, resource value, score)
        self.results: list[tuple[str, float, float]] = []
        self.seen: set[str] = set()

    # -- configuration ------------------------------------------------------------------------
    def _schedule(self) -> list[list[Rung]]:
        raise NotImplementedError

    def _make_sampler(self, spec: str | Sampler) -> Sampler:
        if isinstance(spec, Sampler):
            return spec
        if spec == "random":
            return RandomSampler()
        if spec in ("kde", "tpe"):
            return KDESampler(**self.sampler_options)
        return StrategySampler(spec, self.space, self.seed, self.metric, self.mode,
                               **self.sampler_options)

    def order_known_for(self, n_examples: int) -> None:
        """The order for these data, also for a strategy sampler's own known-good list
        (the evolution sampler of a time-budgeted job asks its inner strategy)."""
        super().order_known_for(n_examples)
        inner = getattr(self.sampler, "inner", None)
        if isinstance(inner, Strategy):
            inner.order_known_for(n_examples)

    def config(self) -> dict[str, Any]:
        return {
            **super().config(),
            "resource": self.resource,
            "min_resource": self.min_resource,
            "max_resource": self.max_resource,
            "eta": self.eta,
            "sampler": self.sampler.name,
            "fidelity": self.fixed_fidelity,
            "sampler_options": self.sampler_options,
            **({} if self.warm_start else {"warm_start": False}),
        }

    def resource_value(self, r: float) -> float | int:
        """The budget as sent to the estimator (whole epochs are rounded, at least 1)."""
        if self.integer_resource:
            return max(1, int(round(r)))
        return float(r)

    def fidelity_for(self, r: float) -> dict[str, Any]:
        return {**self.fixed_fidelity, self.resource: self.resource_value(r)}

    # -- brackets ---------------------------------------------------------------------------------
    def _new_bracket(self, bid: int) -> dict[str, Any]:
        s = bid % len(self.schedule)
        rungs = [{"n": n, "resource": r, "members": [], "scores": [], "asked": 0}
                 for n, r in self.schedule[s]]
        return {"id": bid, "s": s, "current": 0, "done": False, "rungs": rungs}

    def _open_bracket(self) -> dict[str, Any]:
        b = self._new_bracket(self.n_opened)
        self.n_opened += 1
        self.brackets.append(b)
        return b

    def _next_in(self, b: dict[str, Any]) -> Suggestion | None:
        i = b["current"]
        rung = b["rungs"][i]
        if rung["asked"] < len(rung["members"]):
            k = rung["asked"]
            text = rung["members"][k]
            arch = self._arch(text)
        elif i == 0 and len(rung["members"]) < rung["n"]:
            arch = self.sampler.sample(self)
            self.seen.add(arch.text)
            rung["members"].append(arch.text)
            rung["scores"].append(None)
            k, text = len(rung["members"]) - 1, arch.text
        else:
            return None
        rung["asked"] += 1
        self.in_flight.append([b["id"], i, k, text])
        # stored with the trial: where it belongs, and the tell count (see rebuild)
        note: dict[str, Any] = {"b": b["id"], "i": i, "k": k, "t": self.n_told}
        inner = getattr(self.sampler, "last_note", None) if i == 0 else None
        if inner is not None:
            note["inner"] = inner
            self.sampler.last_note = None  # type: ignore[attr-defined]
        return Suggestion(arch, self.fidelity_for(rung["resource"]), note)

    def _promote(self, b: dict[str, Any]) -> None:
        """Close complete rungs: keep the top ``n_(i+1)`` finite scores, or finish."""
        while not b["done"]:
            i = b["current"]
            rung = b["rungs"][i]
            complete = (len(rung["members"]) == (rung["n"] if i == 0 else len(rung["members"]))
                        and all(s is not None for s in rung["scores"]))
            if not complete:
                return
            if i + 1 >= len(b["rungs"]):
                b["done"] = True
                return
            nxt = b["rungs"][i + 1]
            ok = [k for k, s in enumerate(rung["scores"]) if s is not None and math.isfinite(s)]
            ok.sort(key=lambda k: (-rung["scores"][k], k))
            keep = ok[: nxt["n"]]
            if not keep:
                b["done"] = True
                return
            nxt["members"] = [rung["members"][k] for k in keep]
            nxt["scores"] = [None] * len(keep)
            b["current"] = i + 1

    def _by_id(self, bid: int) -> dict[str, Any] | None:
        for b in reversed(self.brackets):  # the open ones are the latest
            if b["id"] == bid:
                return b
        return None

    # -- ask / tell -------------------------------------------------------------------------------
    def ask(self) -> Suggestion:
        for b in self.brackets:
            if not b["done"]:
                sug = self._next_in(b)
                if sug is not None:
                    return sug
        sug = self._next_in(self._open_bracket())
        assert sug is not None  # a fresh bracket always has rung-0 work
        return sug

    def _match(self, suggestion: Suggestion,
               by_id: Callable[[int], dict[str, Any] | None]) -> int | None:
        """The position in ``in_flight`` of the ask that ``suggestion`` answers, or None."""
        text = suggestion.arch.text
        want = (suggestion.fidelity or {}).get(self.resource)
        for pos, (bid, i, _k, t) in enumerate(self.in_flight):
            if t != text:
                continue
            b = by_id(bid)
            r = self.resource_value(b["rungs"][i]["resource"]) if b else None
            if want is None or r == want:
                return pos
        return None

    def _tell(self, suggestion: Suggestion, result: Result) -> None:
        match = self._match(suggestion, self._by_id)
        if match is None:
            return  # not one of ours (e.g. a seeded or repeated trial): nothing to book
        bid, i, k, _ = self.in_flight.pop(match)
        b = self._by_id(bid)
        assert b is not None
        rung = b["rungs"][i]
        score = self.score(result)
        rung["scores"][k] = score
        self.results.append((suggestion.arch.text, float(rung["resource"]), score))
        self.sampler.observe(self, suggestion, result, i)
        self._promote(b)

    def rebuild(self, asked: Sequence[Past], told: Sequence[Past]) -> None:
        """Brackets, results and seen from the trials' notes (bracket, rung, member, tell
        count): asks and tells are replayed in the order they happened, tells matched to
        asks as :meth:`_tell` matches them. Brackets still open are in the saved state and
        replace the rebuilt ones; the sampler gets its own asks and tells."""
        brackets: dict[int, dict[str, Any]] = {}
        self.in_flight, self.results, self.seen = [], [], set()
        inner_asked: list[Past] = []
        inner_told: list[Past] = []
        for kind, p in interleaved(asked, told):
            note, text = p.suggestion.note or {}, p.suggestion.arch.text
            if kind == "ask":
                if "b" not in note:
                    continue
                bid, i, k = int(note["b"]), int(note["i"]), int(note["k"])
                b = brackets.setdefault(bid, {**self._new_bracket(bid), "done": True})
                rung = b["rungs"][i]
                while len(rung["members"]) <= k:
                    rung["members"].append(None)
                    rung["scores"].append(None)
                rung["members"][k] = text
                rung["asked"] += 1
                b["current"] = max(b["current"], i)
                self.in_flight.append([bid, i, k, text])
                if i == 0:
                    self.seen.add(text)
                    inner_asked.append(Past(Suggestion(p.suggestion.arch, None,
                                                       note.get("inner")), None))
                continue
            match = self._match(p.suggestion, brackets.get)
            if match is None:
                continue
            bid, i, k, _ = self.in_flight.pop(match)
            rung = brackets[bid]["rungs"][i]
            score = self.score(p.result)  # type: ignore[arg-type]
            rung["scores"][k] = score
            self.results.append((text, float(rung["resource"]), score))
            if i == 0:
                inner_told.append(p)
        self.brackets = [brackets[bid] for bid in sorted(brackets)]
        if isinstance(self.sampler, StrategySampler):
            self.sampler.past = (inner_asked, inner_told)

    # -- results -----------------------------------------------------------------------------------
    def best(self) -> dict[str, Any] | None:
        """Best arch at the highest budget with a successful result.

        ``{"arch": Arch, "fidelity": {...}, "value": metric value, "score": larger-better}``.
        """
        top: tuple[float, float, int] | None = None
        for idx, (_t, r, s) in enumerate(self.results):
            if math.isfinite(s) and (top is None or (r, s, -idx) > top):
                top = (r, s, -idx)
        if top is None:
            return None
        text, r, s = self.results[-top[2]]
        return {"arch": self._arch(text), "fidelity": self.fidelity_for(r),
                "value": s if self.mode == "max" else -s, "score": s}

    def rung_summary(self) -> list[list[tuple[float | int, int, int]]]:
        """Per bracket, per rung: (budget, members so far, results in) — for reports/tests."""
        return [[(self.resource_value(r["resource"]), len(r["members"]),
                  sum(s is not None for s in r["scores"])) for r in b["rungs"]]
                for b in self.brackets]

    # -- persistence -------------------------------------------------------------------------------
    @staticmethod
    def _brackets_json(brackets: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for b in brackets:
            rungs = [{**r, "scores": [_enc(s) for s in r["scores"]]} for r in b["rungs"]]
            out.append({**b, "rungs": rungs})
        return out

    def _state(self) -> dict[str, Any]:
        return {  # only the open brackets: the finished ones are rebuilt from the trials
            "schedule": [[list(x) for x in br] for br in self.schedule],
            "brackets": self._brackets_json([b for b in self.brackets if not b["done"]]),
            "n_opened": self.n_opened,
            "in_flight": [list(x) for x in self.in_flight],
            "sampler": self.sampler.state(),
        }

    def _history_state(self) -> dict[str, Any]:
        return {
            "brackets": self._brackets_json(self.brackets),
            "results": [[t, r, _enc(s)] for t, r, s in self.results],
            "seen": sorted(self.seen),
        }

    def _load_state(self, state: dict[str, Any]) -> None:
        saved = state.get("schedule")
        if saved is not None and saved != [[list(x) for x in br] for br in self.schedule]:
            raise NasforgeError(
                "saved multi-fidelity state has another bracket schedule; resume with the same "
                "min_resource, max_resource and eta"
            )
        saved = []
        for b in state.get("brackets", []):
            rungs = [{**r, "scores": [_dec(s) for s in r["scores"]]} for r in b["rungs"]]
            saved.append({**b, "rungs": rungs})
        ids = {b["id"] for b in saved}  # saved brackets replace the rebuilt ones
        self.brackets = sorted([b for b in self.brackets if b["id"] not in ids] + saved,
                               key=lambda b: b["id"])
        self.n_opened = int(state.get("n_opened", 0))
        self.in_flight = [list(x) for x in state.get("in_flight", [])]
        if "results" in state:  # a state from before run format 2
            self.results = [(str(t), float(r), float(_dec(s))) for t, r, s in state["results"]]
            self.seen = set(state.get("seen", []))
        self.sampler.load_state(state.get("sampler") or {})


@register("successive-halving")
class SuccessiveHalving(MultiFidelityStrategy):
    """Successive halving: many configs on a small budget, the top 1/eta promoted each rung."""

    def __init__(self, space: SearchSpace, seed: int = 0, metric: str = "val_accuracy",
                 mode: str = "max", n_configs: int | None = None, **options: Any) -> None:
        """``n_configs``: configurations per bracket (default ``eta**s_max``); other options
        as :class:`MultiFidelityStrategy`."""
        self.n_configs = n_configs
        super().__init__(space, seed, metric, mode, **options)

    def _schedule(self) -> list[list[Rung]]:
        return [successive_halving_schedule(self.min_resource, self.max_resource, self.eta,
                                            self.n_configs)]

    def config(self) -> dict[str, Any]:
        return {**super().config(), "n_configs": self.n_configs}


@register("hyperband")
class Hyperband(MultiFidelityStrategy):
    """Hyperband: successive halving over a cycle of brackets from aggressive to none."""

    def _schedule(self) -> list[list[Rung]]:
        return hyperband_schedule(self.min_resource, self.max_resource, self.eta)


@register("bohb")
class BOHB(Hyperband):
    """BOHB: Hyperband's brackets with new configs from a TPE-like kernel density model."""

    def __init__(self, space: SearchSpace, seed: int = 0, metric: str = "val_accuracy",
                 mode: str = "max", sampler: str | Sampler = "kde",
                 min_points_in_model: int | None = None, top_n_percent: float = 15.0,
                 num_samples: int = 64, random_fraction: float = 1 / 3,
                 bandwidth_factor: float = 1.0, min_bandwidth: float = 1e-3,
                 **options: Any) -> None:
        """Model options as :class:`KDESampler` (BOHB's defaults); others as Hyperband."""
        kde = {"min_points_in_model": min_points_in_model, "top_n_percent": top_n_percent,
               "num_samples": num_samples, "random_fraction": random_fraction,
               "bandwidth_factor": bandwidth_factor, "min_bandwidth": min_bandwidth}
        options.setdefault("sampler_options", kde if sampler in ("kde", "tpe") else None)
        super().__init__(space, seed, metric, mode, sampler=sampler, **options)
