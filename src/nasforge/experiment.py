"""The search loop: ``nasforge.search(...)`` and ``nasforge.resume(run_dir)``.

A search is ask -> evaluate -> tell, repeated until a budget (trials or wall-clock time)
is spent, with every step written to the run's :class:`~nasforge.store.RunStore` first.
Nothing lives only in memory: the run's configuration rebuilds the dataset, space,
strategy and estimator, the strategy state is saved atomically with each trial, and so
``resume`` after a crash, a ``kill -9`` or Ctrl-C continues with exactly the queries the
uninterrupted search would have made (for one worker and a deterministic estimator).

After the search the best architecture is retrained at full fidelity (all of the
training split, native resolution, more epochs), evaluated once on the test split, and
exported to ``RUN_DIR/best`` with :func:`nasforge.export.save_best`.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import inspect
import json
import math
import os
import re
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasforge import estimators, spaces, strategies
from nasforge.errors import NasforgeError, RunDirError
from nasforge.estimators.base import Estimator, Result
from nasforge.executors import ATTEMPTS_ATTR, Executor, make_executor, validate_execution
from nasforge.registry import Registry
from nasforge.spaces.base import Arch, SearchSpace
from nasforge.store import RunStore, TrialRecord, trials_dataframe
from nasforge.strategies.base import Strategy, Suggestion

if TYPE_CHECKING:
    import pandas as pd

    from nasforge.data import Dataset

#: config keys that must be equal for ``search(..., resume=True)`` to continue a run
IDENTITY_KEYS = ("dataset", "space", "strategy", "estimator", "seed", "objectives",
                 "constraints")


@dataclass
class SearchResult:
    """What a search found.

    ``test_metrics`` come from the single test evaluation of the retrained best model
    (empty without final training); for estimators that need no data (benchmark tables)
    they are the best trial's report values, e.g. the table's ``test_accuracy``.
    ``model_dir`` is ``RUN_DIR/best`` when a model was exported. With hard constraints,
    ``best_arch`` is the returned (feasible) model's architecture; ``feasible`` is False,
    with ``message`` saying why, when no model met them (nothing is exported then).
    ``pareto_ids``: the trial ids of the stored Pareto front (multi-objective/constrained).
    """

    run_dir: Path
    best_arch: Arch | None
    best_metrics: dict[str, float] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    model_dir: Path | None = None
    trials: list[TrialRecord] = field(default_factory=list)
    feasible: bool = True
    message: str | None = None
    pareto_ids: list[int] = field(default_factory=list)

    def to_dataframe(self) -> pd.DataFrame:
        """One row per trial (see :meth:`RunStore.to_dataframe`)."""
        return trials_dataframe(self.trials)


# ------------------------------------------------------------------------------ budgets
_DURATION = re.compile(
    r"^(?:(?P<d>\d+(?:\.\d*)?)d)?(?:(?P<h>\d+(?:\.\d*)?)h)?(?:(?P<m>\d+(?:\.\d*)?)m(?:in)?)?"
    r"(?:(?P<s>\d+(?:\.\d*)?)s)?$"
)


def parse_duration(value: float | int | str) -> float:
    """Seconds from ``45``, ``45.0``, ``"45"``, ``"90s"``, ``"10m"``, ``"1h30m"``, ``"2d"``.

    Budgets come from command lines and config files as text; a typo must be an error,
    not a silently tiny or endless search.
    """
    if isinstance(value, bool):
        raise NasforgeError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        secs = float(value)
    elif isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        try:
            secs = float(text)
        except ValueError:
            m = _DURATION.match(text)
            if not text or m is None or not any(m.groupdict().values()):
                raise NasforgeError(
                    f"not a duration: {value!r}; use e.g. 45 (seconds), 90s, 10m, 1h30m or 2d"
                ) from None
            mult = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
            secs = sum(float(v) * mult[k] for k, v in m.groupdict().items() if v)
    else:
        raise NasforgeError(f"not a duration: {value!r}")
    if not math.isfinite(secs) or secs <= 0:
        raise NasforgeError(f"a duration must be a positive number of seconds, got {value!r}")
    return secs


def _budget(trials: int | None, time_budget: float | str | None) -> dict[str, Any]:
    if trials is None and time_budget is None:
        raise NasforgeError(
            "no budget: give trials (e.g. --trials 20) and/or time_budget (e.g. --time 10m)"
        )
    if trials is not None:
        if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
            raise NasforgeError(f"trials must be a positive integer, got {trials!r}")
    tb = None if time_budget is None else parse_duration(time_budget)
    return {"trials": trials, "time_budget": tb}


# ----------------------------------------------------------------------------- components
def _accepted(factory: Any) -> tuple[set[str], bool]:
    """Keyword names a factory accepts, and whether it takes ``**kwargs``."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return names, any(p.kind == p.VAR_KEYWORD for p in params)


