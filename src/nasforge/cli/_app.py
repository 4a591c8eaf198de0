"""The Typer app every command registers on, the helpers they share, and :func:`main`.

:func:`main` is where errors become exit codes: :class:`~nasforge.errors.NasforgeError`,
bad options and environment OS errors are one red line and exit 2; Ctrl-C is 130 and
names the run to resume. It lives here, not in a command module, so that every command
(core or from :data:`nasforge.cli.COMMAND_MODULES`) gets the same handling.
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
from rich.text import Text

from nasforge.errors import NasforgeError

app = typer.Typer(
    name="nasforge",
    help="Neural architecture search: find, train and export a network for your images, "
         "tables, time series or texts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # bugs get a plain traceback
    context_settings={"help_option_names": ["-h", "--help"]},
)

#: the run directory of the search/resume in progress, for the Ctrl-C message
_current_run: dict[str, str | None] = {"dir": None}


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


# ------------------------------------------------------------------------------ output
#: the metrics a one-line summary shows (search's report and `nasforge show`), in order
_COSTS = ("val_loss", "params", "flops", "latency_ms", "train_time_s")


def _shown() -> list[str]:
    """The metrics a summary line shows, in order: every registered task's primary metric
    and its other reported ones (test, then validation; mae is left to the tables), then
    the costs. Read from the tasks' declarations, so a new task's metrics show too."""
    from nasforge import tasks

    names: list[str] = []
    for n in tasks.registry.names():
        cls = tasks.registry.factory(n)
        names += [cls.primary, *(m for m in cls.metric_names  # type: ignore[attr-defined]
                                 if m not in (cls.primary, "loss", "mae"))]  # type: ignore[attr-defined]
    names = list(dict.fromkeys(names))
    return [*(f"{p}_{m}" for m in names for p in ("test", "val")), *_COSTS]


def _metrics_line(metrics: dict[str, Any]) -> str:
    keys = [k for k in _shown() if k in metrics] or sorted(metrics)[:6]
    return "  ".join(f"{k} {_fmt(metrics[k])}" for k in keys)


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
