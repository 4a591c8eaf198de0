"""Errors that are the user's to fix.

The CLI turns a :class:`NasforgeError` into a one-paragraph message and exit code 2
instead of a traceback; anything else is a bug in nasforge and keeps its traceback.
"""

from __future__ import annotations


class NasforgeError(Exception):
    """A problem with the user's input, data or environment, with a hint on what to do."""


class UnknownNameError(NasforgeError, KeyError):
    """A registry lookup for a name that is not registered."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else ""


class ArchParseError(NasforgeError, ValueError):
    """An architecture string or JSON document that does not describe a valid architecture."""


class DataError(NasforgeError):
    """Missing, malformed or unusable data."""


class RunDirError(NasforgeError):
    """A run directory that is missing, locked, corrupt or from another version."""
