"""The ``nasforge`` command line: search, resume, show, predict, export, and listings.

Errors that are the user's to fix (:class:`~nasforge.errors.NasforgeError`, bad options)
become one red line on stderr and exit code 2; Ctrl-C exits 130 and says how to resume;
anything else keeps its traceback, because it is a bug.

Adding a command from another module: give ``nasforge/foo.py`` a function
``register_cli(app: typer.Typer)`` that adds it (``@app.command("foo")``), and add
``"nasforge.foo"`` to :data:`COMMAND_MODULES`; :func:`main` then offers ``nasforge foo``.
"""

from __future__ import annotations

import errno
import importlib
import json
import math
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from nasforge.errors import NasforgeError

#: modules whose ``register_cli(app)`` adds more commands (see module docstring)
COMMAND_MODULES: list[str] = [
    "nasforge.bench",
    "nasforge.proxy_eval",
    "nasforge.oneshot",
    "nasforge.oneshot.ofa",
]

app = typer.Typer(
    name="nasforge",
    help="Neural architecture search: find, train and export a small image classifier.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # bugs get a plain traceback
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: the run directory of the search/resume in progress, for the Ctrl-C message
_current_run: dict[str, str | None] = {"dir": None}

# defaults of `nasforge search` with the training estimator, per data set: a first run
# must finish in minutes on 2 CPU cores (Fashion-MNIST: ~3-5 min, digits: seconds)
DEFAULT_TRIALS = 10
#: the whole job's wall-clock time when neither --trials nor --time-budget is given
DEFAULT_TIME_BUDGET = {"fashion-mnist": 300.0, "digits": 60.0, "folder": 180.0}
SEARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "fashion-mnist": {"epochs": 1, "data_fraction": 0.1, "final_epochs": 2},
    "digits": {"epochs": 3, "data_fraction": 1.0, "final_epochs": 10},
    "folder": {"epochs": 1, "data_fraction": 1.0, "final_epochs": 3},
}


