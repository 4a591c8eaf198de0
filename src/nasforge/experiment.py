"""Old home of the search, now the package :mod:`nasforge.run`.

Kept so that ``from nasforge.experiment import search`` (the command line, one-shot
search, benchmarks, user scripts) keeps working. Private helpers moved to the module of
their stage (:mod:`nasforge.run.finalize`, :mod:`nasforge.run.loop`, ...): patch them
there, where the search looks them up; they are not re-exported here, so a stale
``monkeypatch.setattr(experiment, ...)`` fails loudly instead of patching nothing.
"""

from __future__ import annotations

from nasforge.run.api import (
    SearchResult,
    default_run_dir,
    parse_duration,
    resume,
    search,
)
from nasforge.run.finalize import (
    MAX_FINAL_CANDIDATES,
    MAX_FINAL_RETRAINS,
    STAGING_DIR,
    _test_scores,  # noqa: F401 - the old import path of a pure helper
)
from nasforge.run.setup import IDENTITY_KEYS

__all__ = ["IDENTITY_KEYS", "MAX_FINAL_CANDIDATES", "MAX_FINAL_RETRAINS", "STAGING_DIR",
           "SearchResult", "default_run_dir", "parse_duration", "resume", "search"]
