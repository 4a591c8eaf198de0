"""The ``nasforge`` command line: search, resume, show, predict, export, and listings.

Errors that are the user's to fix (:class:`~nasforge.errors.NasforgeError`, bad options)
become one red line on stderr and exit code 2; Ctrl-C exits 130 and says how to resume;
anything else keeps its traceback, because it is a bug.

Adding a command from another module: give ``nasforge/foo.py`` a function
``register_cli(app: typer.Typer)`` that adds it (``@app.command("foo")``), and add
``"nasforge.foo"`` to :data:`COMMAND_MODULES`; :func:`main` then offers ``nasforge foo``.

The package is laid out one module per command: :mod:`nasforge.cli._app` holds the app,
the shared option parsing and :func:`main`; ``_search``, ``_show``, ``_predict``, ``_scale`` and
``_listings`` each register their commands on it when imported below (in the order
``nasforge --help`` lists them). The modules are private so that the command functions
keep their old names here (``nasforge.cli.search`` is the command, not a module).
"""

from __future__ import annotations

import importlib

import typer

# isort: off
# importing a command module registers its commands; this order is `nasforge --help`'s
from nasforge.cli import _search, _show, _predict, _scale, _listings, _zoo, _dashboard  # noqa: F401,E501
# isort: on
from nasforge.cli._app import (
    MAX_CONFIG_BYTES,
    ExecutorOpt,
    RayAddressOpt,
    RetriesOpt,
    TrialTimeoutOpt,
    WorkersOpt,
    _error,
    app,
    main,
    parse_options,
)
from nasforge.cli._listings import estimators_cmd, spaces_cmd, strategies_cmd
from nasforge.cli._predict import export_cmd, predict
from nasforge.cli._search import (
    DEFAULT_TIME_BUDGET,
    DEFAULT_TRIALS,
    SEARCH_DEFAULTS,
    resume_cmd,
    search,
)
from nasforge.cli._show import show

#: modules whose ``register_cli(app)`` adds more commands (see module docstring)
COMMAND_MODULES: list[str] = [
    "nasforge.bench",
    "nasforge.proxy_eval",
    "nasforge.oneshot",
    "nasforge.oneshot.ofa",
]

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


__all__ = [
    "COMMAND_MODULES",
    "DEFAULT_TIME_BUDGET",
    "DEFAULT_TRIALS",
    "MAX_CONFIG_BYTES",
    "SEARCH_DEFAULTS",
    "ExecutorOpt",
    "RayAddressOpt",
    "RetriesOpt",
    "TrialTimeoutOpt",
    "WorkersOpt",
    "app",
    "estimators_cmd",
    "export_cmd",
    "main",
    "parse_options",
    "predict",
    "resume_cmd",
    "search",
    "show",
    "spaces_cmd",
    "strategies_cmd",
]

_load_command_modules()
