"""Search strategies: what to try next.

``nasforge.strategies.get("evolution", space=..., seed=0)``.
"""

from __future__ import annotations

from typing import Any

from nasforge.registry import Registry
from nasforge.strategies.base import Strategy, Suggestion

registry: Registry[Strategy] = Registry("strategy")
register = registry.register


def get(name: str, **kwargs: Any) -> Strategy:
    """Instantiate the strategy registered as ``name`` (pass ``space=`` and options)."""
    return registry.get(name, **kwargs)


def names() -> list[str]:
    return registry.names()


from nasforge.strategies import (  # noqa: E402,F401
    bananas,
    evolution,
    local_search,
    multifidelity,
    nsga2,
    optuna_adapter,
    proxy_warmstart,
    random_search,
    reinforce,
)

__all__ = ["Strategy", "Suggestion", "get", "names", "register", "registry"]