def _make(registry: Registry[Any], name: str, options: Mapping[str, Any], **fixed: Any) -> Any:
    """Instantiate ``name`` with ``options``; a wrong option name is the user's error."""
    factory = registry.factory(name)  # UnknownNameError lists the valid names
    names, var_kw = _accepted(factory)
    bad = sorted(set(options) - names - set(fixed)) if not var_kw else []
    if bad:
        valid = sorted(names - set(fixed) - {"self"})
        raise NasforgeError(
            f"unknown option(s) {bad} for {registry.kind} {name!r}; "
            f"valid options: {', '.join(valid) or '(none)'}"
        )
    try:
        return factory(**fixed, **options)
    except TypeError as e:
        raise NasforgeError(f"bad options for {registry.kind} {name!r}: {e}") from None


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON so that stored and fresh configs compare equal."""
    from nasforge.store import _json_default

    return json.loads(json.dumps(obj, sort_keys=True, default=_json_default))


def _spec(obj: Any, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """Name and options of a component: what rebuilds it with ``registry.get(name, **options)``."""
    opts = {**dict(given or {}), **obj.config()}
    return {"name": obj.name, "options": _jsonable(opts)}


@dataclass
class _Setup:
    """Everything a search needs, built from arguments or from a stored config."""

    config: dict[str, Any]
    space: SearchSpace
    strategy: Strategy
    estimator: Estimator
    dataset: Dataset | None  # an in-memory dataset given to search(); else loaded lazily


def _build(
    dataset: Any,
    space: str | SearchSpace,
    strategy: str | Strategy,
    estimator: str | Estimator,
    *,
    seed: int,
    space_options: Mapping[str, Any] | None,
    strategy_options: Mapping[str, Any] | None,
    estimator_options: Mapping[str, Any] | None,
    data_dir: str | None,
    dataset_options: Mapping[str, Any] | None,
) -> _Setup:
    from nasforge.data import Dataset

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise NasforgeError(f"seed must be a non-negative integer, got {seed!r}")
    # space
    if isinstance(space, SearchSpace):
        if space_options:
            raise NasforgeError("space_options only apply to a space given by name")
        sp = space
    elif isinstance(space, str):
        sp = _make(spaces.registry, space, dict(space_options or {}))
    else:
        raise NasforgeError(f"space must be a name or a SearchSpace, got {type(space).__name__}")
    # strategy
    if isinstance(strategy, Strategy):
        if strategy_options:
            raise NasforgeError("strategy_options only apply to a strategy given by name")
        if strategy.space is not sp and strategy.space.name != sp.name:
            raise NasforgeError(
                f"the strategy searches space {strategy.space.name!r}, not {sp.name!r}"
            )
        st = strategy
    elif isinstance(strategy, str):
        opts = dict(strategy_options or {})
        opts.setdefault("seed", seed)
        st = _make(strategies.registry, strategy, opts, space=sp)
    else:
        raise NasforgeError(
            f"strategy must be a name or a Strategy, got {type(strategy).__name__}"
        )
    # estimator
    if isinstance(estimator, Estimator):
        if estimator_options:
            raise NasforgeError("estimator_options only apply to an estimator given by name")
        est = estimator
    elif isinstance(estimator, str):
        opts = dict(estimator_options or {})
        names, var_kw = _accepted(estimators.registry.factory(estimator))
        if "seed" in names or var_kw:
            opts.setdefault("seed", seed)
        est = _make(estimators.registry, estimator, opts)
    else:
        raise NasforgeError(
            f"estimator must be a name or an Estimator, got {type(estimator).__name__}"
        )
    # dataset
    ds_obj: Dataset | None = None
    if isinstance(dataset, Dataset):
        ds_obj = dataset
        ds = {"name": dataset.name, "in_memory": True, "data_dir": None, "options": {}}
    elif isinstance(dataset, str | os.PathLike):
        name = os.fspath(dataset)
        p = Path(name).expanduser()
        if p.is_dir():  # a folder of images: store where it is, wherever we resume from
            name = str(p.resolve())
        ds = {"name": name, "in_memory": False, "data_dir": data_dir,
              "options": _jsonable(dict(dataset_options or {}))}
    else:
        raise NasforgeError(
            f"dataset must be a name, a path or a nasforge Dataset, got {type(dataset).__name__}"
        )
    config = {
        "dataset": ds,
        "space": _spec(sp, space_options if isinstance(space, str) else None),
        "strategy": _spec(st, None),
        "estimator": _spec(est, estimator_options if isinstance(estimator, str) else None),
        "seed": seed,
    }
    return _Setup(_jsonable(config), sp, st, est, ds_obj)


#: metrics that only the train estimator's ``latency="torch+onnx"`` mode measures
_ONNX_METRICS = ("onnx_latency_ms", "onnx_latency_ms_b32", "latency_ms_b32", "latency_threads")


def _goals(objectives: Any, constraints: Any, strategy: str | Strategy | None,
           strategy_options: Mapping[str, Any] | None, estimator: str | Estimator,
           estimator_options: Mapping[str, Any] | None
           ) -> tuple[list[str] | None, list[str] | None, str | Strategy, dict[str, Any],
                      dict[str, Any]]:
    """Parse objectives/constraints and hand them to the strategy that optimizes them.

    Several objectives and no strategy chosen: NSGA-II. A strategy taking ``objectives``
    (and ``constraints``) gets them; Optuna's gets ``metrics``/``directions``; one
    objective sets ``metric``/``mode``. A single-metric strategy cannot take several
    objectives (an error); constraints it cannot take are still enforced when the returned
    model is chosen. Returns (objectives, constraints, strategy, strategy and estimator
    options), objectives/constraints as canonical strings (None when not given).
    """
    from nasforge.objectives import parse_constraints, parse_objectives

    objs = None if objectives is None else parse_objectives(objectives)
    cons = parse_constraints(constraints)
    if strategy is None:
        strategy = "nsga2" if objs is not None and len(objs) > 1 else "evolution"
    s_opts = dict(strategy_options or {})
    specs = None if objs is None else [str(o) for o in objs]
    if isinstance(strategy, Strategy):
        have = [str(o) for o in getattr(strategy, "objectives", None) or []] or [
            f"{strategy.metric}:{strategy.mode}"]
        if specs is not None and have != specs:
            raise NasforgeError(f"the strategy object optimizes {have}, not {specs}; build it "
                                f"with those objectives or give the strategy by name")
    elif isinstance(strategy, str):
        names, _ = _accepted(strategies.registry.factory(strategy))
        if objs is not None and specs is not None:
            if "objectives" in names:
                given = s_opts.get("objectives")
                if given is not None and [str(o) for o in parse_objectives(given)] != specs:
                    raise NasforgeError(f"objectives {specs} conflict with strategy option "
                                        f"objectives={given!r}")
                s_opts["objectives"] = specs
            elif len(objs) > 1 and {"metrics", "directions"} <= names:
                s_opts.update(metrics=[o.metric for o in objs],
                              directions=["maximize" if o.mode == "max" else "minimize"
                                          for o in objs],
                              metric=objs[0].metric, mode=objs[0].mode)
            elif len(objs) == 1 and {"metric", "mode"} <= names:
                s_opts.update(metric=objs[0].metric, mode=objs[0].mode)
            else:
                raise NasforgeError(
                    f"strategy {strategy!r} optimizes a single metric and cannot search "
                    f"{specs}; use strategy 'nsga2' (or 'optuna-nsga2'), or give one objective"
                )
        if cons and "constraints" in names:
            mine = [str(c) for c in cons]
            theirs = [str(c) for c in parse_constraints(s_opts.get("constraints"))]
            s_opts["constraints"] = list(dict.fromkeys(theirs + mine))
    e_opts = dict(estimator_options or {})
    wanted = {o.metric for o in objs or []} | {c.metric for c in cons}
    est_cls = (estimators.registry.factory(estimator) if isinstance(estimator, str)
               else estimator)
    known = getattr(est_cls, "reported_metrics", None)
    if known is not None and (unknown := sorted(wanted - set(known))):
        name = estimator if isinstance(estimator, str) else estimator.name
        raise NasforgeError(
            f"unknown metric(s) {unknown} in the objectives or constraints: estimator "
            f"{name!r} reports {', '.join(sorted(known))}"
        )
    if isinstance(estimator, str) and wanted & set(_ONNX_METRICS) and "latency" not in e_opts:
        names, _ = _accepted(estimators.registry.factory(estimator))
        if "latency" in names:  # the cheap default would never measure these
            e_opts["latency"] = "torch+onnx"
    return specs, [str(c) for c in cons] or None, strategy, s_opts, e_opts


def _probed_plan(plan: Any, setup: _Setup, data: Dataset) -> Any:
    """``plan`` made again with a probe: the speed of the space's first known-good design
    (else a seeded draw) on these data; ``plan`` unchanged if the network cannot be built
    or timed (the first trial then says why)."""
    import numpy as np
    import torch

    from nasforge.budget import measure_probe, plan_job

    space = setup.space
    known = space.known_good()
    try:
        arch = known[0] if known else space.sample(np.random.default_rng(0))
        torch.manual_seed(0)
        net = space.build(arch, data.input_shape, data.num_classes)
        bs = int(setup.estimator.config().get("batch_size") or 128)
        probe = measure_probe(net, data, batch_size=bs)
    except Exception:  # noqa: BLE001 - planning falls back to the fixed guesses
        return plan
    return plan_job(plan.total_s, plan.spent_s, probe=probe, tta=_flips(setup))


def _flips(setup: _Setup) -> bool:
    """Whether the estimator trains with flips (the final model is then served with TTA)."""
    return str(setup.estimator.config().get("augment") or "none").startswith("flip")


def _winner_reserve(setup: _Setup, data: Dataset, rec: TrialRecord, planned: float) -> float:
    """Seconds to keep for testing and exporting the chosen network: its own inference
    time on the test split (timed on the untrained network, which is as fast), with a
    1.5x margin; ``planned`` if it cannot be timed."""
    import torch

    from nasforge.budget import MIN_PROBED_RESERVE_S, measure_probe

    try:
        torch.manual_seed(0)
        net = setup.space.build(setup.space.parse(rec.arch), data.input_shape,
                                data.num_classes)
        probe = measure_probe(net, data, steps=1)
    except Exception:  # noqa: BLE001 - keep the plan's figure
        return planned
    return max(MIN_PROBED_RESERVE_S, 1.5 * probe.post_s(_flips(setup)))


def _planned(plan: Any, dataset: Any, strategy: str | Strategy | None,
             strategy_options: Mapping[str, Any] | None, estimator: str | Estimator,
             estimator_options: Mapping[str, Any] | None, objectives: Any
             ) -> tuple[str | Strategy | None, dict[str, Any], dict[str, Any]]:
    """The strategy and estimator options a time-budgeted job runs with.

    An estimator with a time fidelity (``Estimator.time_fidelity``) gets the planned
    recipe (options the user gave win); with no strategy chosen and one objective, the
    search is the plan's successive halving over that fidelity.
    """
    from nasforge.budget import RECIPE
    from nasforge.data import default_augment

    s_opts, e_opts = dict(strategy_options or {}), dict(estimator_options or {})
    factory = estimators.registry.factory(estimator) if isinstance(estimator, str) else None
    time_key = getattr(factory if factory is not None else estimator, "time_fidelity", None)
    if time_key is None or not isinstance(estimator, str):
        return strategy, s_opts, e_opts
    names, var_kw = _accepted(factory)
    recipe = {**RECIPE, "augment": default_augment(dataset)}
    for k, v in recipe.items():
        if (k in names or var_kw) and k not in e_opts:
            e_opts[k] = v
    single = objectives is None or isinstance(objectives, str) or len(list(objectives)) < 2
    if strategy is None and single and not {"epochs", "data_fraction", time_key} & set(e_opts):
        strategy = "successive-halving"
        opts = plan.strategy_options()
        opts["resource"] = time_key
        s_opts = {**opts, **s_opts}
    return strategy, s_opts, e_opts


def _rebuild(config: Mapping[str, Any], run_dir: Path) -> _Setup:
    """The components of a stored run, from its config alone."""
    try:
        sp = spaces.get(config["space"]["name"], **config["space"]["options"])
        st = strategies.get(config["strategy"]["name"], space=sp, **config["strategy"]["options"])
        est = estimators.get(config["estimator"]["name"], **config["estimator"]["options"])
    except NasforgeError as e:
        raise RunDirError(f"cannot rebuild the run in {run_dir}: {e}") from None
    except (KeyError, TypeError) as e:
        raise RunDirError(
            f"the stored config of {run_dir} is damaged or incompatible: {e}"
        ) from None
    return _Setup(dict(config), sp, st, est, None)


def _load_data(setup: _Setup, run_dir: Path | None) -> Dataset | None:
    """The dataset, or None for estimators that do not need one (table lookups)."""
    if not setup.estimator.needs_data:
        return None
    if setup.dataset is not None:
        return setup.dataset
    ds = setup.config["dataset"]
    if ds.get("in_memory"):
        raise RunDirError(
            f"the run in {run_dir} searched an in-memory dataset ({ds.get('name')!r}) that "
            f"cannot be reloaded from the store; continue it from Python with "
            f"nasforge.search(<that dataset>, out={str(run_dir)!r}, resume=True, ...)"
        )
    from nasforge.data import load_dataset

    name = ds.get("resolved") or ds["name"]
    data = load_dataset(name, data_dir=ds.get("data_dir"), seed=setup.config["seed"],
                        **ds.get("options", {}))
    if not ds.get("resolved"):
        # "auto" means Fashion-MNIST if installed: pin what it meant for later resumes
        ds["resolved"] = data.name if ds["name"].lower() == "auto" else ds["name"]
    return data


#: run directories :func:`default_run_dir` created (removed again if left empty by a failure)
_CLAIMED: set[Path] = set()


def default_run_dir(prefix: str) -> Path:
    """``runs/<prefix>-<time>`` (``-2``, ``-3``, ... appended if taken): a fresh run directory.

    The directory is created here, atomically (``mkdir`` fails if it exists), so two
    searches started in the same second take different names instead of colliding.
    """
    base = Path("runs") / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create {base.parent}: {e.strerror or e}") from None
    out, i = base, 1
    while True:
        try:
            out.mkdir()
            break
        except FileExistsError:
            i += 1
            out = base.with_name(f"{base.name}-{i}")
        except OSError as e:
            raise RunDirError(f"cannot create run directory {out}: {e.strerror or e}") from None
    _CLAIMED.add(out.resolve())
    return out


def _release_claim(run_dir: Path) -> None:
    """Remove a directory :func:`default_run_dir` made if a failure left it empty."""
    p = run_dir.resolve()
    if p in _CLAIMED:
        _CLAIMED.discard(p)
        with contextlib.suppress(OSError):
            p.rmdir()  # only if empty


def _diff(stored: Mapping[str, Any], fresh: Mapping[str, Any]) -> list[str]:
    out = []
    for k in IDENTITY_KEYS:
        a, b = stored.get(k), fresh.get(k)
        if k == "dataset" and isinstance(a, dict) and isinstance(b, dict):
            a = {kk: v for kk, v in a.items() if kk != "resolved"}
            b = {kk: v for kk, v in b.items() if kk != "resolved"}
        if a != b:
            out.append(f"{k}: stored {json.dumps(a, sort_keys=True)} != given "
                       f"{json.dumps(b, sort_keys=True)}")
    return out


# ------------------------------------------------------------------------------ progress
def _quiet_env() -> bool:
    return os.environ.get("NASFORGE_NO_PROGRESS", "").strip() not in ("", "0", "false", "no")


class _Display:
    """The live progress bar (TTY only) and the printed summaries (unless quiet)."""

    def __init__(self, enabled: bool, total: float | None, done: float, unit: str) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.enabled = enabled
        self.bar = None
        #: ``time.monotonic()`` at the job's start: phase lines then show the job's clock
        self.t0: float | None = None
        self.task: Any = None
        # progress="phases" (the command line's --no-progress): no live bar, but the plan
        # and phase lines and the summary are still printed
        if enabled is True and not _quiet_env() and self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            cols: list[Any] = [TextColumn("[bold]search"), BarColumn()]
            cols.append(MofNCompleteColumn() if unit == "trials"
                        else TextColumn("{task.completed:.0f}/{task.total:.0f} s"))
            cols += [TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                     TextColumn("{task.fields[best]}")]
            self.bar = Progress(*cols, console=self.console, transient=False)
            self.task = self.bar.add_task("search", total=total, completed=done, best="")
            self.bar.start()

    @property
    def total(self) -> float | None:
        return None if self.bar is None else self.bar.tasks[0].total

    @total.setter
    def total(self, value: float | None) -> None:
        if self.bar is not None:
            self.bar.update(self.task, total=value)

    def update(self, done: float, best: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, best=best)

    def log(self, text: str) -> None:
        """A phase line (the plan, the final training): printed even without the live
        display, so a quiet run still says what it is doing; only NASFORGE_NO_PROGRESS
        or ``progress=False`` silence it."""
        if not self.enabled or _quiet_env():
            return
        from rich.markup import escape

        if self.t0 is not None:  # the job's clock, so a user sees where the time went
            age = max(0, int(time.monotonic() - self.t0))
            text = f"[{age // 60}:{age % 60:02d}] {text}"
        if self.bar is not None:
            self.bar.console.print(escape(text))
        else:
            print(f"nasforge: {text}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def print(self, *args: Any) -> None:
        if self.enabled:
            self.console.print(*args)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _summary_table(trials: list[TrialRecord], metric: str, mode: str, top: int = 5) -> Any:
    from rich.table import Table

    ok = [t for t in trials if t.ok and _finite(t.metrics.get(metric))]
    ok.sort(key=lambda t: (-float(t.metrics[metric]) if mode == "max" else float(t.metrics[metric]),
                           t.id))
    n_failed = sum(t.status == "failed" for t in trials)
    table = Table(title=f"top {min(top, len(ok))} of {len(ok)} ok trials ({n_failed} failed)")
    for col in ("#", "trial", metric, "params", "cost s", "arch"):
        table.add_column(col, overflow="fold")
    for rank, t in enumerate(ok[:top], 1):
        table.add_row(str(rank), str(t.id), _fmt(t.metrics[metric]),
                      _fmt(t.metrics.get("params", "")), _fmt(t.cost or 0.0), t.arch)
    return table


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------- the loop
class _Loop:
    """One session of a run: fills worker slots by asking, stores every step atomically."""

    def __init__(self, store: RunStore, setup: _Setup, data: Dataset | None,
                 budget: Mapping[str, Any], executor: Executor, display: _Display) -> None:
        self.store = store
        self.setup = setup
        self.data = data
        self.trials_budget: int | None = budget.get("trials")
        self.time_budget: float | None = budget.get("time_budget")
        self.executor = executor
        self.display = display
        self.prior = float(store.get_meta("elapsed_s", 0.0) or 0.0)
        self.t0 = time.monotonic()
        self.in_flight: dict[cf.Future, tuple[int, Suggestion]] = {}
        self.n_done = store.n_completed()
        #: the fidelity key of a trial's training seconds: a trial that would not end
        #: within the time budget is not started (set by a job plan)
        self.fit_fidelity: str | None = None
        #: when trials must stop (``time.time()``); handed to the estimator once one trial
        #: succeeded, so a tight budget still yields a candidate for the final training
        self.deadline_at: float | None = None
        from nasforge.reporting import run_constraints

        #: hard bounds the untrained network can be checked against (see _precheck)
        self.static_constraints = ([c for c in run_constraints(setup.config)
                                    if c.metric in ("params", "flops")]
                                   if setup.estimator.needs_data else [])
        strat = setup.strategy
        best = store.best(strat.metric, strat.mode)
        self.best = None if best is None else float(best.metrics[strat.metric])

    def elapsed(self) -> float:
        return self.prior + (time.monotonic() - self.t0)

    def budget_left(self, extra_in_flight: int = 0) -> bool:
        if self.trials_budget is not None and \
                self.n_done + len(self.in_flight) + extra_in_flight >= self.trials_budget:
            return False
        return not (self.time_budget is not None and self.elapsed() >= self.time_budget)

    def progress(self) -> float:
        return self.n_done if self.trials_budget is not None else min(self.elapsed(),
                                                                      self.time_budget or 0.0)

    def best_text(self) -> str:
        if self.best is None:
            return ""
        return f"best {self.setup.strategy.metric} {self.best:.4g}"

    def _fits(self, sugg: Suggestion) -> bool:
        """Whether a trial budgeted in training seconds ends inside the time budget (the
        ask is not stored otherwise: a resumed run asks it again)."""
        from nasforge.budget import TRIAL_OVERHEAD_S

        if self.fit_fidelity is None or self.time_budget is None:
            return True
        secs = (sugg.fidelity or {}).get(self.fit_fidelity)
        if secs is None or self.n_done == 0:  # the job needs one candidate in any case
            return True
        # the plan's per-trial overhead is an estimate: allow half of it as slack
        return self.elapsed() + float(secs) + 0.5 * TRIAL_OVERHEAD_S <= self.time_budget

    def _precheck(self, sugg: Suggestion) -> Result | None:
        """A failed result for an architecture that breaks a hard bound on a metric the
        untrained network already shows (params, FLOPs), else None.

        Such a network would be trained only to be dropped at the end; the strategy is
        told it failed (so it steers away) and no training time is spent on it.
        """
        if not self.static_constraints or self.data is None:
            return None
        from nasforge import metrics as M

        t0 = time.perf_counter()
        shape = self.data.input_shape
        try:
            net = self.setup.space.build(sugg.arch, shape, self.data.num_classes)
        except NasforgeError:
            return None  # the estimator reports a network that cannot be built
        have = {"params": float(M.count_params(net)), "flops": float(M.count_flops(net, shape))}
        bad = [f"{c} ({c.metric} = {have[c.metric]:.4g})" for c in self.static_constraints
               if not c.satisfied(have)]
        if not bad:
            return None
        return Result(metrics=have, cost=time.perf_counter() - t0, status="failed",
                      error="infeasible before training, not trained: " + "; ".join(bad))

    def _submit(self, tid: int, sugg: Suggestion) -> None:
        # only (arch, fidelity) travels per trial: the context was bound once in run()
        fut = self.executor.submit_trial(sugg.arch, sugg.fidelity)
        self.in_flight[fut] = (tid, sugg)

    def run(self) -> None:
        strat, store = self.setup.strategy, self.store
        self.executor.bind(self.setup.estimator, self.setup.space, self.data)
        # trials started before a crash never finished: evaluate them again, same id
        for rec in store.trials("running"):
            if not self.budget_left():
                break
            sugg = Suggestion(self.setup.space.parse(rec.arch), rec.fidelity)
            store.restart_trial(rec.id)
            self._submit(rec.id, sugg)
            self._drain_done(block=False)
        while True:
            while len(self.in_flight) < self.executor.max_workers and self.budget_left():
                sugg = strat.ask()
                if not self._fits(sugg):
                    self.time_budget = self.elapsed()  # the rest goes to the final training
                    break
                infeasible = self._precheck(sugg)
                tid = store.start_trial(
                    sugg.arch.text, sugg.arch.to_json(), sugg.fidelity, strat.state_dict(),
                    strat.n_told, meta={"elapsed_s": self.elapsed()}, note=sugg.note,
                )
                if infeasible is not None:  # refused before training: costs no trial time
                    self._finish(tid, sugg, infeasible)
                    continue
                self._submit(tid, sugg)
                self._drain_done(block=False)  # in-process: already done, tell before next ask
            if not self.in_flight:
                break
            self._drain_done(block=True)

    def _drain_done(self, block: bool) -> None:
        if not self.in_flight:
            return
        if block:
            done, _ = cf.wait(list(self.in_flight), return_when=cf.FIRST_COMPLETED)
        else:
            done = {f for f in self.in_flight if f.done()}
        for fut in sorted(done, key=lambda f: self.in_flight[f][0]):
            tid, sugg = self.in_flight.pop(fut)
            # a worker that died under the trial made the executor start it again
            self._finish(tid, sugg, _outcome(fut), int(getattr(fut, ATTEMPTS_ATTR, 1) or 1))

    def _finish(self, tid: int, sugg: Suggestion, result: Result, attempts: int = 1) -> None:
        strat = self.setup.strategy
        strat.tell(sugg, result.visible())
        self.store.finish_trial(tid, result, strat.state_dict(), strat.n_told,
                                meta={"elapsed_s": self.elapsed()}, attempts=attempts)
        self.n_done += 1
        if result.ok and self.deadline_at is not None and self.setup.estimator.deadline is None:
            self.setup.estimator.deadline = self.deadline_at
        if result.ok and _finite(result.metrics.get(strat.metric)):
            v = float(result.metrics[strat.metric])
            if self.best is None or (v > self.best if strat.mode == "max" else v < self.best):
                self.best = v
        self.display.update(self.progress(), self.best_text())

    def abandon(self) -> None:
        """Forget in-flight work (it stays 'running' in the store and is redone on resume)."""
        for fut in self.in_flight:
            fut.cancel()
        self.in_flight.clear()


def _outcome(fut: cf.Future) -> Result:
    exc = fut.exception()
    if exc is None:
        res = fut.result()
        return res if isinstance(res, Result) else Result.failed(
            f"trial returned {type(res).__name__}, not a Result")
    if isinstance(exc, NasforgeError):
        raise exc  # a set-up mistake (bad fidelity, no data): every trial would fail
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=4))
    return Result.failed(f"{type(exc).__name__}: {exc}\n{tb}")


# -------------------------------------------------------------------------- final model
#: a constrained search retrains at most this many candidates when the final model breaks
#: a bound (latency noise, a val_accuracy floor), and checks at most this many in all
MAX_FINAL_RETRAINS = 3
MAX_FINAL_CANDIDATES = 10
STAGING_DIR = ".best-staging"


def _cost_metrics(model: Any, input_shape: Any, *, onnx: bool, repeats: int = 50,
                  onnx_path: Path | None = None) -> dict[str, float]:
    """Cost metrics measured on ``model`` itself, as the train estimator names them."""
    from nasforge import metrics as M
    from nasforge.estimators.training import latency_metrics

    model.to("cpu").eval()
    out: dict[str, float] = {
        "params": M.count_params(model),
        "flops": M.count_flops(model, input_shape),
        "peak_memory_mb": M.peak_memory_mb(model, input_shape),
    }
    out.update(latency_metrics(model, input_shape, onnx=onnx, repeats=repeats,
                               onnx_path=onnx_path))
    return out


def _broken(metrics: Mapping[str, Any], constraints: list[Any]) -> list[str]:
    """The constraints ``metrics`` break, each with the measured value."""
    return [f"{c} ({c.metric} = {metrics.get(c.metric, 'missing')})"
            for c in constraints if not c.satisfied(metrics)]


def _install(staging: Path, target: Path) -> None:
    """Move the checked model directory into place, replacing an older one."""
    import shutil

    old = target.with_name(".best-old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _test_scores(served: Any, data: Dataset, device: str) -> tuple[float, float, float]:
    """``(accuracy, loss, accuracy without test-time augmentation)`` on the test split,
    in one pass: a TTA model's plain logits come from its own first forward."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from nasforge.estimators.training import _layout, evaluate_model
    from nasforge.export import FlipTTA

    if not isinstance(served, FlipTTA):
        acc, loss = evaluate_model(served, data.x_test, data.y_test, device=device)
        return acc, loss, acc
    n = len(data.y_test)
    if n == 0:
        raise ValueError("no test examples")
    x = torch.as_tensor(np.asarray(data.x_test), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(data.y_test), dtype=torch.long)
    fmt = torch.channels_last if x.dim() == 4 else torch.contiguous_format
    restore = _layout(served)
    served.to(device, memory_format=fmt).eval()
    correct = plain_correct = 0
    loss_sum = 0.0
    try:
        with torch.no_grad():
            for i in range(0, n, 512):
                xb = x[i : i + 512].to(device).contiguous(memory_format=fmt)
                yb = y[i : i + 512].to(device)
                out, plain = served.forward_both(xb)
                loss_sum += float(F.cross_entropy(out.float(), yb, reduction="sum"))
                correct += int((out.argmax(1) == yb).sum())
                plain_correct += int((plain.argmax(1) == yb).sum())
    finally:
        served.to(memory_format=restore)
    return correct / n, loss_sum / n, plain_correct / n


