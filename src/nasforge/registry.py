"""Name -> factory registries, one per component kind (timm-style).

A new space, strategy or estimator is one file that decorates its class with
``@register("name")``; nothing else in the code base has to change.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

from nasforge.errors import UnknownNameError, UnknownOptionError

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
        """Instantiate the component registered as ``name`` with ``kwargs``.

        Option names are checked first, so a typo is a one-line user error naming the
        component and the valid options, not a bare TypeError from deep inside.
        """
        self.check_options(name, kwargs)
        return self.factory(name)(**kwargs)

    def accepted_options(self, name: str) -> tuple[set[str], bool]:
        """The keyword options ``name``'s factory takes, and whether it takes ``**kwargs``.

        One place that reads signatures, so callers choosing defaults to pass (a seed, a
        recipe) ask here. A factory whose signature cannot be read accepts anything.
        """
        factory = self.factory(name)  # UnknownNameError lists the valid names
        try:
            params = list(inspect.signature(factory).parameters.values())
        except (TypeError, ValueError):
            return set(), True
        names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        return names, any(p.kind == p.VAR_KEYWORD for p in params)

    def check_options(
        self, name: str, options: Iterable[str], fixed: Iterable[str] = ()
    ) -> None:
        """Raise :class:`UnknownOptionError` if ``name`` does not take one of ``options``.

        The message is one line: component, the first unknown option, a did-you-mean and
        the valid options, e.g. ``space 'cnn': unknown option 'widht' (did you mean
        'widths'?). Valid options: ...``. ``fixed`` are the options the caller passes
        itself (a strategy's ``space``): never reported, nor offered as valid.
        """
        names, var_kw = self.accepted_options(name)
        if var_kw:
            return
        names -= set(fixed)
        unknown = sorted(set(options) - names)
        if not unknown:
            return
        bad = unknown[0]
        close = difflib.get_close_matches(bad, sorted(names), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        more = f" (also unknown: {', '.join(map(repr, unknown[1:]))})" if unknown[1:] else ""
        raise UnknownOptionError(
            f"{self.kind} {name!r}: unknown option {bad!r}{hint}{more}. "
            f"Valid options: {', '.join(sorted(names)) or '(none)'}"
        )

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
