"""Shared test set-up: small, single-threaded torch so the suite fits 2 cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

torch.set_num_threads(1)
# no per-example deadline: a busy machine must not turn a slow example into a failure
settings.register_profile("nasforge", deadline=None)
settings.load_profile("nasforge")
os.environ.setdefault("NASFORGE_NO_PROGRESS", "1")
pytest.register_assert_rewrite("helpers")  # tests/helpers.py: shared toys and checks

#: the NAS-Bench-201 table shipped beside the repository (tests skip when it is absent)
NB201_TABLE = Path(
    os.environ.get(
        "NASFORGE_NB201_TABLE",
        Path(__file__).resolve().parents[2] / "shared/benchmarks/nb201/nb201_cifar.csv",
    )
)


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
