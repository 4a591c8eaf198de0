"""Old home of the job planner, now :mod:`nasforge.run.budget`.

Kept so that ``from nasforge.budget import ...`` (the command line, benchmarks, user
scripts) keeps working; it re-exports every name, private ones included. Patch names
in :mod:`nasforge.run.budget`, where the search looks them up.
"""

from __future__ import annotations

from nasforge.run.budget import (  # noqa: F401 - re-exported
    EXPORT_FIXED_S,
    FINAL_SHARE,
    MIN_PROBED_RESERVE_S,
    MIN_RESERVE_S,
    MIN_TRIAL_S,
    RECIPE,
    RESERVE_SHARE,
    TRIAL_FIXED_S,
    TRIAL_OVERHEAD_S,
    WIDE_BRACKET_EPOCHS,
    JobPlan,
    Probe,
    _secs,
    measure_probe,
    plan_job,
    process_age,
)
