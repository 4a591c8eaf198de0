"""Errors that are the user's to fix.

The CLI turns a :class:`NasforgeError` into a one-paragraph message and exit code 2
instead of a traceback; anything else is a bug in nasforge and keeps its traceback.
"""

from __future__ import annotations

#: the longest message an error shows: hostile input (a 3 MB architecture string) is
#: echoed in part, never whole
MAX_MESSAGE = 2000


def shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    keep = limit - 40
    return f"{text[:keep]}... ({len(text) - keep:,} more characters)"


class NasforgeError(Exception):
    """A problem with the user's input, data or environment, with a hint on what to do."""

    def __str__(self) -> str:
        return shorten(super().__str__())


class UnknownNameError(NasforgeError, KeyError):
    """A registry lookup for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return shorten(str(self.args[0])) if self.args else ""


class UnknownOptionError(NasforgeError, TypeError):
    """A keyword option that a registered component does not take.

    Also a :class:`TypeError`, what calling the factory with it used to raise, so code
    that caught that keeps working.
    """


class ArchParseError(NasforgeError, ValueError):
    """An architecture string or JSON document that does not describe a valid architecture."""


class DataError(NasforgeError):
    """Missing, malformed or unusable data."""


class RunDirError(NasforgeError):
    """A run directory that is missing, locked, corrupt or from another version."""