def _console(stderr: bool = False) -> Console:
    """A console on the *current* sys.stdout/stderr (tests swap them); wide when piped."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 160
    return Console(file=stream, width=width, soft_wrap=False, highlight=False)


def _out(text: str = "", style: str | None = None) -> None:
    _console().print(Text(text, style=style or ""), soft_wrap=True)


def _fmt(v: Any) -> str:
    """Compact numbers for tables: accuracies 4 digits, big counts with k/M."""
    if v is None:
        return "-"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if abs(v) >= 1e6:
        return f"{v / 1e6:.2f}M"
    if abs(v) >= 1e4:
        return f"{v / 1e3:.1f}k"
    if isinstance(v, int) or float(v).is_integer():
        return str(int(v))
    return f"{v:.4g}" if abs(v) >= 1 else f"{v:.4f}"


# ----------------------------------------------------------------------------- options
def parse_options(pairs: Sequence[str] | None, flag: str) -> dict[str, Any]:
    """``["C=8", "ops=[\\"a\\"]", "name=x"]`` -> ``{"C": 8, "ops": ["a"], "name": "x"}``.

    Values are JSON where they parse as JSON (numbers, booleans, lists) and plain
    strings otherwise, so ``--space-opt N=2`` and ``--strategy-opt mode=min`` both work.
    """
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise NasforgeError(f"{flag} expects key=value (e.g. {flag} C=8), got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
        except RecursionError:  # "[[[[..." thousands deep: hostile, not a value
            raise NasforgeError(f"{flag} {key}=...: the value is nested too deeply") from None
    return out


def _duration(value: str | None, flag: str = "--time-budget") -> float | None:
    if value is None:
        return None
    from nasforge.experiment import parse_duration

    try:
        return parse_duration(value)
    except NasforgeError as e:
        raise NasforgeError(f"{flag}: {e}") from None


def _dataset_kind(dataset: str, data_dir: str | None) -> str:
    """Which row of :data:`SEARCH_DEFAULTS` applies ("auto" resolved as the loader does)."""
    from nasforge import data as D

    key = dataset.strip().lower()
    key = getattr(D, "_ALIASES", {}).get(key, key)
    if key == "auto":
        return "fashion-mnist" if D.fashion_mnist_available(data_dir) else "digits"
    if key in SEARCH_DEFAULTS:
        return key
    return "folder"


def _accepts(estimator: str, option: str) -> bool:
    """Whether estimator ``estimator`` takes ``option`` (so a default may be passed to it)."""
    import inspect

    from nasforge import estimators

    factory = estimators.registry.factory(estimator)  # UnknownNameError lists valid names
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return option in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


# -------------------------------------------------------------------- execution options
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Trials run at once (default 1; resume: as the run was started). "
        "More than one runs a process pool, each worker with cores/N torch threads.",
    ),
]
ExecutorOpt = Annotated[
    str | None,
    typer.Option(
        "--executor",
        help="Where trials run: auto (in-process for 1 worker, else "
        "process), inprocess, process, thread, ray.",
    ),
]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="Address of an existing Ray cluster (implies --executor "
        "ray); without it, --executor ray starts a local Ray with --workers CPUs.",
    ),
]
TrialTimeoutOpt = Annotated[
    str | None,
    typer.Option(
        "--trial-timeout",
        help="Stop a trial after this long (90s, 10m); its worker is killed and the trial fails.",
    ),
]
RetriesOpt = Annotated[
    int | None,
    typer.Option(min=0, help="Times a trial is retried when its worker process dies (default 1)."),
]


#: the largest options file ``--config`` reads (real ones are a few hundred bytes)
MAX_CONFIG_BYTES = 1 << 20


def _load_config(ctx: typer.Context, param: Any, value: Path | None) -> Path | None:
    """``--config FILE``: a JSON/TOML file of option defaults; the command line still wins.

    Keys are the option names (``trials``, ``time_budget`` or ``time-budget``, ...);
    ``space_opt`` / ``strategy_opt`` / ``estimator_opt`` may be tables. The values go
    through the same type checks as the command line (click's ``default_map``).
    """
    if value is None or ctx.resilient_parsing:
        return value
    path = Path(value)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):  # checked before anything is read
        raise NasforgeError(f"--config: {path} must be a .json or .toml file")
    try:
        st = path.stat()
        if not path.is_file():
            raise NasforgeError(f"--config: {path} is not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise NasforgeError(
                f"--config: {path} is {st.st_size:,} bytes; an options file is at most "
                f"{MAX_CONFIG_BYTES:,}"
            )
        with path.open("rb") as f:  # bounded even if the file grows meanwhile
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise NasforgeError(f"--config: cannot read {path}: {e.strerror or e}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise NasforgeError(f"--config: {path} is over {MAX_CONFIG_BYTES:,} bytes")
    try:
        if suffix == ".toml":
            import tomllib

            doc: Any = tomllib.loads(raw.decode("utf-8"))
        elif suffix == ".json":
            from nasforge.jsonio import loads

            doc = loads(raw, f"--config: {path}", kind=None)
        else:
            raise NasforgeError(f"--config: {path} must be a .json or .toml file")
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise NasforgeError(f"--config: {path} is not valid {suffix[1:].upper()}: {e}") from None
    if not isinstance(doc, dict):
        raise NasforgeError(
            f"--config: {path} must hold a table/object of options, not {type(doc).__name__}"
        )
    params = {p.name: p for p in ctx.command.params if p.name and p.name != "config"}
    defaults: dict[str, Any] = {}
    for key, v in doc.items():
        name = str(key).replace("-", "_")
        if name not in params:
            raise NasforgeError(
                f"--config: unknown option {key!r} in {path}; valid options: "
                f"{', '.join(sorted(params))}"
            )
        if getattr(params[name], "multiple", False):
            if isinstance(v, dict):
                v = [f"{k}={json.dumps(x)}" for k, x in v.items()]
            elif isinstance(v, str):
                v = [v]
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise NasforgeError(
                    f"--config: {key!r} must be a table of options or a list of 'key=value' strings"
                )
        elif isinstance(v, dict | list):
            raise NasforgeError(f"--config: {key!r} must be a single value, not {type(v).__name__}")
        elif isinstance(v, bool) and not getattr(params[name], "is_flag", False):
            raise NasforgeError(  # `trials = true` is not a count of 1
                f"--config: {key!r} takes a value, not {str(v).lower()}"
            )
        elif v is not None and not isinstance(v, bool):
            v = str(v)  # parsed and checked by the option's own type, like command-line text
        defaults[name] = v
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


def _execution(
    workers: int | None,
    executor: str | None,
    ray_address: str | None,
    trial_timeout: str | None,
    retries: int | None,
) -> dict[str, Any]:
    """The execution keyword arguments of search/resume, with bad values refused early."""
    from nasforge.executors import validate_execution

    timeout = _duration(trial_timeout, "--trial-timeout")
    validate_execution(
        executor or "auto", workers or 1, ray_address, timeout, 1 if retries is None else retries
    )
    return {
        "executor": executor,
        "workers": workers,
        "ray_address": ray_address,
        "trial_timeout": timeout,
        "retries": retries,
    }


# ------------------------------------------------------------------------------ search
@app.command()
def search(
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            "-d",
            help="auto (Fashion-MNIST if installed, else digits), digits, "
            "fashion-mnist, or a folder with one sub-folder of images per class.",
        ),
    ] = "auto",
    space: Annotated[str, typer.Option(help="Search space (see `nasforge spaces`).")] = "cnn",
    strategy: Annotated[
        str | None,
        typer.Option(help="Search strategy (see `nasforge strategies`) (default: evolution; "
                     "nsga2 with several --objective)."),
    ] = None,
    estimator: Annotated[
        str, typer.Option(help="Performance estimator (see `nasforge estimators`).")
    ] = "train",
    trials: Annotated[
        int | None,
        typer.Option(
            min=1, help=f"Number of trials (default: {DEFAULT_TRIALS}; none with --time-budget)."
        ),
    ] = None,
    time_budget: Annotated[
        str | None, typer.Option("--time-budget", "-t", help="Wall-clock budget: 90s, 10m, 1h30m.")
    ] = None,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Run directory (default: runs/SPACE-STRATEGY-TIME)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out if there is one.")
    ] = False,
    data_dir: Annotated[
        str | None, typer.Option("--data-dir", help="Where to look for Fashion-MNIST's IDX files.")
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(min=1, help="Training epochs per trial (default: 1; digits: 3)."),
    ] = None,
    data_fraction: Annotated[
        float | None,
        typer.Option(
            "--data-fraction",
            min=0.0,
            max=1.0,
            help="Fraction of the training split used per trial (default: 0.1 for "
            "Fashion-MNIST, else 1.0).",
        ),
    ] = None,
    final_epochs: Annotated[
        int | None,
        typer.Option(
            "--final-epochs",
            min=1,
            help="Epochs of the final retraining of the best architecture "
            "(default: Fashion-MNIST 2, digits 10, folders 3).",
        ),
    ] = None,
    no_final_train: Annotated[
        bool, typer.Option("--no-final-train", help="Skip the final retraining and export.")
    ] = False,
    space_opt: Annotated[
        list[str] | None,
        typer.Option("--space-opt", help="Space option key=value (JSON value); repeatable."),
    ] = None,
    strategy_opt: Annotated[
        list[str] | None,
        typer.Option("--strategy-opt", help="Strategy option key=value (JSON value); repeatable."),
    ] = None,
    estimator_opt: Annotated[
        list[str] | None,
        typer.Option("--estimator-opt", help="Estimator option key=value; repeatable."),
    ] = None,
    no_progress: Annotated[
        bool, typer.Option("--no-progress", help="No progress display.")
    ] = False,
    objective: Annotated[
        list[str] | None,
        typer.Option("--objective", help="Objective metric:max|min, repeatable, first one decides "
                     "the returned model (e.g. --objective val_accuracy:max --objective "
                     "latency_ms:min)."),
    ] = None,
    constraint: Annotated[
        list[str] | None,
        typer.Option("--constraint", help="Hard constraint, repeatable: params<=200k, "
                     "latency_ms<=2, val_accuracy>=0.9."),
    ] = None,
    max_latency_ms: Annotated[
        float | None,
        typer.Option("--max-latency-ms", help="Hard bound on latency_ms (CPU, batch 1, median)."),
    ] = None,
    max_params: Annotated[
        str | None, typer.Option("--max-params", help="Hard bound on parameters: 200k, 1.5M.")
    ] = None,
    max_flops: Annotated[
        str | None, typer.Option("--max-flops", help="Hard bound on FLOPs per sample: 5M, 1G.")
    ] = None,
    max_memory_mb: Annotated[
        float | None,
        typer.Option("--max-memory-mb", help="Hard bound on peak inference memory (MiB)."),
    ] = None,
    early_stopping: Annotated[
        bool,
        typer.Option("--early-stopping", help="Stop hopeless trials early (median stopping "
                     "rule on learning curves; train estimator)."),
    ] = False,
    workers: WorkersOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    trial_timeout: TrialTimeoutOpt = None,
    retries: RetriesOpt = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            is_eager=True,
            callback=_load_config,
            help="JSON or TOML file of option defaults (e.g. trials = 20); "
            "options given on the command line win.",
        ),
    ] = None,
) -> None:
    """Search for a network; the best one is retrained and saved to RUN_DIR/best.

    --time-budget is the whole job (search, final training, test and export), planned and
    printed before it starts. The default is a 5-minute job on Fashion-MNIST (1 minute
    on digits, 3 on an image folder); --trials N without a time budget runs N trials and
    a final training of --final-epochs instead.
    """
    from nasforge import spaces, strategies

    tb = _duration(time_budget)
    execution = _execution(workers, executor, ray_address, trial_timeout, retries)
    execution["workers"] = workers or 1
    execution["retries"] = 1 if retries is None else retries
    space_options = parse_options(space_opt, "--space-opt")
    strategy_options = parse_options(strategy_opt, "--strategy-opt")
    estimator_options = parse_options(estimator_opt, "--estimator-opt")
    spaces.registry.factory(space)  # unknown names fail here, listing the valid ones
    if strategy is not None:
        strategies.registry.factory(strategy)
    from nasforge.objectives import parse_constraints, parse_objectives

    objectives = [str(o) for o in parse_objectives(objective)] if objective else None
    constraints = [str(c) for c in parse_constraints(
        list(constraint or []), max_latency_ms=max_latency_ms, max_params=max_params,
        max_flops=max_flops, max_memory_mb=max_memory_mb)] or None
    if early_stopping:
        estimator_options["early_stopping"] = True
    kind = _dataset_kind(dataset, data_dir)
    from nasforge import estimators as E

    timed = getattr(E.registry.factory(estimator), "time_fidelity", None) is not None
    if tb is None and trials is None and timed:  # the default job: a planned time budget
        tb = DEFAULT_TIME_BUDGET[kind]
    # with a time budget the plan chooses trial fidelities and the final training's length
    defaults = SEARCH_DEFAULTS[kind] if estimator == "train" and tb is None else {}
    for name, given in (("epochs", epochs), ("data_fraction", data_fraction)):
        if given is not None:
            if name in estimator_options and estimator_options[name] != given:
                raise NasforgeError(
                    f"--{name.replace('_', '-')} {given} conflicts with --estimator-opt "
                    f"{name}={estimator_options[name]}"
                )
            estimator_options[name] = given
        elif name in defaults and name not in estimator_options and _accepts(estimator, name):
            estimator_options[name] = defaults[name]
    if data_fraction is not None and data_fraction <= 0:
        raise NasforgeError("--data-fraction must be in (0, 1]")
    if final_epochs is None:
        final_epochs = defaults.get("final_epochs")
    n_trials = trials if trials is not None else (None if tb is not None else DEFAULT_TRIALS)
    multi = bool(objectives and len(objectives) > 1)
    planned = (tb is not None and timed and not multi and epochs is None
               and data_fraction is None and not {"epochs", "data_fraction", "seconds"}
               & set(estimator_options))
    shown = strategy or ("nsga2" if multi else "successive-halving" if planned
                         else "evolution")
    from nasforge.budget import process_age
    from nasforge.experiment import default_run_dir
    from nasforge.experiment import search as run_search

    # the run directory is chosen here so that Ctrl-C can name it
    run_dir = out if out is not None else default_run_dir(f"{space}-{shown}")
    _current_run["dir"] = str(run_dir)

    result = run_search(
        dataset,
        space=space,
        strategy=None if planned and strategy is None else shown,
        estimator=estimator,
        trials=n_trials,
        time_budget=tb,
        seed=seed,
        out=run_dir,
        resume=resume,
        space_options=space_options or None,
        strategy_options=strategy_options or None,
        estimator_options=estimator_options or None,
        final_train=not no_final_train,
        final_epochs=final_epochs,
        data_dir=data_dir,
        progress="phases" if no_progress else True,
        objectives=objectives,
        budget_spent=process_age() if tb is not None else 0.0,
        constraints=constraints,
        **execution,
    )
    _report(result)


@app.command("resume")
def resume_cmd(
    run_dir: Annotated[Path, typer.Argument(help="The run directory to continue.")],
    trials: Annotated[int | None, typer.Option(min=1, help="New total number of trials.")] = None,
    time_budget: Annotated[
        str | None, typer.Option("--time-budget", "-t", help="New total budget: 90s, 10m, 1h.")
    ] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress")] = False,
    workers: WorkersOpt = None,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    trial_timeout: TrialTimeoutOpt = None,
    retries: RetriesOpt = None,
) -> None:
    """Continue an interrupted (or finished, with a larger budget) search."""
    tb = _duration(time_budget)
    execution = _execution(workers, executor, ray_address, trial_timeout, retries)
    _current_run["dir"] = str(run_dir)
    from nasforge.experiment import resume as run_resume

    _report(
        run_resume(run_dir, trials=trials, time_budget=tb,
               progress="phases" if no_progress else True, **execution)
    )


def _report(result: Any) -> None:
    """Where the result is and how to use it."""
    run_dir = Path(result.run_dir)
    trials = list(result.trials or [])
    ok = sum(1 for t in trials if t.status == "ok")
    _out()
    _out(f"Search finished: {len(trials)} trials ({ok} ok) in {run_dir}", "bold green")
    if result.best_arch is None:
        if not getattr(result, "feasible", True):
            raise NasforgeError(f"{result.message or 'no feasible model'}; nothing was exported "
                                f"(see `nasforge show {run_dir}`)")
        _out("No trial succeeded; see `nasforge show " + str(run_dir) + "` for the errors.", "red")
        return
    _out(f"Best architecture: {result.best_arch}")
    if result.best_metrics:
        _out("  search:  " + _metrics_line(result.best_metrics))
    if result.test_metrics:
        _out("  final:   " + _metrics_line(result.test_metrics))
    if result.model_dir is not None:
        md = Path(result.model_dir)
        _out(f"Model saved to {md}", "bold")
        _out("Use it:")
        _out(f"  nasforge predict {md} IMAGE.png")
        _out(
            f"  python3 -c \"import nasforge; m = nasforge.load('{md}'); "
            "print(m.predict(['IMAGE.png']).labels)\""
        )
    _out(f"  nasforge show {run_dir}")


_SHOWN = ("test_accuracy", "val_accuracy", "val_loss", "params", "flops", "latency_ms",
          "train_time_s")  # fmt: skip


def _metrics_line(metrics: dict[str, Any]) -> str:
    keys = [k for k in _SHOWN if k in metrics] or sorted(metrics)[:6]
    return "  ".join(f"{k} {_fmt(metrics[k])}" for k in keys)


# -------------------------------------------------------------------------------- show
@app.command()
def show(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    top: Annotated[
        int, typer.Option(min=0, help="Show the N best trials (0: all, in order).")
    ] = 10,
) -> None:
    """A run's trials, its best architecture and the final model's metrics."""
    from nasforge.store import RunStore

    with RunStore.open(run_dir) as store:
        config = store.config
        trials = store.trials()
        meta = store.meta() if callable(getattr(store, "meta", None)) else {}
        strat = (config.get("strategy") or {}).get("options") or {}
        metric, mode = strat.get("metric", "val_accuracy"), strat.get("mode", "max")
        if not isinstance(metric, str) or mode not in ("max", "min"):  # multi-objective runs
            metric, mode = "val_accuracy", "max"
        try:
            best = store.best(metric, mode)
        except ValueError:
            best = None
    from nasforge import reporting as R

    # the run's own goals: feasible trials only, highest fidelity first (as the search chose)
    objs, cons = R.run_objectives(config), R.run_constraints(config)
    resource = R.fidelity_resource(trials, strat.get("resource"))
    metric, mode = objs[0].metric, objs[0].mode
    ranked = R.ranked_candidates(trials, objs[0], cons, resource)
    best = ranked[0] if ranked else None
    con = _console()
    ds = config.get("dataset") or {}
    name_of = lambda k: (config.get(k) or {}).get("name", "?")  # noqa: E731
    con.print(Text(f"Run {run_dir}", style="bold"), soft_wrap=True)
    con.print(
        f"dataset {ds.get('resolved') or ds.get('name', '?')}  space {name_of('space')}  "
        f"strategy {name_of('strategy')}  estimator {name_of('estimator')}  "
        f"seed {config.get('seed', '?')}  status {meta.get('status', '?')}",
        soft_wrap=True,
        markup=False,
    )
    counts = {s: sum(1 for t in trials if t.status == s) for s in ("ok", "failed", "running")}
    con.print(
        f"{len(trials)} trials: {counts['ok']} ok, {counts['failed']} failed, "
        f"{counts['running']} unfinished",
        markup=False,
    )
    if trials:
        sign = 1.0 if mode == "max" else -1.0

        def key(t: Any) -> float:
            try:
                v = float(t.metrics[metric])
            except (KeyError, TypeError, ValueError):
                return math.inf
            return -sign * v if math.isfinite(v) else math.inf

        shown = list(trials) if top == 0 else sorted(trials, key=lambda t: (key(t), t.id))[:top]
        extra = [k for k in ("params", "flops", "latency_ms") if any(k in t.metrics for t in shown)]
        title = "all trials" if top == 0 else f"top {len(shown)} by {metric} ({mode})"
        table = Table(title=title, title_justify="left")
        for col in ("id", "status", metric, *extra, "cost s"):
            table.add_column(col, justify="right")
        table.add_column("arch", overflow="fold")
        for t in shown:
            arch = t.arch if t.status != "failed" else f"{t.arch}  ({_first_line(t.error)})"
            table.add_row(
                str(t.id), t.status, _fmt(t.metrics.get(metric)),
                *(_fmt(t.metrics.get(k)) for k in extra), _fmt(t.cost), arch,
            )  # fmt: skip
        con.print(table)
    if trials and (len(objs) > 1 or cons):
        axes = R.report_objectives(objs, cons)
        con.print(R.front_rich_table(trials, axes, cons, resource, title=(
            f"Pareto front of {', '.join(map(str, axes))}"
            + (f" under {', '.join(map(str, cons))}" if cons else ""))))
    if best is not None:
        con.print(
            Text(f"Best architecture (trial {best.id}): {best.arch}", style="bold"), soft_wrap=True
        )
        con.print("  search:  " + _metrics_line(best.metrics), markup=False, soft_wrap=True)
    done = meta.get("final") if isinstance(meta, dict) else None
    if isinstance(done, dict) and done.get("feasible") is False:
        con.print(Text(f"No model returned: {done.get('message')}", style="bold red"),
                  soft_wrap=True)
    final = _final_info(Path(run_dir), meta)
    if final:
        metrics, model = final
        if metrics:
            con.print("  final:   " + _metrics_line(metrics), markup=False, soft_wrap=True)
        if model:
            con.print(
                f"Model: {model}  (nasforge predict {model} IMAGE.png)",
                markup=False,
                soft_wrap=True,
            )


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0][:80] if text and text.strip() else "error"


def _final_info(run_dir: Path, meta: dict[str, Any]) -> tuple[dict[str, Any], str | None] | None:
    """Final metrics and model dir: from the store's meta, else from best/summary.json."""
    final = meta.get("final") if isinstance(meta, dict) else None
    if isinstance(final, dict) and final.get("metrics"):
        md = final.get("model_dir")
        return dict(final["metrics"]), md if md and Path(md).exists() else None
    summary = run_dir / "best" / "summary.json"
    if summary.is_file():
        from nasforge.jsonio import read_json

        try:
            doc = read_json(summary)  # size, nesting and type checked: it is a user file
        except NasforgeError:
            return None
        metrics = doc.get("metrics")
        if not isinstance(metrics, dict):
            return None
        return {str(k): v for k, v in metrics.items() if isinstance(v, int | float)}, \
            str(run_dir / "best")
    return None


# ----------------------------------------------------------------------------- predict
def _expand_images(items: Sequence[Path]) -> list[Any]:
    """Files as given; folders -> their image files (sorted); .npy -> the array's images."""
    from PIL import Image

    exts = {e.lower() for e in Image.registered_extensions()}
    out: list[Any] = []
    for p in items:
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts)
            if not files:
                raise NasforgeError(f"{p} has no image files")
            out += [(str(f), f) for f in files]
        elif p.suffix.lower() == ".npy" and p.is_file():
            from nasforge.data import read_npy

            arr = read_npy(p)  # header and size checked before the data is read
            if arr.dtype == object:
                raise NasforgeError(f"{p}: holds Python objects (a pickle); only numeric "
                                    "arrays are read")
            arr = arr[None] if arr.ndim == 2 else arr
            # the whole array is one batch (predict checks its layout); a name per image
            out += [(f"{p}[{i}]", arr if i == 0 else None) for i in range(len(arr))]
        else:
            out.append((str(p), p))
    return out


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="A model directory (RUN_DIR/best) or run.")],
    images: Annotated[
        list[Path], typer.Argument(help="Image files, folders of images, or .npy arrays.")
    ],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes per image.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Classify images with a saved model."""
    from nasforge.export import load

    model = load(model_dir)
    named = _expand_images(images)
    pred = model.predict([v for _, v in named if v is not None])
    if len(pred) != len(named):
        raise NasforgeError(f"{len(named)} images named but {len(pred)} predicted; give "
                            ".npy arrays of shape (N, H, W), (N, H, W, C) or (N, C, H, W)")
    rows = pred.top_k(top_k)
    if as_json:
        doc = [
            {
                "image": name,
                "class_id": tops[0].class_id,
                "label": tops[0].label,
                "probability": tops[0].probability,
                "top_k": [t._asdict() for t in tops],
            }
            for (name, _), tops in zip(named, rows, strict=True)
        ]
        typer.echo(json.dumps(doc, indent=2))
        return
    for (name, _), tops in zip(named, rows, strict=True):
        typer.echo(f"{name}: " + ", ".join(f"{t.label} ({t.probability:.3f})" for t in tops))


# ------------------------------------------------------------------------------ export
@app.command("export")
def export_cmd(
    path: Annotated[Path, typer.Argument(help="A run directory or a model directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (or directory).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="Output format: onnx.")] = "onnx",
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default: the exporter's).")] = None,
) -> None:
    """Export a saved model to another format (ONNX, dynamic batch axis)."""
    formats = ("onnx",)
    if fmt.lower() not in formats:
        raise NasforgeError(f"unknown format {fmt!r}; valid formats: {', '.join(formats)}")
    from nasforge.export import export_onnx, load

    model = load(path)
    target = out / "model.onnx" if out.is_dir() else out
    try:
        info = export_onnx(model.module, model.input_shape, target, opset=opset)
    except RuntimeError as e:
        from nasforge.errors import shorten

        raise NasforgeError(f"cannot export {model.arch} to ONNX: {shorten(str(e), 600)}"
                            ) from None
    diff = "" if info.max_abs_diff is None else f", max |onnx - torch| {info.max_abs_diff:.2g}"
    typer.echo(f"wrote {target} (opset {info.opset}, {info.exporter} exporter{diff})")


# ---------------------------------------------------------------------------- listings
def _listing(registry: Any) -> None:
    desc = registry.describe()
    width = max((len(n) for n in desc), default=0)
    for name, text in desc.items():
        typer.echo(f"{name:<{width}}  {text}".rstrip())


@app.command("spaces")
def spaces_cmd() -> None:
    """List the search spaces."""
    from nasforge import spaces

    _listing(spaces.registry)


@app.command("strategies")
def strategies_cmd() -> None:
    """List the search strategies."""
    from nasforge import strategies

    _listing(strategies.registry)


@app.command("estimators")
def estimators_cmd() -> None:
    """List the performance estimators."""
    from nasforge import estimators

    _listing(estimators.registry)


# -------------------------------------------------------------------------------- main
def _error(message: str) -> None:
    _console(stderr=True).print(Text(message, style="bold red"), soft_wrap=True)


#: OS errors that come from the user's environment (paths, media, space), not from a bug
_USER_ERRNOS = frozenset({
    errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.ENAMETOOLONG, errno.ENOTDIR,
    errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ELOOP,
    errno.EMFILE, errno.EFBIG,
})


def _environment_error(e: BaseException) -> str | None:
    """One line for an OS/SQLite failure caused by the environment (disk full, read-only
    media, a name too long, a path under a file), or None for anything else."""
    from nasforge.errors import shorten

    if isinstance(e, sqlite3.OperationalError):
        text = str(e)
        if any(k in text.lower() for k in ("full", "readonly", "read-only", "disk i/o")):
            return f"the run database cannot be written: {text} (stored trials are safe)"
        return None
    if isinstance(e, OSError) and e.errno in _USER_ERRNOS:
        where = e.filename if e.filename is not None else ""
        hint = " (stored trials are safe)" if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        return shorten(f"{e.strerror or e}: {where}", 500) + hint
    return None


def _interrupted() -> None:
    run = _current_run.get("dir")
    where = f"nasforge resume {run}" if run else "nasforge resume RUN_DIR"
    _error(f"interrupted; stored trials are safe; resume with: {where}")


_loaded_modules: set[str] = set()


def _load_command_modules() -> None:
    """Let each module in :data:`COMMAND_MODULES` add its commands, once.

    A module that fails to import costs only its own commands (with a warning): the core
    commands (search, predict, ...) must keep working.
    """
    for name in COMMAND_MODULES:
        if name in _loaded_modules:
            continue
        _loaded_modules.add(name)
        n_cmds, n_groups = len(app.registered_commands), len(app.registered_groups)
        try:
            mod = importlib.import_module(name)
            register = getattr(mod, "register_cli", None)
            if callable(register):
                register(app)
            typer.main.get_command(app)  # typer checks the commands only when building them
        except Exception as e:  # noqa: BLE001 - see docstring
            del app.registered_commands[n_cmds:]
            del app.registered_groups[n_groups:]
            if not (isinstance(e, ModuleNotFoundError) and e.name == name):
                _error(f"warning: commands of {name} unavailable: {type(e).__name__}: {e}")


def _exception_classes(name: str) -> tuple[type[BaseException], ...]:
    """Click's exception ``name`` from every place it may live: Typer >= 0.22 vendors click
    (``typer._click``), older Typer uses ``click`` itself."""
    found: list[type[BaseException]] = []
    for mod in ("typer._click.exceptions", "click.exceptions", "typer.exceptions"):
        try:
            cls = getattr(importlib.import_module(mod), name, None)
        except ImportError:
            continue
        if isinstance(cls, type) and issubclass(cls, BaseException) and cls not in found:
            found.append(cls)
    return tuple(found)


_ABORT = _exception_classes("Abort")
_NO_ARGS = _exception_classes("NoArgsIsHelpError")
_USAGE = _exception_classes("UsageError")
_CLICK = _exception_classes("ClickException")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``nasforge`` script: run :data:`app`, turn user errors into exit 2."""
    code = 0
    _current_run["dir"] = None
    try:
        rv = app(args=list(argv) if argv is not None else None, prog_name="nasforge",
                 standalone_mode=False)  # fmt: skip
        if rv == 130:  # typer turns Ctrl-C into Exit(130) when not standalone
            _interrupted()
        code = rv if isinstance(rv, int) else 0
    except KeyboardInterrupt:
        _interrupted()
        code = 130
    except _ABORT:
        _interrupted()
        code = 130
    except NasforgeError as e:
        _error(f"Error: {e}")
        code = 2
    except (OSError, sqlite3.OperationalError) as e:
        why = _environment_error(e)
        if why is None:
            raise
        _error(f"Error: {why}")
        code = 2
    except _NO_ARGS as e:  # plain `nasforge`: the help, not an error
        text = e.format_message()  # type: ignore[attr-defined]  # rich help prints itself
        if text.strip():
            typer.echo(text)
        code = 0
    except _CLICK as e:
        msg = f"Error: {e.format_message()}"  # type: ignore[attr-defined]
        ctx = getattr(e, "ctx", None)
        if ctx is not None:
            msg += f"\nTry '{ctx.command_path} --help' for help."
        _error(msg)
        code = 2 if isinstance(e, _USAGE) else (getattr(e, "exit_code", 2) or 2)
    sys.stdout.flush()
    sys.exit(code)


_load_command_modules()

if __name__ == "__main__":  # python -m nasforge.cli
    main()
