"""Loggers as run callbacks: the same search seen in TensorBoard or MLflow.

Each logger is a :class:`~nasforge.run.loop.Callback` in its own module, installed by
its own extra (``nasforge[tensorboard]``, ``nasforge[mlflow]``) and never required:
:func:`make` names the extra when its library is missing. ``on_finalized`` (see
:class:`Callback`) hands them the final model once the run is done.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nasforge.errors import NasforgeError

#: name -> (module, class, the extra that installs its library)
LOGGERS: dict[str, tuple[str, str, str]] = {
    "tensorboard": ("nasforge.loggers.tensorboard", "TensorBoardLogger", "tensorboard"),
    "mlflow": ("nasforge.loggers.mlflow", "MLflowLogger", "mlflow"),
}


def make(name: str, run_dir: str | Path, config: Mapping[str, Any] | None = None) -> Any:
    """The logger ``name`` writing beside the run in ``run_dir``; ``config`` None: the
    run's stored config, read when its first trial starts (the store exists by then)."""
    key = name.strip().lower()
    if key not in LOGGERS:
        raise NasforgeError(f"unknown logger {name!r}; choose from: {', '.join(LOGGERS)}")
    mod, cls, extra = LOGGERS[key]
    try:
        module = importlib.import_module(mod)
    except ImportError as e:
        raise NasforgeError(f"--log-to {key} needs {e.name}: pip install "
                            f"'nasforge[{extra}]'") from None
    return getattr(module, cls)(Path(run_dir), None if config is None else dict(config))


def make_all(names: Sequence[str] | None, run_dir: str | Path,
             config: Mapping[str, Any] | None = None) -> list[Any]:
    return [make(n, run_dir, config) for n in dict.fromkeys(names or [])]


def flat_choices(arch_json: Mapping[str, Any] | None, arch: str) -> dict[str, Any]:
    """An architecture as flat scalar hyper-parameters (what both tools can show)."""
    out: dict[str, Any] = {"arch": arch[:250]}
    choices = (arch_json or {}).get("choices") if arch_json else None
    for k, v in (choices or {}).items():
        out[str(k)] = v if isinstance(v, int | float | str | bool) else str(v)
    return out


def objective_of(run_dir: Path, config: Mapping[str, Any] | None
                 ) -> tuple[str, float, dict[str, Any], int, float | None]:
    """(metric, sign, config, trials already finished, best so far) of the run: a resumed
    session's logger continues the best-so-far curve where the last one stopped."""
    from nasforge.reporting import run_objectives
    from nasforge.store import RunStore

    done, best = 0, None
    stored: dict[str, Any] = {}
    try:
        with RunStore.open(run_dir) as store:  # read-only, beside the writer
            stored = store.config
            obj = run_objectives(config if config is not None else stored)[0]
            done = store.n_completed()
            rec = store.best(obj.metric, obj.mode)
            best = None if rec is None else float(rec.metrics[obj.metric])
    except NasforgeError:
        pass
    config = stored if config is None else config
    obj = run_objectives(config)[0]
    return obj.metric, 1.0 if obj.mode == "max" else -1.0, dict(config), done, best
