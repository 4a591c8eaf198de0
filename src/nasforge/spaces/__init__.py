"""Search spaces: what can be built. ``nasforge.spaces.get("nb201", C=8, N=1)``."""

from __future__ import annotations

from typing import Any

from nasforge.registry import Registry
from nasforge.spaces.base import Arch, Backbone, Choice, Level, SearchSpace

registry: Registry[SearchSpace] = Registry("space")
register = registry.register


def get(name: str, **kwargs: Any) -> SearchSpace:
    """Instantiate the search space registered as ``name``."""
    return registry.get(name, **kwargs)


def names() -> list[str]:
    return registry.names()


# Importing the modules registers the built-in spaces.
from nasforge.spaces import cnn, mobile, nb201  # noqa: E402,F401

__all__ = [
    "Arch", "Backbone", "Choice", "Level", "SearchSpace", "get", "names", "register", "registry",
]
