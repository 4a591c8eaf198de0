"""A SPOS run killed with SIGKILL (in supernet training or in the search) resumes exactly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nasforge.errors import RunDirError
from nasforge.oneshot import run_oneshot
from nasforge.oneshot.checkpoint import CHECKPOINT_NAME, load_checkpoint
from nasforge.store import RunStore

TESTS = Path(__file__).parent
# tiny settings (as in test_spos.py): 3 supernet epochs of 4 steps, 5 candidates
OPTS = dict(C=4, N=1, epochs=3, batch_size=32, candidates=5, strategy="evolution",
            calib_batches=2, final_epochs=1, onnx=False, seed=3)  # fmt: skip


def _data():
    sys.path.insert(0, str(TESTS))
    from test_spos import _tiny_data

    return _tiny_data(n=160)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    """The supernet's trained weights as its last checkpoint holds them."""
    tensors, state = load_checkpoint(run / CHECKPOINT_NAME)
    assert state["done"]
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def _trials(run: Path) -> list[tuple[int, str, dict, int]]:
    with RunStore.open(run) as s:
        return [(t.id, t.arch, t.metrics, t.attempt) for t in s.trials()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run with the same seed."""
    run = tmp_path_factory.mktemp("ref") / "run"
    res = run_oneshot("spos", _data(), out=run, **OPTS)
    return run, res


def _kill_when(run: Path, pause_on: str, ready) -> None:
    """Start the run in a child that sleeps at the log line ``pause_on`` (so the kill lands
    there, right after what it logs was stored), SIGKILL it once ``ready()``."""
    code = (
        f"import sys, time; sys.path.insert(0, {str(TESTS)!r})\n"
        "from test_spos import _tiny_data\n"
        "from nasforge.oneshot import run_oneshot\n"
        f"run_oneshot('spos', _tiny_data(n=160), out={str(run)!r}, **{OPTS!r},\n"
        f"            log=lambda m: time.sleep(60) if m.startswith({pause_on!r}) else None)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert child.poll() is None, child.stderr.read()
            assert time.monotonic() < deadline, "child made no progress"
            time.sleep(0.05)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def _assert_same(run: Path, res, reference) -> None:
    ref_run, ref = reference
    assert res.arch == ref.arch
    w, w_ref = _weights(run), _weights(ref_run)
    assert w.keys() == w_ref.keys()
    for k in w:
        assert torch.allclose(w[k].double(), w_ref[k].double(), atol=1e-6, rtol=0), k
    got, want = _trials(run), _trials(ref_run)
    assert [t[:2] for t in got] == [t[:2] for t in want]  # the same candidates, in order
    for g, r in zip(got, want, strict=True):  # scored alike (float32 reduction order aside)
        assert g[2] == pytest.approx(r[2], rel=1e-5, abs=1e-6)
    assert res.supernet_history["steps"] == ref.supernet_history["steps"]
    with RunStore.open(run) as s:
        assert s.get_meta("status") == "finished"
        assert s.get_meta("final")["arch"] == ref.arch
    assert res.final["test_accuracy"] == pytest.approx(ref.final["test_accuracy"])


def test_sigkill_during_supernet_training_resumes_exactly(tmp_path, reference):
    run = tmp_path / "run"
    _kill_when(run, "  epoch 1:", lambda: (run / CHECKPOINT_NAME).exists())
    tensors, state = load_checkpoint(run / CHECKPOINT_NAME)
    assert (state["epoch"], state["pos"], state["done"]) == (1, 0, False)
    assert _trials(run) == []
    logs: list[str] = []
    res = run_oneshot("spos", _data(), out=run, resume=True, log=logs.append, **OPTS)
    assert any("continuing the supernet" in m for m in logs)
    assert [m.split(":")[0].strip() for m in logs if m.startswith("  epoch")] == ["epoch 2",
                                                                                 "epoch 3"]
    _assert_same(run, res, reference)


def test_sigkill_during_the_search_keeps_trials_and_resumes_exactly(tmp_path, reference):
    run = tmp_path / "run"

    def two_trials() -> bool:
        try:
            with RunStore.open(run) as s:
                return s.n_completed() >= 2
        except RunDirError:
            return False

    _kill_when(run, "  trial 2:", two_trials)
    before = _trials(run)
    assert len(before) == 2
    res = run_oneshot("spos", _data(), out=run, resume=True, **OPTS)
    after = _trials(run)
    assert after[:2] == before  # never run again (still the first attempt)
    _assert_same(run, res, reference)
    # resuming a finished run redoes nothing and says so
    logs: list[str] = []
    again = run_oneshot("spos", _data(), out=run, resume=True, log=logs.append, **OPTS)
    assert again.arch == res.arch and "already finished" in logs[-1]
    assert _trials(run) == after


class _Stop(Exception):
    pass


def _interrupted_run(run: Path) -> None:
    """A run that stopped (an exception) right after its first supernet checkpoint."""

    def log(m: str) -> None:
        if m.startswith("  epoch 1:"):
            raise _Stop

    with pytest.raises(_Stop):
        run_oneshot("spos", _data(), out=run, log=log, **OPTS)
    assert (run / CHECKPOINT_NAME).exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoint_is_a_one_line_error(tmp_path, damage):
    run = tmp_path / "run"
    _interrupted_run(run)
    ck = run / CHECKPOINT_NAME
    blob = ck.read_bytes()
    ck.write_bytes({"truncate": blob[: len(blob) // 2], "garbage": os.urandom(300),
                    "empty": b""}[damage])  # fmt: skip
    with pytest.raises(RunDirError, match="checkpoint .* is damaged") as e:
        run_oneshot("spos", _data(), out=run, resume=True, **OPTS)
    assert "\n" not in str(e.value) and "delete it" in str(e.value)
    with RunStore.open(run) as s:
        assert s.trials() == []


def test_resume_with_another_config_is_refused(tmp_path):
    import nasforge

    run = tmp_path / "run"
    _interrupted_run(run)
    saved = (run / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(RunDirError, match="different configuration") as e:
        run_oneshot("spos", _data(), out=run, resume=True, **{**OPTS, "epochs": 4})
    assert "oneshot: stored" in str(e.value) and "--resume" in str(e.value)
    with pytest.raises(RunDirError, match="different configuration"):
        run_oneshot("spos", _data(), out=run, resume=True, **{**OPTS, "seed": 4})
    with pytest.raises(RunDirError, match="already exists.*--resume"):
        run_oneshot("spos", _data(), out=run, **OPTS)
    with pytest.raises(RunDirError, match="oneshot --out .* --resume"):
        nasforge.resume(run)
    assert (run / CHECKPOINT_NAME).read_bytes() == saved  # a refused resume changes nothing
