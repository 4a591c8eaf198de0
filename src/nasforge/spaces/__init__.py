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


def for_input(kind: str) -> list[str]:
    """Names of the registered spaces whose networks take inputs of ``kind``."""
    return [n for n in registry.names()
            if getattr(registry.factory(n), "input_kind", "image") == kind]


def default_for(kind: str) -> str:
    """The space a search uses for data of input kind ``kind`` when none is given: the
    one that declares ``default_for = kind``, else the only space for that kind."""
    from nasforge.errors import NasforgeError

    fitting = for_input(kind)
    marked = [n for n in fitting if getattr(registry.factory(n), "default_for", None) == kind]
    if marked:
        return marked[0]
    if len(fitting) == 1:
        return fitting[0]
    raise NasforgeError(
        f"no default search space for {kind} data"
        + (f": choose one of {', '.join(fitting)} with --space" if fitting else
           " (no registered space takes such inputs)")
    )


def check_input(space: SearchSpace, kind: str) -> None:
    """Refuse, in one line, a space whose networks cannot take the data's inputs."""
    from nasforge.errors import NasforgeError

    if space.input_kind != kind:
        fitting = for_input(kind)
        hint = (f"use --space {fitting[0]}" + (f" (spaces for {kind} data: "
                f"{', '.join(fitting)})" if len(fitting) > 1 else "")) if fitting else \
            f"no registered space takes {kind} inputs"
        raise NasforgeError(
            f"space {space.name!r} builds networks for {space.input_kind} inputs, but the "
            f"data are {kind}: {hint}"
        )


# Importing the modules registers the built-in spaces.
from nasforge.spaces import cnn, darts, file, headed, mlp, mobile, nb201, seq, text  # noqa: E402,F401,I001
from nasforge.spaces.file import from_file, is_space_file  # noqa: E402


def resolve(space: Any, options: dict[str, Any] | None = None) -> SearchSpace:
    """The space a ``--space`` / ``search(space=...)`` value names: a path with a space-file
    suffix (.yaml, .yml, .json, .toml) is read with :func:`from_file`, anything else is a
    registered name built with ``options``."""
    from nasforge.errors import NasforgeError

    if is_space_file(space):
        if options:
            raise NasforgeError(f"space options ({', '.join(options)}) do not apply to a space "
                                f"file ({space}): write the choices in the file")
        return from_file(space)
    return get(space, **dict(options or {}))

__all__ = [
    "Arch", "Backbone", "Choice", "Level", "SearchSpace", "check_input", "default_for",
    "for_input", "from_file", "get", "is_space_file", "names", "register", "registry",
    "resolve",
]
