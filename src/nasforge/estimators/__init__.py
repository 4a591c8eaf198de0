"""Performance estimators: how good is an architecture, at what cost.

``nasforge.estimators.get("train", epochs=1)``.
"""

from __future__ import annotations

from typing import Any

from nasforge.estimators.base import Estimator, Result
from nasforge.registry import Registry

registry: Registry[Estimator] = Registry("estimator")
register = registry.register


def get(name: str, **kwargs: Any) -> Estimator:
    """Instantiate the estimator registered as ``name``."""
    return registry.get(name, **kwargs)


def names() -> list[str]:
    return registry.names()


from nasforge.estimators import nb201_table, proxies, training  # noqa: E402,F401

__all__ = ["Estimator", "Result", "get", "names", "register", "registry"]
