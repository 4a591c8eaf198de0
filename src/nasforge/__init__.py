"""nasforge: neural architecture search from laptop to cluster.

The three NAS components live in :mod:`nasforge.spaces` (what can be built),
:mod:`nasforge.strategies` (what to try next) and :mod:`nasforge.estimators` (how good
it is, at what cost).
"""

from __future__ import annotations

__version__ = "0.1.0"

from nasforge import estimators, spaces, strategies  # noqa: E402

__all__ = ["__version__", "estimators", "spaces", "strategies"]
