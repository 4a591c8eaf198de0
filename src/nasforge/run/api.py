"""The entry points: ``nasforge.search(...)`` and ``nasforge.resume(run_dir)``.

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

import contextlib
import math
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasforge import estimators, spaces
from nasforge.errors import NasforgeError, RunDirError
from nasforge.estimators.base import Estimator
from nasforge.executors import Executor, make_executor, validate_execution
from nasforge.run.display import _Display, _summary_table
from nasforge.run.finalize import _candidates, _final, _write_reports
from nasforge.run.loop import Callback, Run
from nasforge.run.plan import _n_examples, _planned, _probed_plan, _winner_reserve
from nasforge.run.setup import IDENTITY_KEYS, _build, _diff, _goals, _load_data, _rebuild, _Setup
from nasforge.spaces.base import Arch, SearchSpace
from nasforge.store import RunStore, TrialRecord, trials_dataframe
from nasforge.strategies.base import Strategy

if TYPE_CHECKING:
    import pandas as pd

    from nasforge.data import Dataset


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
    #: what the model takes (``"image"``, ``"tabular"``): how to call ``predict`` on it
    input_kind: str = "image"

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


# ------------------------------------------------------------------------------ entry points
def search(
    dataset: str | Dataset | pd.DataFrame = "auto",
    *,
    space: str | os.PathLike[str] | SearchSpace | None = None,
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
    task: str | None = None,
    target: str | Sequence[str] | None = None,
    callbacks: Sequence[Callback] = (),
) -> SearchResult:
    """Search ``space`` for a good network on ``dataset``; every step is stored in ``out``.

    ``dataset`` is a name, an image folder, a :class:`Dataset`, a pandas DataFrame or a
    ``.csv``/``.tsv``/``.parquet`` file; for the two kinds of table ``target`` names the
    column(s) to predict (several numeric ones: multi-output regression) and the task is
    inferred from them unless ``task`` is given (see :mod:`nasforge.data.tabular`). A
    DataFrame is searched in memory (resume it from Python with the same frame).

    ``space`` None takes the default space for the data's input kind (``cnn`` for
    images; :func:`nasforge.spaces.default_for`); a space that cannot take the data's
    inputs is refused before anything is stored. A path ending in ``.yaml``, ``.yml``,
    ``.json`` or ``.toml`` is a space file (:func:`nasforge.spaces.from_file`); the run
    stores its content, so the file may move or change afterwards.

    ``task`` (``"classification"``, ``"regression"``; see :mod:`nasforge.tasks`) says
    what is predicted; None takes the dataset's (a loaded data set is classification, an
    in-memory :class:`Dataset` knows its own). Its primary metric is the default objective
    (``val_accuracy:max``; ``val_rmse:min`` for regression).

    ``time_budget`` (seconds or ``"10m"``) is the wall-clock time of the *whole job*:
    search, final training, test and export (see :mod:`nasforge.run.budget`; the plan is
    printed first). ``budget_spent`` seconds of it are already gone (the command line
    counts its start-up). Without another strategy the search is successive halving over
    training seconds, known-good designs first; the final training gets the time left.
    ``trials`` counts completed (ok or failed) trials (summed over resumes); with both,
    the search stops asking at whichever comes first. ``resume=True`` continues the run
    in ``out`` if there is one (its configuration must match). Ctrl-C stores everything,
    prints how to resume and re-raises ``KeyboardInterrupt``. ``dataset_options`` go to
    :func:`load_dataset` (``val_fraction``, ``image_size``, ``max_train``; for
    ``text:`` data also ``text_column``, ``vocab_size``, ``max_length``).

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

    ``callbacks``: :class:`~nasforge.run.loop.Callback` hooks for every trial (loggers:
    :mod:`nasforge.loggers`), told ``on_finalized`` with the result at the end.
    """
    t_call = time.monotonic()
    dataset, task, dataset_options = _tables(dataset, target, task, dataset_options, seed)
    if space is None:  # the default space for the data's kind: cnn for images
        from nasforge.data import input_kind_of

        space = spaces.default_for(input_kind_of(dataset))
    dataset_options, objectives = _task_defaults(dataset, task, dataset_options, objectives)
    space, space_options = _task_space(dataset, dataset_options, space, space_options)
    estimator_options = _task_train_defaults(dataset, dataset_options, estimator,
                                             estimator_options)
    budget = _budget(trials, time_budget)
    estimator_options = _space_train_defaults(space, estimator, estimator_options,
                                              planned=budget["time_budget"] is not None)
    plan = None
    search_only = False
    if budget["time_budget"] is not None:  # the whole job fits the time: plan the split
        from nasforge.run.budget import plan_job

        est_needs_data = (estimator.needs_data if isinstance(estimator, Estimator) else
                          estimators.registry.factory(estimator).needs_data)
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
        f"{setup.space.label}-{setup.strategy.name}")
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
            if data is not None:
                spaces.check_input(setup.space, data.input_kind)
        except BaseException:
            store.close()
            raise
    else:
        try:
            data = _load_data(setup, None)  # bad data fails before a run is stored
            if data is not None:
                spaces.check_input(setup.space, data.input_kind)
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
                    t_call=t_call, callbacks=callbacks)


def _task_space(dataset: Any, dataset_options: Any, space: str | SearchSpace,
                space_options: Mapping[str, Any] | None
                ) -> tuple[str | SearchSpace, Mapping[str, Any] | None]:
    """The space to search: the given one, with the architecture choices of the task's
    own head added when it declares some (:meth:`~nasforge.tasks.Task.arch_choices`:
    detection's neck and head) and the space builds backbones. A task option that is
    wrong fails here, in one line, before anything loads."""
    from nasforge import tasks
    from nasforge.data import Dataset
    from nasforge.spaces.headed import with_task_choices
    from nasforge.tasks.base import Task

    if isinstance(dataset, Dataset):
        name, t_opts = dataset.task, dict(dataset.task_options)
    else:
        opts = dict(dataset_options or {})
        name, t_opts = opts.get("task") or "classification", opts.get("task_options") or {}
    if not isinstance(t_opts, Mapping):
        raise NasforgeError(f"task_options must map option names to values, got {t_opts!r}")
    if getattr(tasks.registry.factory(name), "arch_choices", None) is Task.arch_choices:
        return space, space_options  # the task has no head of its own to search
    task = tasks.get(name, **dict(t_opts))
    if not task.arch_choices() or spaces.is_space_file(space):
        return space, space_options
    base = space if isinstance(space, SearchSpace) else spaces.resolve(space, space_options)
    wrapped = with_task_choices(base, task)
    if wrapped is base:
        return space, space_options
    return wrapped, None


def _task_train_defaults(dataset: Any, dataset_options: Any, estimator: str | Estimator,
                         options: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``options`` with the task's :attr:`~nasforge.tasks.Task.train_defaults` the user
    did not give, for an estimator given by name that takes them."""
    from nasforge import tasks
    from nasforge.data import Dataset

    name = dataset.task if isinstance(dataset, Dataset) else \
        (dict(dataset_options or {}).get("task") or "classification")
    wanted = dict(getattr(tasks.registry.factory(name), "train_defaults", {}) or {})
    if not wanted or not isinstance(estimator, str):
        return None if options is None else dict(options)
    names, var_kw = estimators.registry.accepted_options(estimator)
    opts = dict(options or {})
    for k, v in wanted.items():
        if (k in names or var_kw) and k not in opts:
            opts[k] = v
    return opts or None


def _space_train_defaults(space: str | SearchSpace, estimator: str | Estimator,
                          options: Mapping[str, Any] | None, *, planned: bool
                          ) -> dict[str, Any] | None:
    """``options`` with the space's :attr:`~SearchSpace.train_defaults` the user did not
    give, for an estimator given by name that takes them."""
    if spaces.is_space_file(space):  # a file's defaults follow its input kind
        cls: Any = spaces.resolve(space)
    else:
        cls = spaces.registry.factory(space) if isinstance(space, str) else space
    wanted = dict(getattr(cls, "train_defaults", {}) or {})
    if planned:
        wanted.pop("epochs", None)
    if not wanted or not isinstance(estimator, str):
        return None if options is None else dict(options)
    names, var_kw = estimators.registry.accepted_options(estimator)
    opts = dict(options or {})
    if planned and {"epochs", "data_fraction", "seconds"} & set(opts):
        return opts or None
    for k, v in wanted.items():
        if (k in names or var_kw) and k not in opts:
            opts[k] = v
    return opts or None


def _tables(dataset: Any, target: Any, task: str | None, dataset_options: Any, seed: int
            ) -> tuple[Any, str | None, Any]:
    """A DataFrame becomes an in-memory tabular :class:`Dataset`; a table file keeps its
    path (resumable) with the target in its dataset options and the task fixed now (read
    from the target when not given), so the objective fits before the data are loaded."""
    from nasforge.data.tabular import (
        _targets,
        from_dataframe,
        infer_task,
        is_dataframe,
        is_table_path,
        read_table,
    )
    from nasforge.data.text import TEXT_OPTIONS, is_text_source

    opts = dict(dataset_options or {})
    if target is None:
        target = opts.pop("target", None)
    if is_text_source(dataset):  # text:FILE.csv: target names the label column
        text = {k: opts.pop(k) for k in TEXT_OPTIONS if k in opts}
        if text:
            opts["text_options"] = {**opts.get("text_options", {}), **text}
        if target is not None:
            opts["target"] = target if isinstance(target, str) else [str(t) for t in target]
        return dataset, task, opts or None
    if is_dataframe(dataset):
        return from_dataframe(dataset, target, task=task, seed=seed, **opts), None, None
    if is_table_path(dataset):
        if task is None and opts.get("task") is None:
            df = read_table(dataset)
            names = _targets(df, target, Path(dataset).name)
            y = df[names].dropna()
            task = infer_task(y) if len(y) else "classification"
            print(f"task: {task} (inferred from target {', '.join(names)}; --task overrides)")
        opts["target"] = [target] if isinstance(target, str) else \
            None if target is None else [str(t) for t in target]
        return dataset, task, opts
    if target is not None:
        if isinstance(dataset, str | os.PathLike) and Path(dataset).is_file():
            raise NasforgeError(f"{dataset}: not a table file; give a .csv, .tsv or .parquet "
                                "file (target names one of its columns)")
        raise NasforgeError("target names a column of a table: give a DataFrame or a "
                            ".csv/.tsv/.parquet file as the dataset")
    return dataset, task, dataset_options


def _task_defaults(dataset: Any, task: str | None, dataset_options: Any, objectives: Any
                   ) -> tuple[dict[str, Any] | None, Any]:
    """``dataset_options`` with the task to load, and the task's default objective when
    none is given. The loop never asks which task it runs: the objective carries it."""
    from nasforge import tasks
    from nasforge.data import Dataset

    if task is not None:
        tasks.registry.factory(task)  # an unknown name lists the valid ones
    if isinstance(dataset, Dataset):
        if task is not None and task != dataset.task:
            raise NasforgeError(f"task={task!r} but the in-memory dataset {dataset.name!r} is "
                                f"a {dataset.task} data set; make it with from_arrays(..., "
                                f"task={task!r})")
        name = dataset.task
    else:
        opts = dict(dataset_options or {})
        from nasforge.data.detection import is_yolo_layout, layout_task

        if task is None and opts.get("task") is None and is_yolo_layout(dataset):
            task = layout_task(dataset)  # a data.yaml says what it is for
        if task is not None:
            if opts.get("task", task) != task:
                raise NasforgeError(f"task={task!r} conflicts with dataset option "
                                    f"task={opts['task']!r}")
            opts["task"] = task
        dataset_options = opts or dataset_options
        name = opts.get("task") or "classification"
    if objectives is None and name != "classification":
        cls = tasks.registry.factory(name)
        objectives = f"val_{cls.primary}:{cls.mode}"  # type: ignore[attr-defined]
    return dataset_options, objectives


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
    callbacks: Sequence[Callback] = (),
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
        st = config.get("strategy")
        name = str(st.get("name", "")) if isinstance(st, dict) else ""
        # SPOS, DARTS and GDAS checkpoint their supernet and resume through their own
        # command (it rebuilds the supernet); OFA does not yet
        if config.get("kind") == "oneshot" and not name.startswith("ofa-"):
            raise RunDirError(
                f"{run_dir} is a one-shot run: it cannot be resumed with `nasforge resume`; "
                f"continue it with `nasforge oneshot --out {run_dir} --resume` and the options "
                "it was started with"
            )
        if config.get("kind", "search") != "search":
            raise RunDirError(
                f"{run_dir} is a {config.get('kind')!r} run (its supernet weights are not "
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
            from nasforge.run.budget import JobPlan

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
                    executor=execution, t_call=t_call, callbacks=callbacks)


def _session(store: RunStore, setup: _Setup, data: Dataset | None, budget: dict[str, Any],
             *, final_train: bool, final_epochs: int | None, progress: bool,
             executor: Executor | dict[str, Any], t_call: float | None = None,
             callbacks: Sequence[Callback] = ()) -> SearchResult:
    """Run one session of a run (fresh or resumed) to the end of its budget.

    With a job plan (a time budget) the search stops at its share and the final training
    gets what is left of the whole budget, minus the reserve for testing and export.
    """
    from nasforge.run.budget import JobPlan

    t_call = time.monotonic() if t_call is None else t_call
    plan = JobPlan.from_json(budget["plan"]) if budget.get("plan") else None
    own_executor = not isinstance(executor, Executor)
    spec = executor if isinstance(executor, dict) else None
    ex: Executor | None = executor if isinstance(executor, Executor) else None
    strat = setup.strategy
    unit = "trials" if budget["trials"] is not None else "seconds"
    total = budget["trials"] if unit == "trials" else budget["time_budget"]
    display: _Display | None = None
    loop: Run | None = None
    try:
        if data is not None:  # the known-good designs in the order for these data
            strat.order_known_for(_n_examples(data))
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
            if setup.estimator.restores_state:  # e.g. early-stopping references
                setup.estimator.restore(store.trials("ok"))
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
        if data is not None and not store.trials():
            display.log(f"task: {data.task} (objective {setup.strategy.metric}:"
                        f"{setup.strategy.mode})")
        if plan is not None and not store.trials():
            for line in plan.describe():
                display.log(line)
        loop = Run(store, setup, data, budget, ex, display, callbacks=callbacks)
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
        shown = next((k for k in ("test_accuracy", "test_rmse") if k in test_metrics), None)
        if shown is not None:
            display.print(f"best model: {model_dir or '(not exported)'}  "
                          f"{shown.replace('_', ' ', 1)} {float(test_metrics[shown]):.4f}")
        result = SearchResult(
            run_dir=store.run_dir,
            best_arch=None if best is None else setup.space.parse(best.arch),
            best_metrics={} if best is None else dict(best.metrics),
            test_metrics=test_metrics,
            model_dir=model_dir,
            trials=trials,
            feasible=why is None,
            message=why,
            pareto_ids=list((store.get_meta("pareto") or {}).get("trial_ids") or []),
            input_kind=data.input_kind if data is not None else "image",
        )
        for cb in callbacks:
            cb.on_finalized(result)
        return result
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