def _final_train(store: RunStore, setup: _Setup, data: Dataset, cands: list[TrialRecord],
                 final_epochs: int | None, display: _Display,
                 final_seconds: float | None = None
                 ) -> tuple[TrialRecord | None, dict[str, Any], Path | None, str | None]:
    """Retrain the best feasible architecture on the full training split, test it, export it.

    Returns ``(chosen trial, final metrics, model dir, None)``, or ``(None, {}, None,
    why)`` when no candidate stays within the run's hard constraints. Cost metrics are
    measured again -- on the untrained network first (latency does not depend on the
    weights, so a candidate that now measures over budget costs no training), then on the
    retrained one -- and a model that breaks a bound is never exported: the next feasible
    candidate is tried, at most :data:`MAX_FINAL_RETRAINS` retrainings. The final
    ``summary.json`` always gets torch and ONNX Runtime latencies at batch 1 and 32.
    """
    import shutil

    import torch

    from nasforge.estimators.training import runtime_names, train_model
    from nasforge.export import SUMMARY_FILE, _write_json, save_best, with_tta
    from nasforge.reporting import run_constraints

    space, est = setup.space, setup.estimator
    cfg = est.config()
    search_epochs = int(cfg.get("epochs") or 1)
    epochs = int(final_epochs) if final_epochs else max(3, 3 * search_epochs)
    seed = int(setup.config["seed"])
    kw = {k: cfg[k] for k in ("batch_size", "optimizer", "lr", "weight_decay",
                              "label_smoothing", "device", "augment", "warmup")
          if cfg.get(k) is not None}
    t_final = time.monotonic()
    device = kw.get("device", "cpu")
    constraints = run_constraints(setup.config)
    onnx_bound = any("onnx" in c.metric or c.metric.endswith("_b32") for c in constraints)
    staging = store.run_dir / STAGING_DIR
    rejected: list[str] = []
    retrains = 0
    for rec in cands[:MAX_FINAL_CANDIDATES]:
        if retrains >= MAX_FINAL_RETRAINS:
            break
        arch = space.parse(rec.arch)
        torch.manual_seed(seed)
        model = space.build(arch, data.input_shape, data.num_classes)
        if constraints:
            pre = {**rec.metrics, **_cost_metrics(model, data.input_shape, onnx=onnx_bound)}
            bad = _broken(pre, constraints)
            if bad:
                rejected.append(f"trial {rec.id}: {'; '.join(bad)} (re-measured before training)")
                display.print(f"[yellow]skipping trial {rec.id}[/]: {rejected[-1]}")
                continue
        retrains += 1
        n_all = len(data.y_train) + len(data.y_val)
        secs = None
        if final_seconds is not None:  # a retry after a rejected model gets what is left
            secs = max(1.0, final_seconds - (time.monotonic() - t_final))
            what = f"for {secs:.0f} s (the time left, less the reserve)"
        else:
            what = f"for {epochs} epochs"
        display.log(f"final training of trial {rec.id} ({arch.text}) {what} on all {n_all} "
                    "training and validation examples")
        store.set_meta(status="final_training")
        t0 = time.perf_counter()
        hist = train_model(model, data, epochs=epochs if secs is None else 10**6,
                           data_fraction=1.0, resolution=None, seed=seed, seconds=secs,
                           include_val=True, **kw)
        display.log(f"final training done: {hist['epochs']:.3g} epochs in "
                    f"{time.perf_counter() - t0:.0f} s; testing and exporting")
        train_time = time.perf_counter() - t0
        t_post = time.perf_counter()
        # trained on mirrored images: serve the average over the image and its mirror
        tta = "flip" if str(kw.get("augment", "none")).startswith("flip") else None
        served = with_tta(model, tta)
        test_acc, test_loss, plain_acc = _test_scores(served, data, device)
        served.to("cpu").eval()
        final: dict[str, Any] = {
            "test_accuracy": test_acc,
            "test_accuracy_no_tta": plain_acc,
            "test_loss": test_loss,
            **_cost_metrics(served, data.input_shape, onnx=False),
            "epochs": hist["epochs"],
            "train_time_s": train_time,
        }
        shutil.rmtree(staging, ignore_errors=True)
        save_best(staging, model, arch, space, data, final,
                  extra={"trial_id": rec.id, "search_metrics": rec.metrics,
                         "run_dir": str(store.run_dir)}, tta=tta)
        shipped = staging / "model.onnx"
        final.update(_cost_metrics(served, data.input_shape, onnx=True,
                                   onnx_path=shipped if shipped.is_file() else None))
        bad = _broken({**rec.metrics, **final}, constraints)
        if bad:
            shutil.rmtree(staging, ignore_errors=True)
            rejected.append(f"trial {rec.id}: {'; '.join(bad)} (re-measured after retraining)")
            display.print(f"[yellow]not exporting trial {rec.id}[/]: {rejected[-1]}")
            continue
        summary = json.loads((staging / SUMMARY_FILE).read_text())
        summary["metrics"].update(final)
        summary["latency"] = {
            "threads": final.get("latency_threads"),
            "runtimes": runtime_names(),
            "batch_1_ms": {"torch": final.get("latency_ms"),
                           "onnx": final.get("onnx_latency_ms")},
            "batch_32_ms": {"torch": final.get("latency_ms_b32"),
                            "onnx": final.get("onnx_latency_ms_b32")},
            "onnx_file": "model.onnx" if shipped.is_file() else "temporary export",
        }
        summary["constraints"] = [str(c) for c in constraints]
        _write_json(staging / SUMMARY_FILE, summary)
        model_dir = store.run_dir / "best"
        _install(staging, model_dir)
        display.log(f"test accuracy {test_acc:.4f}; tested and exported in "
                    f"{time.perf_counter() - t_post:.0f} s")
        store.set_meta(final={
            "arch": arch.text, "trial_id": rec.id, "metrics": final, "feasible": True,
            "model_dir": str(model_dir.resolve()), "first_choice": cands[0].arch,
            "rejected": rejected,
        })
        return rec, final, model_dir, None
    why = (f"no feasible model: every candidate tried broke a constraint when measured "
           f"again ({' | '.join(rejected)})")
    shutil.rmtree(store.run_dir / "best", ignore_errors=True)  # never leave an older answer
    store.set_meta(final={"arch": None, "trial_id": None, "metrics": {}, "feasible": False,
                          "model_dir": None, "first_choice": cands[0].arch if cands else None,
                          "rejected": rejected, "message": why})
    return None, {}, None, why


