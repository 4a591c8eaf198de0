"""Regression tests for the outside red-team pass (issue 12): each failure F1-F18 as it was
reported, plus the rules that close the classes (bounded builds, bounded reads, stored
values untrusted, OS errors as user errors). Each case: one clear line, exit code 2, no
traceback, nothing stored lost."""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_model_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_executors import SPACE as PROBE_SPACE
from test_hostile_input import _copy, _dump, _image_folder, run

from nasforge import spaces
from nasforge.errors import DataError, NasforgeError
from nasforge.store import DB_NAME

FAST = ["--space", PROBE_SPACE, "--estimator", "probe-exec", "--strategy", "random",
        "--dataset", "digits", "--no-final-train", "--no-progress"]


def _clean(code: int, out: str, err: str, message: str, want: int = 2) -> None:
    assert code == want, (out, err)
    assert message in err, err
    assert "Traceback" not in out + err and "Exception in thread" not in out + err


@pytest.fixture
def fast_run(tmp_path, capsys) -> Path:
    out = tmp_path / "run"
    code, _, err = run(["search", *FAST, "--out", out, "--trials", "3"], capsys)
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A real exported model: a tiny cnn on digits (untrained: only loading matters)."""
    return tiny_model_dir(tmp_path_factory.mktemp("m") / "best")


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims ``width x height`` gray pixels, with a token IDAT (a few
    bytes on disk; decoding it would need width x height bytes)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))
    path.write_bytes(data)
    return path


# ------------------------------------------------------- F4: arch.json bombs for predict
@pytest.mark.parametrize("tamper, message", [
    ("max_blocks", "max_blocks"),
    ("wide", "widths"),
    ("huge_net", "parameters"),
    ("expansion", "expansion"),
    ("input_shape_big", "input_shape"),
    ("input_shape_inf", "input_shape"),
    ("nesting", "nests deeper than"),
    ("sparse", "bytes"),
    ("mean_two", "'mean' and 'std' need 1"),
    ("mean_nan", "finite"),
    ("std_zero", "positive"),
    ("weights_nul", "not a file name"),
])
def test_hostile_arch_json_is_refused_before_allocating(model, tmp_path, capsys, tamper,
                                                        message):
    from PIL import Image

    d = _copy(model, tmp_path / "m")
    doc = json.loads((d / "arch.json").read_text())
    text = None
    if tamper == "max_blocks":
        doc["space_config"]["max_blocks"] = 100_000_000
    elif tamper == "wide":
        doc["space_config"]["widths"] = [20000]
    elif tamper == "huge_net":  # valid options, a 13-billion-parameter network
        doc["space_config"].update(widths=[16384], stem_widths=[16384], kernels=[7])
        doc["arch"] = {"space": "cnn", "arch": "stem16384|conv-k7-w16384-relu|drop0.0"}
    elif tamper == "expansion":
        doc["space_config"]["expansion"] = 1_000_000
    elif tamper == "input_shape_big":
        doc["input_shape"] = [1, 100000, 100000]
    elif tamper == "input_shape_inf":
        text = json.dumps(doc).replace('"input_shape": [1, 8, 8]', '"input_shape": [1, 1e400, 8]')
        assert "1e400" in text
    elif tamper == "nesting":
        text = "[" * 200_000 + "]" * 200_000
    elif tamper == "sparse":
        with open(d / "arch.json", "wb") as f:
            f.truncate(3 << 30)  # 3 GB, no disk used
    elif tamper == "mean_two":
        doc["mean"], doc["std"] = [0.1, 0.2], [1.0, 1.0]
    elif tamper == "mean_nan":
        doc["mean"] = [float("nan")]
    elif tamper == "std_zero":
        doc["std"] = [0.0]
    elif tamper == "weights_nul":
        doc["weights"]["file"] = "w\0.safetensors"
    if tamper != "sparse":
        (d / "arch.json").write_text(text if text is not None else json.dumps(doc))
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8), "L").save(img)
    t0 = time.monotonic()
    code, out, err = run(["predict", d, img], capsys)
    _clean(code, out, err, message)
    assert time.monotonic() - t0 < 20  # refused, not built


def test_build_bounds_on_the_space_options():
    for name, opts in [("cnn", {"max_blocks": 100_000_000}), ("cnn", {"widths": [10**6]}),
                       ("cnn", {"expansion": 10**6}), ("nb201", {"C": 100_000}),
                       ("mobile", {"expansions": [10**6]}), ("mobile", {"depths": [10**5]})]:
        with pytest.raises(NasforgeError):
            spaces.get(name, **opts)


# --------------------------------------------------------------- F5: from the command line
@pytest.mark.parametrize("opt, message", [
    ("max_blocks=100000000", "max_blocks"),
    ("max_blocks=100000", "max_blocks"),
    ("expansion=1000000", "expansion"),
])
def test_search_refuses_space_options_that_would_exhaust_memory(tmp_path, capsys, opt, message):
    code, out, err = run(["search", "--dataset", "digits", "--trials", "1", "--space-opt", opt,
                          "--no-progress", "--out", tmp_path / "r"], capsys)
    _clean(code, out, err, message)


def test_resume_of_a_stored_config_with_a_bomb_is_refused(fast_run, capsys):
    c = sqlite3.connect(fast_run / DB_NAME)
    cfg = json.loads(c.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])
    cfg["space"] = {"name": "cnn", "options": {"max_blocks": 100_000_000}}
    c.execute("UPDATE meta SET value=? WHERE key='config'", (json.dumps(cfg),))
    c.commit()
    c.close()
    code, out, err = run(["resume", fast_run, "--trials", "4"], capsys)
    _clean(code, out, err, "max_blocks")


# --------------------------------------------------------------- F2: decompression bombs
def test_decompression_bombs_are_skipped_in_a_folder_and_refused_by_predict(model, tmp_path,
                                                                           capsys):
    from nasforge.data import load_dataset

    root = _image_folder(tmp_path / "d", {"a": 6, "b": 6})
    _png_header_only(root / "a" / "bomb.png", 30000, 30000)
    _png_header_only(root / "b" / "bomb2.png", 2**31 - 1, 2**31 - 1)
    with pytest.warns(UserWarning, match="skipped 2 image"):
        data = load_dataset(str(root), seed=0)
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 12
    code, out, err = run(["predict", model, root / "a" / "bomb.png"], capsys)
    _clean(code, out, err, "pixels")


# ----------------------------------------------------------- F3: one 16-bit conversion
def test_16_bit_and_float_images_convert_the_same_in_training_and_predict(model, tmp_path):
    from PIL import Image

    import nasforge
    from nasforge.data import load_dataset, to_8bit
    from nasforge.export import _pil_to_unit

    rng = np.random.default_rng(0)
    a16 = rng.integers(0, 60000, (8, 8)).astype(np.uint16)
    im16 = Image.fromarray(a16)
    assert im16.mode.startswith("I;16")
    got = np.asarray(to_8bit(im16, gray=True), np.float64)
    assert np.abs(got - a16 / 65535 * 255).max() <= 0.5 + 1e-9  # scaled, not clipped at 255
    assert (got >= 255).mean() < 0.05
    f = rng.random((8, 8)).astype(np.float32)
    imf = Image.fromarray(f, "F")
    assert np.abs(np.asarray(to_8bit(imf, gray=True), np.float64) - f * 255).max() <= 0.5 + 1e-6
    # training (the folder loader) and predict see the same pixels of the same file
    root = tmp_path / "d"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 60000, (8, 8)).astype(np.uint16)).save(
                root / c / f"{i}.png")
        imf.save(root / c / "f.tiff")
    data = load_dataset(str(root), seed=0, val_fraction=0.2)
    m = nasforge.load(model)
    for p in sorted(root.rglob("*.png"))[:3] + [root / "a" / "f.tiff"]:
        with Image.open(p) as im:
            train_px = np.asarray(to_8bit(im, gray=True), np.float32) / 255.0
            pred_px = _pil_to_unit(im, m.input_shape)[0]
        assert np.abs(train_px - pred_px).max() < 1e-6
    assert data.input_shape == (1, 8, 8)


# ------------------------------------------------------------------ F6: config files
def test_config_file_is_checked_before_it_is_read(tmp_path, capsys):
    code, out, err = run(["search", "--config", "/dev/zero", "--trials", "1"], capsys)
    _clean(code, out, err, ".json or .toml")
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(3 << 30)
    code, out, err = run(["search", "--config", big, "--trials", "1"], capsys)
    _clean(code, out, err, "bytes")
    cfg = tmp_path / "c.toml"
    cfg.write_text("trials = true\n")
    code, out, err = run(["search", "--config", cfg, *FAST], capsys)
    _clean(code, out, err, "takes a value")


# --------------------------------------------------------------- F1: pool shut down early
def test_resume_with_workers_on_a_finished_run_is_quiet(fast_run):
    for _ in range(3):
        r = subprocess.run([sys.executable, "-m", "nasforge.cli", "resume", str(fast_run),
                            "--workers", "2"], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "NASFORGE_NO_PROGRESS": "1"},
                           cwd=Path(__file__).parent)
        assert "Exception in thread" not in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert r.returncode in (0, 2), r.stderr


# ----------------------------------------------------------------- F11: corrupt database
@pytest.mark.parametrize("damage, cmd", [
    ("truncate", "resume"),
    ("meta_config_garbage", "show"),
    ("meta_config_garbage", "resume"),
    ("meta_config_list", "resume"),
    ("trial_metrics_list", "show"),
    ("trial_metrics_list", "resume"),
    ("strategy_state", "resume"),
    ("status_garbage", "show"),
    ("random_bytes", "resume"),
])
def test_damaged_database_is_a_clear_error(fast_run, capsys, damage, cmd):
    db = fast_run / DB_NAME
    if damage == "truncate":
        os.truncate(db, db.stat().st_size - 100)
    elif damage == "random_bytes":
        raw = bytearray(db.read_bytes())
        raw[-200:-136] = os.urandom(64)
        db.write_bytes(bytes(raw))
    else:
        c = sqlite3.connect(db)
        sql = {
            "meta_config_garbage": "UPDATE meta SET value='{not json' WHERE key='config'",
            "meta_config_list": "UPDATE meta SET value='[1,2]' WHERE key='config'",
            "trial_metrics_list": "UPDATE trials SET metrics='[1]' WHERE id=1",
            "strategy_state": "UPDATE strategy_state SET state='{\"population\":5}'",
            "status_garbage": "UPDATE meta SET value='nope' WHERE key='status'",
        }[damage]
        c.execute(sql)
        c.commit()
        c.close()
    args = ["show", fast_run] if cmd == "show" else ["resume", fast_run, "--trials", "4"]
    code, out, err = run(args, capsys)
    assert code == 2, (out, err)
    assert "Traceback" not in out + err and str(fast_run) in err


# ---------------------------------------------------------------- F12: hostile summary
@pytest.mark.parametrize("content", ["[1,2,3]", "[" * 100000 + "]" * 100000,
                                     '{"metrics":[1,2]}', "sparse"])
def test_show_with_a_hostile_summary_json(fast_run, capsys, content):
    best = fast_run / "best"
    best.mkdir()
    f = best / "summary.json"
    if content == "sparse":
        with open(f, "wb") as fh:
            fh.truncate(3 << 30)
    else:
        f.write_text(content)
    code, out, err = run(["show", fast_run], capsys)
    assert code in (0, 2) and "Traceback" not in out + err


# -------------------------------------------------------------------- F13: OFA supernet
@pytest.mark.parametrize("meta, weights", [
    ("[1,2]", b""),
    ('{"space": "mobile", "space_config": [1], "input_shape": [1, 8, 8], "num_classes": 10,'
     ' "kernel_transform": false}', b""),
    ('{"space": "mobile", "space_config": {}, "input_shape": [1, 8, 8], "num_classes": 10,'
     ' "kernel_transform": false}', b"\x00garbage" * 10),
])
def test_hostile_supernet_files_are_clear_errors(tmp_path, meta, weights):
    from nasforge.oneshot.ofa import SUPERNET_META, SUPERNET_WEIGHTS, load_supernet

    d = tmp_path / "supernet"
    d.mkdir()
    (d / SUPERNET_META).write_text(meta)
    (d / SUPERNET_WEIGHTS).write_bytes(weights)
    with pytest.raises(NasforgeError, match="supernet|must hold"):
        load_supernet(d)


# ------------------------------------------------------------------- F14: numpy inputs
def test_numpy_inputs_of_any_shape_or_header(model, tmp_path, capsys):
    import nasforge

    z = tmp_path / "zero.npy"
    np.save(z, np.float32(3.0))
    _clean(*run(["predict", model, z], capsys), "not images")
    fake = tmp_path / "fake.npy"
    np.save(fake, np.zeros((2, 8, 8), np.uint8))
    raw = fake.read_bytes().replace(b"(2, 8, 8)", b"(100000, 100000, 8)")
    fake.write_bytes(raw)
    _clean(*run(["predict", model, fake], capsys), "header claims")
    a8, a12 = tmp_path / "a8.npy", tmp_path / "a12.npy"
    np.save(a8, np.zeros((2, 8, 8), np.uint8))
    np.save(a12, np.zeros((1, 12, 12), np.uint8))
    code, out, err = run(["predict", model, a8, a12, "--json"], capsys)
    assert code == 0, err
    assert len(json.loads(out)) == 3
    m = nasforge.load(model)
    assert len(m.predict([np.zeros((8, 8)), np.zeros((9, 9))])) == 2


# --------------------------------------------------------- F10, F15: disk full, read-only
def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.mark.parametrize("size", ["40k", "100k", "400k"])
def test_disk_full_is_one_line_and_leaves_no_side_files(tmp_path, capsys, size):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or not _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        code, out, err = run(["search", *FAST, "--trials", "30", "--out", mnt / "r"], capsys)
        assert code in (0, 2) and "Traceback" not in out + err, (out, err)
        if code == 2:
            assert len(err.strip().splitlines()) <= 3
        assert not list(mnt.rglob(".nasforge.db.creating-*"))
        if (mnt / "r" / DB_NAME).exists():  # what was stored is consistent
            c = sqlite3.connect(f"file:{mnt / 'r' / DB_NAME}?mode=ro", uri=True)
            assert c.execute("PRAGMA quick_check").fetchone()[0] == "ok"
            c.close()
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_run_on_read_only_media_can_be_shown_but_not_resumed(fast_run, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0 or not _mount("--bind", str(fast_run), str(ro)):
        pytest.skip("needs root for a read-only bind mount")
    try:
        if not _mount("-o", "remount,ro,bind", str(ro)):
            pytest.skip("cannot remount read-only")
        before = _dump(fast_run)
        code, out, err = run(["show", ro], capsys)
        assert code == 0, err
        code, out, err = run(["resume", ro, "--trials", "5"], capsys)
        _clean(code, out, err, "read-only")
        assert _dump(fast_run) == before
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


# ----------------------------------------------------------------------- F16: bad values
def test_bad_values_and_paths_are_one_line_errors(model, tmp_path, capsys):
    _clean(*run(["search", *FAST, "--trials", "1", "--strategy-opt", "seed=abc",
                 "--out", tmp_path / "a"], capsys), "seed")
    _clean(*run(["search", *FAST, "--trials", "1", "--out", tmp_path / ("x" * 300)], capsys),
           "too long")
    _clean(*run(["search", "--dataset", "d" * 100_000, "--trials", "1", "--no-progress",
                 "--out", tmp_path / "b"], capsys), "Error")
    _clean(*run(["export", model, "--out", "/etc/passwd/x.onnx"], capsys), "cannot write")
    for opset in ("1", "1000000"):
        _clean(*run(["export", model, "--out", tmp_path / "m.onnx", "--opset", opset], capsys),
               "opset")


# ---------------------------------------------------- F17: two searches in the same second
def test_default_run_dirs_never_collide(tmp_path, monkeypatch):
    from nasforge.experiment import default_run_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda *_: "20260101-000000")
    dirs = [default_run_dir("cnn-x") for _ in range(3)]
    assert len(set(dirs)) == 3 and all(d.is_dir() for d in dirs)
    assert dirs[1].name.endswith("-2")


def test_same_second_searches_in_one_folder_both_run(tmp_path):
    env = {**os.environ, "NASFORGE_NO_PROGRESS": "1",
           "PYTHONPATH": str(Path(__file__).parent) + os.pathsep + os.environ.get(
               "PYTHONPATH", "")}
    code = ("import test_executors, sys; from nasforge.cli import main; "
            "main(sys.argv[1:])")
    args = [sys.executable, "-c", code, "search", *FAST, "--trials", "2"]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(list((tmp_path / "runs").iterdir())) == 2


# ------------------------------------------------------ F18 and the rest: up-front checks
def test_a_folder_with_one_image_per_class_is_a_data_error(tmp_path):
    from nasforge.data import load_dataset

    root = _image_folder(tmp_path / "d", {"a": 1, "b": 1})
    with pytest.raises(DataError, match="at least 3 per class"):
        load_dataset(str(root))


def test_unknown_objective_metric_is_refused_up_front(tmp_path, capsys):
    code, out, err = run(["search", "--dataset", "digits", "--trials", "1", "--objective",
                          "bogus:max", "--no-progress", "--out", tmp_path / "r"], capsys)
    _clean(code, out, err, "unknown metric")
    assert "val_accuracy" in err and not (tmp_path / "r").exists()


def test_an_oversized_architecture_string_is_not_echoed_whole():
    with pytest.raises(NasforgeError) as e:
        spaces.get("cnn").parse("stem8|" + "x" * 3_400_000)
    assert len(str(e.value)) <= 2000


# --------------------------------------------- the class: every build is bounded first
HYP = settings(max_examples=40, deadline=None,
               suppress_health_check=[HealthCheck.too_slow])


@HYP
@given(max_blocks=st.integers(1, 12), widths=st.lists(st.integers(1, 4096), min_size=1,
                                                       max_size=4, unique=True),
       kernels=st.lists(st.sampled_from([1, 3, 5, 7, 9]), min_size=1, max_size=3, unique=True),
       expansion=st.integers(1, 16), side=st.sampled_from([8, 16, 64]),
       seed=st.integers(0, 2**16))
def test_anything_over_the_size_limit_is_refused_before_allocation(
        max_blocks, widths, kernels, expansion, side, seed):
    from unittest import mock

    limit = 200_000
    with mock.patch.dict(os.environ, {"NASFORGE_MAX_PARAMS": str(limit)}):
        _check_bounded(limit, max_blocks, widths, kernels, expansion, side, seed)


def _check_bounded(limit, max_blocks, widths, kernels, expansion, side, seed):  # noqa: ANN001
    from unittest import mock

    import torch

    sp = spaces.get("cnn", max_blocks=max_blocks, widths=widths, stem_widths=widths,
                    kernels=kernels, expansion=expansion)
    arch = sp.sample(np.random.default_rng(seed))
    with torch.device("meta"):
        from nasforge.spaces.base import _guard

        _guard.active = True
        try:
            n_meta = sum(p.numel() for p in sp.build(arch, (1, side, side), 10).parameters())
        finally:
            _guard.active = False
    allocated: list[int] = []
    real = torch.nn.Conv2d.__init__

    def spy(self, *a, **k):  # noqa: ANN001 - records every real conv allocation
        real(self, *a, **k)
        if self.weight.device.type != "meta":
            allocated.append(self.weight.numel())

    try:
        with mock.patch.object(torch.nn.Conv2d, "__init__", spy):
            net = sp.build(arch, (1, side, side), 10)
    except NasforgeError as e:
        assert n_meta > limit and "parameters" in str(e)
        assert not allocated  # refused before any real weight existed
        return
    assert n_meta <= limit
    assert sum(p.numel() for p in net.parameters()) == n_meta


# ------------------------------------------------------------ F7, F9: Ray not reachable
def test_an_absent_ray_head_fails_fast_and_the_run_keeps_its_executor(tmp_path, capsys,
                                                                      monkeypatch):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("NASFORGE_RAY_CONNECT_TIMEOUT", "2")
    out = tmp_path / "r"
    t0 = time.monotonic()
    code, o, err = run(["search", *FAST, "--trials", "1", "--ray-address",
                        f"127.0.0.1:{port}", "--out", out], capsys)
    _clean(code, o, err, "no Ray head answers")
    assert time.monotonic() - t0 < 30
    if (out / DB_NAME).exists():  # what is left resumes with Ray, not silently in-process
        c = sqlite3.connect(f"file:{out / DB_NAME}?mode=ro", uri=True)
        cfg = json.loads(c.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])
        c.close()
        assert cfg["execution"]["ray_address"] == f"127.0.0.1:{port}"
        code, o, err = run(["resume", out], capsys)
        _clean(code, o, err, "no Ray head answers")


# ------------------------------------------------------------------- F8: Ray head lost
@pytest.mark.slow
def test_a_lost_ray_cluster_interrupts_the_run_and_releases_it(tmp_path):
    """The Ray head (its GCS server) dies mid-search: the driver notices within seconds,
    marks the run interrupted, releases the lock and says how to resume -- before Ray's
    own minute-long reconnect ends in killing the process."""
    pytest.importorskip("ray")
    if subprocess.run(["which", "pgrep"], capture_output=True).returncode != 0:
        pytest.skip("needs pgrep")
    from nasforge.store import LOCK_NAME, RunStore

    out = tmp_path / "r"
    env = {**os.environ, "NASFORGE_NO_PROGRESS": "1", "NASFORGE_RAY_LOST_S": "3",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                          os.environ.get("PYTHONPATH", "")])}
    code = "import test_executors, sys; from nasforge.cli import main; main(sys.argv[1:])"
    before = set(subprocess.run(["pgrep", "-f", "gcs_server"], capture_output=True,
                                text=True).stdout.split())
    p = subprocess.Popen([sys.executable, "-c", code, "search", *FAST, "--trials", "200",
                          "--executor", "ray", "--workers", "1", "--estimator-opt",
                          "sleep=0.5", "--out", str(out)], env=env, cwd=tmp_path,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait for a few stored trials
            if (out / DB_NAME).exists():
                with RunStore.open(out) as s:
                    if s.n_completed() >= 3:
                        break
            time.sleep(0.5)
        pids = set(subprocess.run(["pgrep", "-f", "gcs_server"], capture_output=True,
                                  text=True).stdout.split()) - before
        assert pids, "no GCS server of this search found"
        for pid in pids:
            os.kill(int(pid), 9)
        o, err = p.communicate(timeout=50)  # well before Ray's own 60 s
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130 or p.returncode == 2, err
    assert "resume" in err and "Traceback" not in err
    assert not (out / LOCK_NAME).exists()
    with RunStore.open(out) as s:
        assert s.get_meta("status") == "interrupted" and s.n_completed() >= 3
