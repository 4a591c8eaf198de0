"""Reading JSON that nasforge did not necessarily write: model cards, supernet files, configs.

Every file nasforge reads may have been edited, truncated or replaced by something hostile
(a 3 GB sparse file, ``[[[[...`` nested 200,000 deep, a list where an object belongs).
:func:`read_json` checks the size before reading, bounds the nesting, and checks the
top-level type, so each of those is one clear :class:`~nasforge.errors.NasforgeError`
(or the subclass the caller asks for) naming the file, never a MemoryError, RecursionError
or AttributeError later. The standard library parser does the parsing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nasforge.errors import NasforgeError

#: the largest JSON file read (model cards and supernet descriptions are a few kB)
MAX_JSON_BYTES = 16 << 20
#: the deepest nesting accepted (nasforge's own files nest 4-5 levels)
MAX_DEPTH = 64


def depth(text: str) -> int:
    """The deepest bracket nesting of JSON ``text`` (strings skipped), without recursion."""
    d = top = 0
    in_str = esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            d += 1
            top = max(top, d)
        elif ch in "]}":
            d -= 1
    return top


def loads(text: str | bytes, what: str, kind: type | tuple[type, ...] | None = dict,
          error: type[NasforgeError] = NasforgeError) -> Any:
    """Parse ``text`` (called ``what`` in messages), nesting bounded, type checked."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise error(f"{what} is not valid JSON (not UTF-8 text)") from None
    if depth(text) > MAX_DEPTH:
        raise error(f"{what} is not valid JSON for nasforge: it nests deeper than "
                    f"{MAX_DEPTH} levels")
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise error(f"{what} is not valid JSON ({str(e)[:200]})") from None
    if kind is not None and not isinstance(doc, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        want = {"dict": "an object", "list": "a list"}.get(want, want)
        raise error(f"{what} must hold {want}, not {type(doc).__name__}")
    return doc


def read_json(path: str | os.PathLike[str], *, kind: type | tuple[type, ...] | None = dict,
              error: type[NasforgeError] = NasforgeError,
              max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The JSON document in ``path``: a regular file of at most ``max_bytes``, nesting
    bounded, of type ``kind``; anything else raises ``error`` naming the file."""
    p = Path(path)
    try:
        if not p.is_file():
            raise error(f"{p} is not a regular file")
        size = p.stat().st_size
        if size > max_bytes:
            raise error(f"{p} is {size:,} bytes, over the {max_bytes:,} a nasforge file may be")
        with p.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"cannot read {p}: {e.strerror or e}") from None
    if len(raw) > max_bytes:
        raise error(f"{p} is over the {max_bytes:,} bytes a nasforge file may be")
    return loads(raw, str(p), kind, error)
