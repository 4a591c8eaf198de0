"""Name -> factory registries, one per component kind (timm-style).

A new space, strategy or estimator is one file that decorates its class with
``@register("name")``; nothing else in the code base has to change.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from nasforge.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A small mapping from names to classes (or factories) of one component kind."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}
        self._help: dict[str, str] = {}

    def register(
        self, name: str, help: str | None = None
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Class decorator: make ``factory`` available as ``name``."""

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries and self._entries[name] is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = factory
            doc = help or (factory.__doc__ or "").strip().splitlines()
            self._help[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")
            try:
                factory.name = name  # type: ignore[attr-defined]
            except (AttributeError, TypeError):
                pass
            return factory

        return deco

    def get(self, name: str, **kwargs: Any) -> T:
        """Instantiate the component registered as ``name`` with ``kwargs``."""
        return self.factory(name)(**kwargs)

    def factory(self, name: str) -> Callable[..., T]:
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} "
                f"Valid {self.kind}s: {', '.join(self.names())}."
            )
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        """Name -> one-line description, for ``nasforge spaces`` and friends."""
        return {n: self._help[n] for n in self.names()}

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
