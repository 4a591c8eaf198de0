"""nasforge: neural architecture search from laptop to cluster.

The three NAS components live in :mod:`nasforge.spaces` (what can be built),
:mod:`nasforge.strategies` (what to try next) and :mod:`nasforge.estimators` (how good
it is, at what cost). ``nasforge.search(...)`` runs a search end to end and
``nasforge.load(path)`` loads the model it exported.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from nasforge import estimators, spaces, strategies  # noqa: E402

_LAZY = {
    "search": ("nasforge.run.api", "search"),
    "resume": ("nasforge.run.api", "resume"),
    "SearchResult": ("nasforge.run.api", "SearchResult"),
    "load": ("nasforge.export", "load"),
    "load_dataset": ("nasforge.data", "load_dataset"),
}


def __getattr__(name: str) -> Any:
    """Import the heavier entry points on first use, keeping ``import nasforge`` light."""
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'nasforge' has no attribute {name!r}")


__all__ = ["__version__", "estimators", "spaces", "strategies", *_LAZY]