# ------------------------------------------------------------------------------ entry points
def search(
    dataset: str | Dataset = "auto",
    *,
    space: str | SearchSpace = "cnn",
    strategy: str | Strategy | None = None,
    estimator: str | Estimator = "train",
    trials: int | None = 20,
    time_budget: float | str | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    resume: bool = False,
    space_options: dict[str, Any] | None = None,
    strategy_options: dict[str, Any] | None = None,
    estimator_options: dict[str, Any] | None = None,
    final_train: bool = True,
    final_epochs: int | None = None,
    data_dir: str | None = None,
    progress: bool = True,
    executor: Executor | str | None = None,
    dataset_options: dict[str, Any] | None = None,
    workers: int = 1,
    ray_address: str | None = None,
    trial_timeout: float | str | None = None,
    retries: int = 1,
    objectives: str | Sequence[str] | None = None,
    constraints: str | Sequence[str] | Mapping[str, Any] | None = None,
    budget_spent: float = 0.0,
) -> SearchResult:
    """Search ``space`` for a good network on ``dataset``; every step is stored in ``out``.

    ``time_budget`` (seconds or ``"10m"``) is the wall-clock time of the *whole job*:
    search, final training, test and export (see :mod:`nasforge.budget`; the plan is
    printed first). ``budget_spent`` seconds of it are already gone (the command line
    counts its start-up). Without another strategy the search is successive halving over
    training seconds, known-good designs first; the final training gets the time left.
    ``trials`` counts completed (ok or failed) trials (summed over resumes); with both,
    the search stops asking at whichever comes first. ``resume=True`` continues the run
    in ``out`` if there is one (its configuration must match). Ctrl-C stores everything,
    prints how to resume and re-raises ``KeyboardInterrupt``. ``dataset_options`` go to
    :func:`load_dataset` (``val_fraction``, ``image_size``, ``max_train``).

    Execution: ``workers`` trials at once; ``executor`` is an :class:`Executor` or one of
    ``auto`` (in-process for 1 worker, else a process pool), ``inprocess``, ``process``,
    ``thread``, ``ray`` (``ray_address`` for an existing cluster). ``trial_timeout``
    (seconds or ``"5m"``) stops a trial's worker; a worker that dies under a trial is
    replaced and the trial retried ``retries`` times.

    Goals: ``objectives`` (``["val_accuracy:max", "latency_ms:min"]``; the first decides
    the returned model) and hard ``constraints`` (``"latency_ms<=2"``, ``["params<=200k"]``
    or ``{"max_latency_ms": 2, "max_params": "200k"}``) are stored with the run. Several
    objectives default the strategy to ``nsga2`` (``strategy=None`` means ``evolution``
    otherwise). The returned model is the best *feasible* trial (at the highest fidelity
    of the run), re-measured after the final retrain; if it breaks a bound the next
    feasible one is tried, and if none is left ``feasible`` is False and nothing is
    exported. Multi-objective/constrained runs also write ``pareto.md``/``pareto.png``.
    """
    t_call = time.monotonic()
    budget = _budget(trials, time_budget)
    plan = None
    search_only = False
    if budget["time_budget"] is not None:  # the whole job fits the time: plan the split
        from nasforge.budget import plan_job

        est_needs_data = (estimator.needs_data if isinstance(estimator, Estimator) else
                          getattr(estimators.registry.factory(estimator), "needs_data", True))
        search_only = not (final_train and est_needs_data)
        plan = plan_job(budget["time_budget"], budget_spent, search_only=search_only)
    execution = _execution(executor, workers, ray_address, trial_timeout, retries)
    if final_epochs is not None and (isinstance(final_epochs, bool) or final_epochs < 1):
        raise NasforgeError(f"final_epochs must be a positive integer, got {final_epochs!r}")
    if resume and out is None:
        raise NasforgeError("resume=True needs out= (the run directory to continue)")

    def configure(plan: Any) -> _Setup:
        """The components, with the plan's strategy and recipe when there is a plan."""
        st, s_opts, e_opts = strategy, strategy_options, estimator_options
        if plan is not None:
            budget["plan"] = plan.to_json()
            st, s_opts, e_opts = _planned(plan, dataset, st, s_opts, estimator, e_opts,
                                          objectives)
        g_objs, g_cons, st, s_opts, e_opts = _goals(objectives, constraints, st, s_opts,
                                                    estimator, e_opts)
        setup = _build(dataset, space, st, estimator, seed=seed, space_options=space_options,
                       strategy_options=s_opts or None, estimator_options=e_opts or None,
                       data_dir=data_dir, dataset_options=dataset_options)
        setup.config.update(objectives=g_objs, constraints=g_cons)
        return setup

    setup = configure(plan)
    run_dir = Path(out) if out is not None else default_run_dir(
        f"{setup.space.name}-{setup.strategy.name}")
    if RunStore.exists(run_dir):
        if not resume:
            raise RunDirError(
                f"a run already exists in {run_dir}. Continue it with `nasforge resume "
                f"{run_dir}` (resume=True in Python), or choose another --out directory."
            )
        store = RunStore.open(run_dir, write=True)
        try:
            stored = store.config
            diff = _diff(stored, setup.config)
            if diff:
                raise RunDirError(
                    f"cannot resume {run_dir} with a different configuration:\n  "
                    + "\n  ".join(diff)
                    + f"\nContinue it as it was with `nasforge resume {run_dir}`, or choose "
                    "another --out directory."
                )
            setup.config = {**stored, **{k: setup.config[k] for k in IDENTITY_KEYS}}
            setup.config["dataset"] = stored["dataset"]
            data = _load_data(setup, run_dir)
        except BaseException:
            store.close()
            raise
    else:
        try:
            data = _load_data(setup, None)  # bad data fails before a run is stored
            if plan is not None and not search_only and data is not None:
                # plan again from speeds measured on this machine and these data
                plan = _probed_plan(plan, setup, data)
                setup = configure(plan)
            # the execution is stored from the start: a first session that cannot reach
            # its executor (Ray down) leaves a run that resumes with the same executor
            store = RunStore.create(run_dir, {
                **setup.config, "budget": budget, "final_train": final_train,
                "final_epochs": final_epochs,
                **({"execution": execution} if isinstance(execution, dict) else {})})
        except BaseException:
            _release_claim(run_dir)
            raise
        _CLAIMED.discard(run_dir.resolve())
    return _session(store, setup, data, budget, final_train=final_train,
                    final_epochs=final_epochs, progress=progress, executor=execution,
                    t_call=t_call)


