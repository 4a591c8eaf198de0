"""Small helpers shared across modules, so each does not grow its own variant.

:func:`finite` is the one definition of "a usable measurement": metrics come from
estimators, JSON stores and user code, and modules used to disagree on what
``None``, a bool or ``"0.5"`` counted as.
"""

from __future__ import annotations

import math
from typing import Any


def as_float(x: Any) -> float | None:
    """``x`` as a float if it is a number (NaN and inf included), else None.

    Numbers are ints, floats and anything with a float value (numpy scalars, 0-d
    tensors). Not numbers: None, bools (a flag, not a measurement: JSON ``true`` must
    not score 1.0) and strings (parse them where they are read, not here).
    """
    if x is None or isinstance(x, bool | str | bytes | bytearray):
        return None
    try:
        return float(x)
    except (TypeError, ValueError, OverflowError):
        return None


def finite(x: Any) -> bool:
    """Whether ``x`` is a real, finite number: False for None, NaN, +-inf, bools, strings."""
    v = as_float(x)
    return v is not None and math.isfinite(v)


def finite_or_none(x: Any) -> float | None:
    """``x`` as a float when :func:`finite`, else None (e.g. for JSON, which has no NaN)."""
    v = as_float(x)
    return v if v is not None and math.isfinite(v) else None
