"""Building a search's components, from arguments or from a stored run config.

The space, strategy and estimator are made from names and options (a wrong option is
the user's error, named with the valid ones), objectives and constraints are handed to
the strategy that optimizes them, and the config that rebuilds all of it is what the
run store keeps: :func:`_rebuild` makes the same components again on resume.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasforge import estimators, spaces, strategies
from nasforge.errors import NasforgeError, RunDirError
from nasforge.estimators.base import Estimator
from nasforge.registry import Registry
from nasforge.spaces.base import SearchSpace
from nasforge.strategies.base import Strategy

if TYPE_CHECKING:
    from nasforge.data import Dataset


#: config keys that must be equal for ``search(..., resume=True)`` to continue a run
IDENTITY_KEYS = ("dataset", "space", "strategy", "estimator", "seed", "objectives",
                 "constraints")


# ----------------------------------------------------------------------------- components
def _make(registry: Registry[Any], name: str, options: Mapping[str, Any], **fixed: Any) -> Any:
    """Instantiate ``name`` with ``options``; a wrong option name is the user's error."""
    registry.check_options(name, options, fixed=fixed)  # one line, with a did-you-mean
    try:
        return registry.factory(name)(**fixed, **options)
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
    space: str | os.PathLike[str] | SearchSpace,
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
    elif spaces.is_space_file(space):  # stored as its document: the file may move
        sp = spaces.resolve(space, dict(space_options or {}))
    elif isinstance(space, str):
        sp = _make(spaces.registry, space, dict(space_options or {}))
    else:
        raise NasforgeError(f"space must be a name, a space file or a SearchSpace, got "
                            f"{type(space).__name__}")
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
        names, var_kw = estimators.registry.accepted_options(estimator)
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
        from nasforge.data.tabular import is_table_path

        if p.is_dir() or (is_table_path(p) and p.is_file()) or (
                p.suffix.lower() in (".yaml", ".yml") and p.is_file()):
            # a folder of images or a table: store where it is, wherever we resume from
            name = str(p.resolve())
        ds = {"name": name, "in_memory": False, "data_dir": data_dir,
              "options": _jsonable(dict(dataset_options or {}))}
    else:
        raise NasforgeError(
            f"dataset must be a name, a path or a nasforge Dataset, got {type(dataset).__name__}"
        )
    config = {
        "dataset": ds,
        "space": _spec(sp, space_options if isinstance(space, str)
                       and not spaces.is_space_file(space) else None),
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
        have = [str(o) for o in strategy.objectives or []] or [
            f"{strategy.metric}:{strategy.mode}"]
        if specs is not None and have != specs:
            raise NasforgeError(f"the strategy object optimizes {have}, not {specs}; build it "
                                f"with those objectives or give the strategy by name")
    elif isinstance(strategy, str):
        names, _ = strategies.registry.accepted_options(strategy)
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
    known = est_cls.reported_metrics
    if known is not None and (unknown := sorted(wanted - set(known))):
        name = estimator if isinstance(estimator, str) else estimator.name
        raise NasforgeError(
            f"unknown metric(s) {unknown} in the objectives or constraints: estimator "
            f"{name!r} reports {', '.join(sorted(known))}"
        )
    if isinstance(estimator, str) and wanted & set(_ONNX_METRICS) and "latency" not in e_opts:
        names, _ = estimators.registry.accepted_options(estimator)
        if "latency" in names:  # the cheap default would never measure these
            e_opts["latency"] = "torch+onnx"
    return specs, [str(c) for c in cons] or None, strategy, s_opts, e_opts


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