def resume(
    run_dir: str | Path,
    *,
    trials: int | None = None,
    time_budget: float | str | None = None,
    progress: bool = True,
    final_train: bool = True,
    executor: Executor | str | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
    trial_timeout: float | str | None = None,
    retries: int | None = None,
) -> SearchResult:
    """Continue the run in ``run_dir`` from its store alone.

    ``trials`` / ``time_budget`` replace the stored totals (e.g. to extend a finished
    search); by default the run continues to the budget it was started with. Execution
    options (see :func:`search`) not given are those the run was last started with.
    """
    t_call = time.monotonic()
    run_dir = Path(run_dir)
    # bad options fail before the store is opened: a refused resume changes nothing
    if trials is not None:
        _budget(trials, None)
    if time_budget is not None:
        parse_duration(time_budget)
    given = _execution(executor, workers if workers is not None else 1, ray_address,
                       trial_timeout, retries if retries is not None else 1)
    store = RunStore.open(run_dir, write=True)
    try:
        config = store.config
        if config.get("kind", "search") != "search":
            raise RunDirError(
                f"{run_dir} is a {config.get('kind')!r} run (one-shot supernet weights are not "
                "checkpointed), so it cannot be resumed; start it again with a new --out"
            )
        execution = _resumed_execution(config.get("execution"), given, executor, workers,
                                       ray_address, trial_timeout, retries)
        old = dict(config.get("budget") or {})
        if trials is None and time_budget is None:
            budget = _budget(old.get("trials"), old.get("time_budget"))
        else:
            budget = _budget(trials if trials is not None else old.get("trials"),
                             time_budget if time_budget is not None else old.get("time_budget"))
        if old.get("plan") and budget["time_budget"] is not None:
            from nasforge.budget import JobPlan

            plan = JobPlan.from_json(old["plan"])
            if budget["time_budget"] != plan.total_s:  # a new total: the search part grows
                plan.search_s = max(0.0, plan.search_s + budget["time_budget"] - plan.total_s)
                plan.total_s = budget["time_budget"]
            budget["plan"] = plan.to_json()
        setup = _rebuild(config, run_dir)
        data = _load_data(setup, run_dir)
    except BaseException:
        store.close()
        raise
    return _session(store, setup, data, budget, final_train=final_train,
                    final_epochs=config.get("final_epochs"), progress=progress,
                    executor=execution, t_call=t_call)


