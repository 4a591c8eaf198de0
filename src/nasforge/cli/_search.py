"""``nasforge search`` and ``nasforge resume``, and the report they print at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nasforge.cli._app import (
    ExecutorOpt,
    RayAddressOpt,
    RetriesOpt,
    TrialTimeoutOpt,
    WorkersOpt,
    _current_run,
    _duration,
    _execution,
    _load_config,
    _metrics_line,
    _out,
    app,
    parse_options,
)
from nasforge.cli._loggers import LogToOpt, loggers
from nasforge.errors import NasforgeError

# defaults of `nasforge search` with the training estimator, per data set: a first run
# must finish in minutes on 2 CPU cores (Fashion-MNIST: ~3-5 min, digits: seconds)
DEFAULT_TRIALS = 10
#: the whole job's wall-clock time when neither --trials nor --time-budget is given
DEFAULT_TIME_BUDGET = {"fashion-mnist": 300.0, "digits": 60.0, "folder": 180.0,
                       "tabular": 60.0, "sequence": 120.0, "text": 120.0}
SEARCH_DEFAULTS: dict[str, dict[str, Any]] = {
    "fashion-mnist": {"epochs": 1, "data_fraction": 0.1, "final_epochs": 2},
    "digits": {"epochs": 3, "data_fraction": 1.0, "final_epochs": 10},
    "folder": {"epochs": 1, "data_fraction": 1.0, "final_epochs": 3},
    # tables are small: an epoch is a few batches, so trials need many
    "tabular": {"epochs": 30, "data_fraction": 1.0, "final_epochs": 60},
    # UCR/UEA-sized time series: tens to hundreds of series, an epoch takes milliseconds
    "sequence": {"epochs": 20, "data_fraction": 1.0, "final_epochs": 60},
    # text: thousands of short documents; an embedding model needs a handful of epochs
    "text": {"epochs": 5, "data_fraction": 1.0, "final_epochs": 10},
}


def _dataset_kind(dataset: str, data_dir: str | None) -> str:
    """Which row of :data:`SEARCH_DEFAULTS` applies ("auto" resolved as the loader does)."""
    from nasforge import data as D

    kind = D.input_kind_of(dataset)
    if kind != "image":  # tables, series: one row for the kind
        return kind if kind in SEARCH_DEFAULTS else "folder"
    key = dataset.strip().lower()
    key = getattr(D, "_ALIASES", {}).get(key, key)
    if key == "auto":
        return "fashion-mnist" if D.fashion_mnist_available(data_dir) else "digits"
    return key if key in SEARCH_DEFAULTS else "folder"


def _accepts(estimator: str, option: str) -> bool:
    """Whether estimator ``estimator`` takes ``option`` (so a default may be passed to it)."""
    from nasforge import estimators

    names, var_kw = estimators.registry.accepted_options(estimator)  # unknown: lists valid
    return option in names or var_kw


# ------------------------------------------------------------------------------ search
@app.command()
def search(
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            "-d",
            help="auto (Fashion-MNIST if installed, else digits), digits, "
            "fashion-mnist, a folder with one sub-folder of images per class, or a "
            ".csv/.tsv/.parquet table (with --target), or text: text:FILE.csv (a text and "
            "a label column; --target names the label) or text:DIR (a sub-folder of .txt "
            "files per class).",
        ),
    ] = "auto",
    target: Annotated[
        list[str] | None,
        typer.Option("--target", help="The table column to predict; repeat it for several "
                     "numeric targets (multi-output regression)."),
    ] = None,
    task: Annotated[
        str | None,
        typer.Option(help="What is predicted (see `nasforge tasks`): classification (the "
                     "default; for a table, inferred from --target) or regression (numeric "
                     "class names, e.g. digits' 0-9 or folders named 0.5/ 1.0/, are the "
                     "targets)."),
    ] = None,
    space: Annotated[
        str | None,
        typer.Option(help="Search space (see `nasforge spaces`) or a space file "
                     "(my_space.yaml, .json, .toml); default: the one for the "
                     "data's input kind (cnn for images)."),
    ] = None,
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
    dataset_opt: Annotated[
        list[str] | None,
        typer.Option("--dataset-opt", help="Data set option key=value (JSON value); "
                     "repeatable; e.g. for text: text_column=review, vocab_size=4096, "
                     "max_length=128, and max_train=N, val_fraction=0.1 for any data."),
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
    log_to: LogToOpt = None,
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
    dataset_options = parse_options(dataset_opt, "--dataset-opt")
    strategy_options = parse_options(strategy_opt, "--strategy-opt")
    estimator_options = parse_options(estimator_opt, "--estimator-opt")
    if space is None:
        from nasforge.data import input_kind_of

        space = spaces.default_for(input_kind_of(dataset))
    if spaces.is_space_file(space):  # a wrong file fails here, naming the key
        label = spaces.resolve(space, space_options).title  # type: ignore[attr-defined]
    else:
        spaces.registry.factory(space)  # unknown names fail here, listing the valid ones
        label = space
    from nasforge import tasks

    if task is not None:
        tasks.registry.factory(task)
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

    timed = E.registry.factory(estimator).time_fidelity is not None
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
    run_dir = out if out is not None else default_run_dir(f"{label}-{shown}")
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
        task=task,
        dataset_options=dataset_options or None,
        target=(target[0] if len(target) == 1 else list(target)) if target else None,
        callbacks=loggers(log_to, run_dir),
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
    log_to: LogToOpt = None,
) -> None:
    """Continue an interrupted (or finished, with a larger budget) search."""
    tb = _duration(time_budget)
    execution = _execution(workers, executor, ray_address, trial_timeout, retries)
    _current_run["dir"] = str(run_dir)
    from nasforge.experiment import resume as run_resume

    _report(
        run_resume(run_dir, trials=trials, time_budget=tb,
               progress="phases" if no_progress else True,
               callbacks=loggers(log_to, run_dir), **execution)
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
        attr = "values" if any(k.startswith("test_rmse") for k in result.test_metrics) \
            else "labels"
        _out(f"Model saved to {md}", "bold")
        _out("Use it:")
        kind = getattr(result, "input_kind", "image")
        example = {"tabular": "DATA.csv", "sequence": "SERIES.npy",
                   "text": '--text "some text"'}.get(kind, "IMAGE.png")
        boxes = any(k.startswith(("test_map", "test_miou")) for k in result.test_metrics)
        if boxes:  # a detector: per image boxes, drawn with --save / .save()
            _out(f"  nasforge predict {md} {example} --save drawn/")
            _out(f"  python3 -c \"import nasforge; r = nasforge.load('{md}')('{example}')[0]; "
                 f"print(r.to_json()); r.save('out.png')\"")
            _out(f"  nasforge show {run_dir}")
            return
        _out(f"  nasforge predict {md} {example}")
        given = {"tabular": f"'{example}'", "sequence": f"numpy.load('{example}')",
                 "text": "['some text']"}.get(
            kind, repr([example]))  # rows of a table, (N, C, L) series, texts or image paths
        _out(
            f"  python3 -c \"import numpy, nasforge; m = nasforge.load('{md}'); "
            f"print(m.predict({given}).{attr})\""
            if kind == "sequence" else
            f"  python3 -c \"import nasforge; m = nasforge.load('{md}'); "
            f"print(m.predict({given}).{attr})\""
        )
    _out(f"  nasforge show {run_dir}")
