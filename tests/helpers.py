"""Toys and helpers shared by several test modules (``from helpers import ...``).

pytest puts ``tests/`` on ``sys.path`` (rootdir-relative imports, no ``__init__.py``), and so
do the subprocesses and workers that the tests start, so this module is importable wherever
the test modules themselves are. Its ``assert``s are rewritten by pytest (see conftest.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch.nn as nn

from nasforge import estimators, spaces
from nasforge.errors import RunDirError
from nasforge.spaces.base import Choice, SearchSpace
from nasforge.store import RunStore


# ----------------------------------------------------------------------------- toy spaces
class GridSpace(SearchSpace):
    """``k`` integer knobs in ``0..m-1``; no network, only for strategy tests."""

    name = "grid"

    def __init__(self, k: int = 4, m: int = 5) -> None:
        self.k, self.m = k, m
        self._choices = tuple(Choice(f"x{i}", tuple(range(m))) for i in range(k))

    def choices(self) -> tuple[Choice, ...]:
        return self._choices

    def build(self, arch, input_shape, num_classes):  # pragma: no cover - never built
        raise NotImplementedError


class ToySpaceBase(SearchSpace):
    """``n_choices`` choices ``c0, c1, ...`` of ``n_options`` options each; nothing to build.

    A test module subclasses it with its own registry ``name`` (and size), at module level
    so that worker processes can unpickle it.
    """

    n_choices = 4
    n_options = 5

    def choices(self) -> tuple[Choice, ...]:
        return tuple(Choice(f"c{i}", tuple(range(self.n_options))) for i in range(self.n_choices))

    def build(self, arch, input_shape, num_classes) -> nn.Module:
        return nn.Flatten()


def register_toys(space: type[SearchSpace], estimator: type) -> None:
    """Register a test module's toy space and estimator under their names, once (a module
    may be imported twice: by pytest and by a subprocess or another test module)."""
    if space.name not in spaces.registry:
        spaces.register(space.name)(space)
    if estimator.name not in estimators.registry:
        estimators.register(estimator.name)(estimator)


# ------------------------------------------------------------------- killed searches
def completed_trials(out: Path) -> int:
    """Trials completed in the run at ``out`` so far (0 while it does not exist yet)."""
    try:
        with RunStore.open(out) as s:
            return s.n_completed()
    except RunDirError:  # not created yet
        return 0


def wait_for_trials(child: subprocess.Popen, out: Path, n: int, poll: float) -> None:
    """Wait until the search ``child`` runs has completed ``n`` trials in ``out``; it must
    stay alive meanwhile, and get there within 120 s."""
    deadline = time.monotonic() + 120
    while completed_trials(out) < n:
        assert child.poll() is None, child.stderr.read()
        assert time.monotonic() < deadline, "child made no progress"
        time.sleep(poll)


def sigkill_after_trials(code: str, out: Path, n: int, poll: float) -> None:
    """Run ``python -c code`` (a search into ``out``) and kill -9 it after ``n`` trials."""
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        wait_for_trials(child, out, n, poll)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def stored_after_kill(out: Path) -> tuple[dict[int, Any], list[Any]]:
    """``(completed trials by id, running trials)`` of a killed run, which is still marked
    ``running``: it never got to say goodbye."""
    with RunStore.open(out) as s:
        before = {t.id: t for t in s.trials() if t.done}
        running = s.trials("running")
        assert s.get_meta("status") == "running"
    return before, running


def assert_kept(before: dict[int, Any], after: dict[int, Any]) -> None:
    """Every trial completed before a kill is kept exactly as stored, and never evaluated
    again (still its first attempt) after the resume."""
    for tid, t in before.items():
        a = after[tid]
        assert (a.arch, a.status, a.metrics, a.finished_at, a.attempt) == (
            t.arch, t.status, t.metrics, t.finished_at, 1)


def tiny_model_dir(out: Path) -> Path:
    """A real exported model directory: a tiny untrained cnn on digits (for tests where only
    loading and predicting matter)."""
    import numpy as np
    import torch

    from nasforge import spaces
    from nasforge.data import load_dataset
    from nasforge.export import save_best

    data = load_dataset("digits", seed=0)
    sp = spaces.get("cnn", max_blocks=1, widths=[8], stem_widths=[8])
    arch = sp.sample(np.random.default_rng(0))
    torch.manual_seed(0)
    net = sp.build(arch, data.input_shape, data.num_classes)
    return save_best(out, net, arch, sp, data, {"test_accuracy": 0.1}, onnx=False)