def _session(store: RunStore, setup: _Setup, data: Dataset | None, budget: dict[str, Any],
             *, final_train: bool, final_epochs: int | None, progress: bool,
             executor: Executor | dict[str, Any], t_call: float | None = None
             ) -> SearchResult:
    """Run one session of a run (fresh or resumed) to the end of its budget.

    With a job plan (a time budget) the search stops at its share and the final training
    gets what is left of the whole budget, minus the reserve for testing and export.
    """
    from nasforge.budget import JobPlan

    t_call = time.monotonic() if t_call is None else t_call
    plan = JobPlan.from_json(budget["plan"]) if budget.get("plan") else None
    own_executor = not isinstance(executor, Executor)
    spec = executor if isinstance(executor, dict) else None
    ex: Executor | None = executor if isinstance(executor, Executor) else None
    strat = setup.strategy
    unit = "trials" if budget["trials"] is not None else "seconds"
    total = budget["trials"] if unit == "trials" else budget["time_budget"]
    display: _Display | None = None
    loop: _Loop | None = None
    try:
        state, _ = store.strategy_state()
        if state is not None:
            try:
                strat.load_state_dict(state, store.trials())  # O(1) state + the trials
            except RunDirError as e:
                raise RunDirError(f"{store.run_dir}: {e}") from None
            if strat.n_told != store.n_completed():
                raise RunDirError(
                    f"the run in {store.run_dir} is inconsistent: the strategy was told "
                    f"{strat.n_told} results but {store.n_completed()} trials are complete"
                )
            restore = getattr(setup.estimator, "restore", None)
            if callable(restore):  # e.g. early-stopping references, rebuilt from the store
                restore(store.trials("ok"))
        if ex is None:  # started here, before the run is marked running
            ex = make_executor(**spec)  # type: ignore[arg-type]
        config = {**setup.config, "budget": budget, "final_train": final_train,
                  "final_epochs": final_epochs}
        if spec is not None:
            config["execution"] = spec
        store.set_meta(config=config, status="running")
        display = _Display(progress, total, 0, unit)
        if plan is not None:
            display.t0 = t_call - plan.spent_s
        if plan is not None and not store.trials():
            for line in plan.describe():
                display.log(line)
        loop = _Loop(store, setup, data, budget, ex, display)
        if plan is not None:  # the search's share, less what loading already spent
            if not store.trials():  # fixed once: a resumed run continues to the same total
                plan.search_s = max(0.0, plan.search_s - (time.monotonic() - t_call))
                budget["plan"] = plan.to_json()
                store.set_meta(config={**config, "budget": budget})
            loop.time_budget = plan.search_s
            loop.fit_fidelity = setup.estimator.time_fidelity
            display.total = loop.time_budget
            loop.deadline_at = time.time() + max(0.0, loop.time_budget - loop.elapsed())
            if store.n_completed() and any(t.ok for t in store.trials("ok")):
                setup.estimator.deadline = loop.deadline_at  # else after the first success
        display.update(loop.progress(), loop.best_text())
        loop.run()
        if own_executor:  # free the workers (and their copies of the data) before retraining
            ex.shutdown(wait=False, cancel_futures=True)
        store.set_meta(status="searched", elapsed_s=loop.elapsed())
        display.stop()
        cands, why = _candidates(store, setup, store.trials())
        final_seconds = None
        if plan is not None:  # what is left of the whole budget, less the reserve
            reserve = plan.reserve_s
            if plan.probe and cands and data is not None:
                reserve = _winner_reserve(setup, data, cands[0], reserve)
            job_elapsed = plan.spent_s + loop.prior + (time.monotonic() - t_call)
            final_seconds = max(1.0, plan.total_s - reserve - job_elapsed)
        best, test_metrics, model_dir, unmet = _final(store, setup, data, cands, final_train,
                                                      final_epochs, display, final_seconds)
        why = why or unmet
        store.set_meta(status="finished")
        trials = store.trials()
        _write_reports(store, setup, trials, best, test_metrics, why, display)
        display.print(_summary_table(trials, strat.metric, strat.mode))
        if why:
            from rich.markup import escape

            display.print(f"[bold red]{escape(why)}[/]")
        if "test_accuracy" in test_metrics:
            display.print(f"best model: {model_dir or '(not exported)'}  test accuracy "
                          f"{float(test_metrics['test_accuracy']):.4f}")
        return SearchResult(
            run_dir=store.run_dir,
            best_arch=None if best is None else setup.space.parse(best.arch),
            best_metrics={} if best is None else dict(best.metrics),
            test_metrics=test_metrics,
            model_dir=model_dir,
            trials=trials,
            feasible=why is None,
            message=why,
            pareto_ids=list((store.get_meta("pareto") or {}).get("trial_ids") or []),
        )
    except BaseException as e:
        from nasforge.executors import ExecutorLostError

        interrupted = isinstance(e, KeyboardInterrupt | ExecutorLostError)
        if display is not None:
            display.stop()
        if loop is not None:
            loop.abandon()  # in-flight trials stay 'running' and are redone on resume
        done = None
        try:
            extra = {} if loop is None else {"elapsed_s": loop.elapsed()}
            store.set_meta(status="interrupted" if interrupted else "error", **extra)
            done = store.n_completed()
        except Exception:  # noqa: BLE001 - never hide the original error
            pass
        if interrupted:
            stored = "" if done is None else f"{done} completed trials are stored in "
            print(f"\nInterrupted: {stored}{store.run_dir}\n"
                  f"Resume with: nasforge resume {store.run_dir}", file=sys.stderr, flush=True)
        raise
    finally:
        if own_executor and ex is not None:
            ex.shutdown(wait=False, cancel_futures=True)
        store.close()


