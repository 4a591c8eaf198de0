"""A one-shot run killed with SIGKILL resumes exactly: SPOS (in supernet training or in the
search), DARTS and GDAS (in the search)."""

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
# DARTS/GDAS (as in test_darts.py): 3 search epochs of 2 steps on 60 examples, C=2
GRAD_OPTS = dict(C=2, N=1, epochs=3, batch_size=16, alpha_lr=0.01, final_epochs=1,
                 onnx=False, seed=3)  # fmt: skip


def _data():
    sys.path.insert(0, str(TESTS))
    from test_spos import _tiny_data

    return _tiny_data(n=160)


def _grad_data():
    sys.path.insert(0, str(TESTS))
    from test_darts import _tiny_data

    return _tiny_data(n=60)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    """The supernet's trained weights (and DARTS/GDAS alpha) as its last checkpoint holds."""
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


def _kill_when(run: Path, pause_on: str, ready, method: str = "spos") -> None:
    """Start the run in a child that sleeps at the log line ``pause_on`` (so the kill lands
    there, right after what it logs was stored), SIGKILL it once ``ready()``."""
    mod, n, opts = ("test_spos", 160, OPTS) if method == "spos" else ("test_darts", 60,
                                                                     GRAD_OPTS)
    code = (
        f"import sys, time; sys.path.insert(0, {str(TESTS)!r})\n"
        f"from {mod} import _tiny_data\n"
        "from nasforge.oneshot import run_oneshot\n"
        f"run_oneshot({method!r}, _tiny_data(n={n}), out={str(run)!r}, **{opts!r},\n"
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


# ------------------------------------------------------------------------- DARTS / GDAS
@pytest.fixture(scope="module")
def grad_refs(tmp_path_factory):
    """Uninterrupted DARTS/GDAS runs with the same seed, made on first use."""
    runs: dict[str, tuple[Path, object]] = {}

    def get(method: str):
        if method not in runs:
            run = tmp_path_factory.mktemp(f"ref-{method}") / "run"
            runs[method] = run, run_oneshot(method, _grad_data(), out=run, **GRAD_OPTS)
        return runs[method]

    return get


def _assert_same_search(run: Path, res, reference) -> None:
    """Same derived architecture per epoch (one trial each, in order), same final arch,
    same weights and alpha (1e-6), same final model."""
    ref_run, ref = reference
    assert res.arch == ref.arch
    w, w_ref = _weights(run), _weights(ref_run)
    assert w.keys() == w_ref.keys() and "model.alpha" in w
    for k in w:
        assert torch.allclose(w[k].double(), w_ref[k].double(), atol=1e-6, rtol=0), k
    got, want = _trials(run), _trials(ref_run)
    assert [t[:2] for t in got] == [t[:2] for t in want]
    assert [t[2]["epoch"] for t in got] == [1, 2, 3]
    for g, r in zip(got, want, strict=True):
        assert g[2] == pytest.approx(r[2], rel=1e-5, abs=1e-6)
    assert [h["arch"] for h in res.search.history] == [h["arch"] for h in ref.search.history]
    with RunStore.open(run) as s:
        assert s.get_meta("status") == "finished"
        assert s.get_meta("final")["arch"] == ref.arch
    assert res.final["test_accuracy"] == pytest.approx(ref.final["test_accuracy"])


@pytest.mark.parametrize("method", ["darts", "gdas"])
def test_sigkill_during_gradient_search_resumes_exactly(tmp_path, grad_refs, method):
    run = tmp_path / "run"

    def epoch_one() -> bool:  # its checkpoint and its trial are written before its log line
        try:
            with RunStore.open(run) as s:
                return s.n_completed() >= 1
        except RunDirError:
            return False

    _kill_when(run, "  epoch 1:", epoch_one, method=method)
    _, state = load_checkpoint(run / CHECKPOINT_NAME)
    assert (state["epoch"], state["done"]) == (1, False)
    before = _trials(run)
    assert [t[2]["epoch"] for t in before] == [1]
    logs: list[str] = []
    res = run_oneshot(method, _grad_data(), out=run, resume=True, log=logs.append,
                      **GRAD_OPTS)  # fmt: skip
    assert any("continuing the search" in m for m in logs)
    assert [m.split(":")[0].strip() for m in logs if m.startswith("  epoch")] == ["epoch 2",
                                                                                 "epoch 3"]
    assert _trials(run)[:1] == before  # never stored again (still the first attempt)
    _assert_same_search(run, res, grad_refs(method))


@pytest.mark.parametrize("gap", ["not-started", "running"])
def test_gradient_epoch_checkpointed_but_not_stored_is_stored_on_resume(tmp_path, grad_refs,
                                                                        monkeypatch, gap):
    """A kill between an epoch's checkpoint and its trial's end: resuming stores the trial
    (under its id when it was started), in epoch order."""
    run = tmp_path / "run"
    name = "start_trial" if gap == "not-started" else "finish_trial"
    real = getattr(RunStore, name)

    def dies(self, *a, **k):  # the process ends right after the epoch-1 checkpoint
        raise _Stop

    monkeypatch.setattr(RunStore, name, dies)
    with pytest.raises(_Stop):
        run_oneshot("gdas", _grad_data(), out=run, **GRAD_OPTS)
    monkeypatch.setattr(RunStore, name, real)
    assert load_checkpoint(run / CHECKPOINT_NAME)[1]["epoch"] == 1
    with RunStore.open(run) as s:
        left = s.trials()
    assert [t.status for t in left] == ([] if gap == "not-started" else ["running"])
    res = run_oneshot("gdas", _grad_data(), out=run, resume=True, **GRAD_OPTS)
    if gap == "running":
        assert _trials(run)[0][0] == left[0].id and _trials(run)[0][3] == 2
    _assert_same_search(run, res, grad_refs("gdas"))
    # resuming the finished run redoes nothing; a fresh start in it points to --resume
    logs: list[str] = []
    again = run_oneshot("gdas", _grad_data(), out=run, resume=True, log=logs.append,
                        **GRAD_OPTS)  # fmt: skip
    assert again.arch == res.arch and "already finished" in logs[-1]
    with pytest.raises(RunDirError, match="already exists.*--resume"):
        run_oneshot("gdas", _grad_data(), out=run, **GRAD_OPTS)


def test_early_stopped_search_resumes_as_stopped(tmp_path):
    """A search that stopped at collapse (early-stop) is finished: resuming it runs no
    epoch and keeps the rollback."""
    from nasforge.oneshot import DartsSupernet, darts_search
    from nasforge.spaces.nb201 import OP_NAMES, NB201Space

    data, space = _grad_data(), NB201Space(C=2, N=1)
    ck = tmp_path / CHECKPOINT_NAME

    def search(resume: bool, seen: list[int]):
        torch.manual_seed(0)
        model = DartsSupernet(space, data.input_shape, data.num_classes)
        with torch.no_grad():
            model.alpha[:, OP_NAMES.index("skip_connect")] = 5.0  # collapses in epoch 1
        return darts_search(space, data, epochs=3, batch_size=16, mitigation="early-stop",
                            model=model, checkpoint=ck, resume=resume,
                            on_epoch=lambda e, r: seen.append(e))  # fmt: skip

    first: list[int] = []
    out = search(False, first)
    assert out.stopped_early and out.collapse_epoch == 1 and first == [1]
    _, state = load_checkpoint(ck)
    assert state["done"] and state["stopped"] and state["epoch"] == 1
    replayed: list[int] = []
    again = search(True, replayed)
    assert replayed == [1]  # the stored epoch is replayed, no new one is run
    assert (again.arch, again.stopped_early, again.collapse_epoch) == (out.arch, True, 1)
    assert again.history == out.history and again.alpha == out.alpha