def _execution(executor: Executor | str | None, workers: int, ray_address: str | None,
               trial_timeout: float | str | None, retries: int) -> Executor | dict[str, Any]:
    """An executor given as an object, or the checked spec of the one to start."""
    if isinstance(executor, Executor):
        if workers != 1 or ray_address is not None or trial_timeout is not None:
            raise NasforgeError("workers, ray_address and trial_timeout only apply when the "
                                "executor is given by name; set them on the Executor object")
        return executor
    if executor is not None and not isinstance(executor, str):
        raise NasforgeError(f"executor must be a name or an Executor, got "
                            f"{type(executor).__name__}")
    timeout = None if trial_timeout is None else parse_duration(trial_timeout)
    kind = validate_execution(executor or "auto", workers, ray_address, timeout, retries)
    return {"kind": kind, "workers": workers, "ray_address": ray_address,
            "trial_timeout": timeout, "retries": retries}


def _resumed_execution(stored: Any, given: Executor | dict[str, Any],
                       executor: Executor | str | None, workers: int | None,
                       ray_address: str | None, trial_timeout: float | str | None,
                       retries: int | None) -> Executor | dict[str, Any]:
    """The options given to resume, the rest as the run was last started."""
    if isinstance(given, Executor) or not isinstance(stored, dict):
        return given
    spec = dict(given)
    for key, value in (("kind", executor), ("workers", workers), ("ray_address", ray_address),
                       ("trial_timeout", trial_timeout), ("retries", retries)):
        if value is None and key in stored:
            spec[key] = stored[key]
    if executor is not None and spec["kind"] not in ("auto", "ray"):
        spec["ray_address"] = None  # another executor chosen now: the old cluster is moot
    if executor is None and workers is not None and spec["kind"] == "inprocess" and workers > 1:
        spec["kind"] = "auto"  # more workers asked for: let auto pick the process pool
    try:
        kind = validate_execution(spec["kind"], spec["workers"], spec["ray_address"],
                                  spec["trial_timeout"], spec["retries"])
    except (NasforgeError, KeyError, TypeError) as e:
        raise RunDirError(f"the stored execution options are invalid ({e}); give --executor "
                          "and --workers explicitly") from None
    return {**spec, "kind": kind}


def _candidates(store: RunStore, setup: _Setup,
                trials: list[TrialRecord]) -> tuple[list[TrialRecord], str | None]:
    """The ranked feasible candidates for the returned model, and why there are none.

    Feasible trials only, the highest fidelity of the run first, then the first objective
    (see :func:`nasforge.reporting.ranked_candidates`). Multi-objective or constrained runs
    also get their Pareto front (trial ids) stored under the ``pareto`` meta key.
    """
    from nasforge import reporting as R

    objs, cons = R.run_objectives(setup.config), R.run_constraints(setup.config)
    resource = R.fidelity_resource(trials, getattr(setup.strategy, "resource", None))
    cands = R.ranked_candidates(trials, objs[0], cons, resource)
    if len(objs) > 1 or cons:
        axes = R.report_objectives(objs, cons)
        store.set_meta(pareto={"objectives": [str(o) for o in axes],
                               "constraints": [str(c) for c in cons], "resource": resource,
                               "trial_ids": R.pareto_ids(trials, axes, cons, resource)})
    why = R.infeasible_message(trials, cons, objs[0]) if cons and not cands else None
    return cands, why


def _final(store: RunStore, setup: _Setup, data: Dataset | None, cands: list[TrialRecord],
           final_train: bool, final_epochs: int | None, display: _Display,
           final_seconds: float | None = None
           ) -> tuple[TrialRecord | None, dict[str, Any], Path | None, str | None]:
    """The returned trial, its test metrics and model dir (retrained now, or in an earlier
    session), and why no model is returned when every candidate broke a constraint."""
    if not cands:
        return None, {}, None, None
    best = cands[0]
    if not setup.estimator.needs_data:
        return best, dict(best.report), None, None  # e.g. a benchmark table's test accuracy
    if not final_train or data is None:
        return best, {}, None, None
    done = store.get_meta("final")
    model_dir = store.run_dir / "best"
    if done and done.get("first_choice", done.get("arch")) == best.arch and (
        done.get("model_dir") is None or (model_dir / "summary.json").is_file()
    ):  # retrained in an earlier session (the store may have moved: look beside it)
        if done.get("feasible") is False:
            return None, {}, None, done.get("message") or "no feasible model"
        chosen = next((t for t in cands if t.id == done.get("trial_id")), best)
        return (chosen, dict(done["metrics"]),
                None if done.get("model_dir") is None else model_dir, None)
    return _final_train(store, setup, data, cands, final_epochs, display, final_seconds)


def _write_reports(store: RunStore, setup: _Setup, trials: list[TrialRecord],
                   chosen: TrialRecord | None, test_metrics: Mapping[str, Any],
                   message: str | None, display: _Display) -> None:
    """``RUN_DIR/pareto.md`` and ``pareto.png`` for multi-objective or constrained runs."""
    from nasforge import reporting as R

    objs, cons = R.run_objectives(setup.config), R.run_constraints(setup.config)
    if len(objs) < 2 and not cons:
        return
    resource = R.fidelity_resource(trials, getattr(setup.strategy, "resource", None))
    final: dict[str, Any] = {}
    if chosen is not None:
        final["trial"] = f"{chosen.id} (`{chosen.arch}`)"
        final.update({k: _fmt(v) for k, v in test_metrics.items()
                      if k in ("test_accuracy", "val_accuracy", "params", "flops",
                               "latency_ms", "latency_ms_b32", "onnx_latency_ms",
                               "onnx_latency_ms_b32", "latency_threads", "peak_memory_mb")})
    else:
        final["none"] = message or "no trial succeeded"
    try:
        R.write_pareto_report(store.run_dir, trials, objs, cons, resource, final)
    except Exception as e:  # noqa: BLE001 - a plotting problem must not lose a finished run
        display.print(f"[yellow]could not write the Pareto report: {type(e).__name__}: {e}[/]")
