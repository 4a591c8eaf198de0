"""Hostile and bad input: every parser under hypothesis, malformed CLI values and config
files, bad data, tampered model directories (nothing is ever unpickled), runs from other
versions -- each a clear error (exit code 2 from the CLI) that leaves stored work intact."""

from __future__ import annotations

import json
import math
import pickle
import re
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import tiny_model_dir
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_executors import SPACE as PROBE_SPACE

from nasforge import spaces
from nasforge.cli import main as cli_main
from nasforge.cli import parse_options
from nasforge.errors import ArchParseError, DataError, NasforgeError
from nasforge.experiment import parse_duration
from nasforge.store import DB_NAME, FORMAT_VERSION, LOCK_NAME, RunStore

SRC = Path(__file__).resolve().parents[1] / "src" / "nasforge"
HYP = settings(max_examples=150, deadline=None,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _spaces() -> list[Any]:
    """One instance (default options) of every registered space that has defaults, and
    the ones that need a document (``file``: the example and a conditional one)."""
    from test_space_file import CNN, cond_space

    out = []
    for name in spaces.names():
        try:
            out.append(spaces.get(name))
        except (TypeError, NasforgeError):
            continue
    return [*out, spaces.from_file(CNN), cond_space()]


SPACES = _spaces()
SPACE_IDS = [s.name if s.name != "file" else f"file-{s.title}" for s in SPACES]


def _grammar(space: Any) -> st.SearchStrategy[str]:
    """Text built from the pieces of the space's own arch strings: gets past the first check
    far more often than random text, into the deeper branches of the parser."""
    rng = np.random.default_rng(0)
    pieces: set[str] = set()
    for _ in range(20):
        text = space.sample(rng).text
        pieces.update(re.split(r"([|;=+~\-])", text))
    pieces.update(["|", ";", "=", "+", "~", "-", "", " ", "k", "w", "e", "99999", "-1", "nan",
                   "1e309", "9" * 5000, "\x00", "٣", "drop", "stem", "True"])
    return st.lists(st.sampled_from(sorted(pieces)), max_size=40).map("".join)


def _chars() -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8"), max_size=200)


# ------------------------------------------------------------------------------ spaces
def test_every_registered_space_is_covered():
    assert {"nb201", "cnn", "file-my-cnn", "file-cond"} <= set(SPACE_IDS)


@pytest.mark.parametrize("space", SPACES, ids=SPACE_IDS)
@HYP
@given(data=st.data())
def test_space_parse_raises_only_arch_parse_error(space, data):
    text = data.draw(st.one_of(_chars(), _grammar(space)))
    try:
        arch = space.parse(text)
    except ArchParseError:
        return
    # whatever parses is a valid, canonical arch of the space
    assert space.parse(arch.text) == arch
    assert space.make(arch.as_dict()) == arch


@pytest.mark.parametrize("space", SPACES, ids=SPACE_IDS)
@HYP
@given(seed=st.integers(0, 2**32 - 1))
def test_space_round_trips_every_formatted_arch(space, seed):
    arch = space.sample(np.random.default_rng(seed))
    assert space.parse(arch.text) == arch and space.parse(arch.text).text == arch.text
    assert space.parse(space.format(arch)) == arch
    assert space.parse(f"  {arch.text}\n") == arch
    assert space.from_json(space.to_json(arch)) == arch
    assert space.from_json(json.loads(space.to_json(arch))) == arch


@pytest.mark.parametrize("space", SPACES, ids=SPACE_IDS)
def test_space_parse_of_mutated_numbers(space):
    """Every number of real arch strings swapped for a huge, negative, non-ASCII or
    non-finite one: refused with ArchParseError (int() of 5000 digits raises ValueError)."""
    rng = np.random.default_rng(1)
    for _ in range(10):
        text = space.sample(rng).text
        runs = list(re.finditer(r"[0-9]+(?:\.[0-9]+)?", text))
        assert runs or space.name == "nb201"
        for m in runs:
            for bad in ("9" * 5000, "-1", "\u0663", "1e999", "nan", "0x10", "1_0", ""):
                hostile = text[:m.start()] + bad + text[m.end():]
                try:
                    arch = space.parse(hostile)
                except ArchParseError:
                    continue
                assert space.parse(arch.text) == arch


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)


@pytest.mark.parametrize("space", SPACES, ids=SPACE_IDS)
@HYP
@given(doc=st.one_of(_JSON, st.fixed_dictionaries(
    {"choices": _JSON}, optional={"arch": _JSON, "space": _JSON})))
def test_space_from_json_raises_only_arch_parse_error(space, doc):
    for form in (doc, json.dumps(doc)):
        try:
            space.from_json(form)
        except ArchParseError:
            pass


# ---------------------------------------------------------------------------- durations
@HYP
@given(text=st.one_of(_chars(), st.from_regex(r"[0-9.dhms min\-e_]{0,12}", fullmatch=True)))
@example("1e400")
@example("9" * 5000 + "d")
@example("nan")
@example("-0")
def test_parse_duration_raises_only_nasforge_error(text):
    try:
        secs = parse_duration(text)
    except NasforgeError:
        return
    assert isinstance(secs, float) and math.isfinite(secs) and secs > 0


@HYP
@given(d=st.integers(0, 9), h=st.integers(0, 23), m=st.integers(0, 59), s=st.integers(0, 59))
def test_parse_duration_round_trip(d, h, m, s):
    total = d * 86400 + h * 3600 + m * 60 + s
    text = "".join(f"{v}{u}" for v, u in ((d, "d"), (h, "h"), (m, "m"), (s, "s")) if v)
    if total == 0:
        with pytest.raises(NasforgeError):
            parse_duration(text or "0")
    else:
        assert parse_duration(text) == total
        assert parse_duration(str(total)) == total


@HYP
@given(v=st.floats(min_value=1e-3, max_value=1e9, allow_nan=False))
def test_parse_duration_of_numbers(v):
    assert parse_duration(v) == v and parse_duration(repr(v)) == v


# --------------------------------------------------------------- objectives/constraints
objectives = pytest.importorskip("nasforge.objectives")


@HYP
@given(text=st.one_of(_chars(), st.from_regex(r"[a-z_]{0,12}[:<>=]{0,2}[0-9.kMGe+-]{0,8}",
                                               fullmatch=True)))
def test_objective_and_constraint_parsers_raise_only_nasforge_error(text):
    for parse in (objectives.Objective.parse, objectives.Constraint.parse,
                  objectives.parse_number, objectives.parse_objectives,
                  objectives.parse_constraints):
        try:
            out = parse(text)
        except NasforgeError:
            continue
        if isinstance(out, objectives.Objective):
            assert objectives.Objective.parse(str(out)) == out
        if isinstance(out, objectives.Constraint):
            again = objectives.Constraint.parse(str(out))
            assert (again.metric, again.op) == (out.metric, out.op)
            assert again.bound == pytest.approx(out.bound, rel=1e-5)


@HYP
@given(metric=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True),
       mode=st.sampled_from(["max", "min"]),
       op=st.sampled_from(["<=", ">="]),
       bound=st.floats(-1e12, 1e12, allow_nan=False))
def test_objective_and_constraint_round_trip(metric, mode, op, bound):
    o = objectives.Objective.parse(f"{metric}:{mode}")
    assert objectives.Objective.parse(str(o)) == o and o.mode == mode
    c = objectives.Constraint(objectives.canonical_metric(metric), op, bound)
    again = objectives.Constraint.parse(str(c))
    assert (again.metric, again.op) == (c.metric, c.op)
    assert again.bound == pytest.approx(c.bound, rel=1e-5, abs=1e-9)
    assert objectives.parse_number(objectives.format_number(bound)) == pytest.approx(
        bound, rel=1e-5, abs=1e-9)


# ------------------------------------------------------------------- CLI key=value parser
@HYP
@given(pairs=st.lists(_chars(), max_size=5))
@example(["x=" + "[" * 100000])
@example(["=1"])
@example(["k=NaN"])
def test_cli_option_parser_raises_only_nasforge_error(pairs):
    try:
        out = parse_options(pairs, "--space-opt")
    except NasforgeError:
        return
    assert isinstance(out, dict) and all(isinstance(k, str) and k for k in out)


@HYP
@given(opts=st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True),
                            _JSON.filter(lambda v: not _has_nan(v)), max_size=5))
def test_cli_option_parser_round_trip(opts):
    pairs = [f"{k}={json.dumps(v)}" for k, v in opts.items()]
    assert parse_options(pairs, "--space-opt") == opts


def _has_nan(v: Any) -> bool:
    if isinstance(v, float):
        return math.isnan(v)
    if isinstance(v, list):
        return any(_has_nan(x) for x in v)
    if isinstance(v, dict):
        return any(_has_nan(x) for x in v.values())
    return False


# ------------------------------------------------------------------------------- the CLI
def run(argv: list[Any], capsys) -> tuple[int, str, str]:
    """``nasforge argv`` in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        cli_main([str(a) for a in argv])
    cap = capsys.readouterr()
    return (0 if exc.value.code is None else int(exc.value.code)), cap.out, cap.err


#: a fast search on the toy space of test_executors (no training, no data)
FAST = ["--space", PROBE_SPACE, "--estimator", "probe-exec", "--strategy", "random",
        "--dataset", "digits", "--no-final-train", "--no-progress"]


@pytest.mark.parametrize("args, message", [
    (["--trials", "abc"], "trials"),
    (["--trials", "0"], "trials"),
    (["--trials", "-3"], "trials"),
    (["--time-budget", "soon"], "not a duration"),
    (["--time-budget", "-5m"], "duration"),
    (["--workers", "0"], "workers"),
    (["--workers", "two"], "workers"),
    (["--retries", "-1"], "retries"),
    (["--trial-timeout", "never"], "--trial-timeout"),
    (["--trial-timeout", "0"], "--trial-timeout"),
    (["--executor", "warp"], "unknown executor"),
    (["--executor", "inprocess", "--workers", "2"], "one trial at a time"),
    (["--executor", "process", "--ray-address", "10.0.0.1:6379"], "ray executor"),
    (["--ray-address", " "], "ray_address"),
    (["--space", "nope"], "Valid spaces"),
    (["--strategy", "evolutoin"], "evolution"),
    (["--estimator", "nope"], "Valid estimators"),
    (["--space-opt", "noequals"], "key=value"),
    (["--space-opt", "x=" + "[" * 50000], "nested too deeply"),
    (["--space-opt", "bogus=3"], "unknown option"),
    (["--seed", "-1"], "seed"),
    (["--data-fraction", "2"], "data-fraction"),
    (["--dataset", "/no/such/place", "--estimator", "train"], "unknown data set"),
])
def test_search_refuses_malformed_values_exit_2(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    fast = [a for a in FAST]
    for flag in ("--space", "--estimator", "--strategy", "--dataset"):
        if flag in args:  # the case under test sets this one itself
            i = fast.index(flag)
            del fast[i:i + 2]
    code, out, err = run(["search", *fast, "--out", tmp_path / "r", *args], capsys)
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err + out
    assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()


def _config(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


@pytest.mark.parametrize("name, text, message", [
    ("c.json", "{trials: 3", "not valid JSON"),
    ("c.json", "[1, 2]", "table/object"),
    ("c.json", '{"trails": 3}', "unknown option 'trails'"),
    ("c.json", '{"trials": "many"}', "trials"),
    ("c.json", '{"trials": 0}', "trials"),
    ("c.json", '{"workers": [1, 2]}', "single value"),
    ("c.json", '{"space_opt": 5}', "table of options"),
    ("c.json", "[" * 100000, "not valid JSON"),
    ("c.json", b"\xff\xfe\x00garbage", "not valid JSON"),
    ("c.toml", "trials = ", "not valid TOML"),
    ("c.toml", 'executor = "warp"', "unknown executor"),
    ("c.yaml", "trials: 3", ".json or .toml"),
    ("missing.json", None, "cannot read"),
])
def test_bad_config_files_exit_2(tmp_path, capsys, name, text, message):
    path = tmp_path / name if text is None else _config(tmp_path, name, text)
    code, out, err = run(["search", *FAST, "--out", tmp_path / "r", "--config", path], capsys)
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err + out
    assert not (tmp_path / "r").exists()


def test_config_file_sets_defaults_and_the_command_line_wins(tmp_path, capsys):
    cfg = _config(tmp_path, "c.toml", 'trials = 3\nseed = 4\nworkers = 1\n'
                  'trial-timeout = "1m"\n[strategy_opt]\nmetric = "val_accuracy"\n')
    code, out, err = run(["search", *FAST, "--out", tmp_path / "r", "--config", cfg,
                          "--trials", "2"], capsys)
    assert code == 0, err
    with RunStore.open(tmp_path / "r") as s:
        cfg_stored = s.config
        assert s.n_completed() == 2  # the command line's --trials 2, not the file's 3
    assert cfg_stored["seed"] == 4 and cfg_stored["execution"]["trial_timeout"] == 60.0


# ------------------------------------------------------------------------------ runs
def _dump(run_dir: Path) -> list[str]:
    """Every row of the run database, for 'nothing changed' comparisons."""
    c = sqlite3.connect(f"file:{run_dir / DB_NAME}?mode=ro", uri=True)
    try:
        return list(c.iterdump())
    finally:
        c.close()


@pytest.fixture
def small_run(tmp_path, capsys) -> Path:
    out = tmp_path / "run"
    code, _, err = run(["search", *FAST, "--out", out, "--trials", "3"], capsys)
    assert code == 0, err
    return out


@pytest.mark.parametrize("args, message", [
    (["--trials", "0"], "trials"),
    (["--trials", "x"], "trials"),
    (["--time-budget", "yesterday"], "not a duration"),
    (["--workers", "0"], "workers"),
    (["--executor", "warp"], "unknown executor"),
    (["--executor", "inprocess", "--workers", "3"], "one trial at a time"),
    (["--trial-timeout", "-1"], "--trial-timeout"),
    (["--retries", "-2"], "retries"),
])
def test_failed_resume_leaves_the_run_unchanged(small_run, capsys, args, message):
    before = _dump(small_run)
    code, out, err = run(["resume", small_run, "--no-progress", *args], capsys)
    assert code == 2 and message in err and "Traceback" not in err + out
    assert _dump(small_run) == before
    assert not (small_run / LOCK_NAME).exists()
    # and the run is still good: resume it for real
    code, _, err = run(["resume", small_run, "--no-progress", "--trials", "4"], capsys)
    assert code == 0, err
    with RunStore.open(small_run) as s:
        assert s.n_completed() == 4


def test_resume_of_a_locked_run_is_refused_and_changes_nothing(small_run, capsys):
    before = _dump(small_run)
    with RunStore.open(small_run, write=True):
        code, _, err = run(["resume", small_run, "--no-progress", "--trials", "5"], capsys)
    assert code == 2 and "being written by another process" in err
    assert _dump(small_run) == before


def test_run_from_a_newer_version_is_refused_by_every_command(small_run, capsys):
    c = sqlite3.connect(small_run / DB_NAME)
    c.execute("UPDATE meta SET value=? WHERE key='format_version'",
              (json.dumps(FORMAT_VERSION + 7),))
    c.commit()
    c.close()
    before = _dump(small_run)
    for argv in (["show", small_run], ["resume", small_run, "--no-progress"],
                 ["search", *FAST, "--out", small_run, "--resume", "--trials", "5"]):
        code, out, err = run(argv, capsys)
        assert code == 2 and "newer nasforge" in err and "Traceback" not in err + out, argv
    assert _dump(small_run) == before


def test_run_whose_components_are_unknown_here_is_refused(small_run, capsys):
    c = sqlite3.connect(small_run / DB_NAME)
    cfg = json.loads(c.execute("SELECT value FROM meta WHERE key='config'").fetchone()[0])
    cfg["space"]["name"] = "martian"
    c.execute("UPDATE meta SET value=? WHERE key='config'", (json.dumps(cfg),))
    c.commit()
    c.close()
    before = _dump(small_run)
    code, _, err = run(["resume", small_run, "--no-progress"], capsys)
    assert code == 2 and "martian" in err and "cannot rebuild" in err
    assert _dump(small_run) == before
    code, _, err = run(["show", small_run], capsys)  # reading it still works
    assert code == 0, err


def test_run_dir_that_is_a_file_or_garbage(tmp_path, capsys):
    (tmp_path / "file").write_text("hello")
    code, _, err = run(["show", tmp_path / "file"], capsys)
    assert code == 2 and "not a" in err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / DB_NAME).write_bytes(b"SQLite format 3\x00" + b"\x00" * 50)
    code, _, err = run(["resume", tmp_path / "junk", "--no-progress"], capsys)
    assert code == 2 and "Traceback" not in err
    assert not (tmp_path / "junk" / LOCK_NAME).exists()


# ------------------------------------------------------------------------------- data
def test_empty_and_single_class_arrays_are_refused():
    from nasforge.data import from_arrays

    with pytest.raises(DataError, match="empty"):
        from_arrays(np.zeros((0, 8, 8), np.uint8), np.zeros(0, np.int64))
    with pytest.raises(DataError, match="single class"):
        from_arrays(np.zeros((20, 8, 8), np.uint8), np.zeros(20, np.int64))
    with pytest.raises(DataError, match="must match"):
        from_arrays(np.zeros((20, 8, 8), np.uint8), np.arange(19) % 2)
    with pytest.raises(DataError, match="C = 1 or 3"):
        from_arrays(np.zeros((20, 5, 9, 9), np.uint8), np.arange(20) % 2)
    with pytest.raises(DataError, match="shape"):
        from_arrays(np.zeros((20, 2, 9, 9, 3), np.uint8), np.arange(20) % 2)
    with pytest.raises(DataError, match="NaN"):
        from_arrays(np.full((20, 8, 8), np.nan, np.float32), np.arange(20) % 2)
    with pytest.raises(DataError, match="minimum"):
        from_arrays(np.zeros((20, 4, 4), np.uint8), np.arange(20) % 2)
    with pytest.raises(DataError, match="1-D"):
        from_arrays(np.zeros((20, 8, 8), np.uint8), np.zeros((20, 2)))


def _image_folder(root: Path, classes: dict[str, int], size=(12, 12), mode="L") -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, n in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            shape = size if mode == "L" else (*size, 3)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(
                root / name / f"{i}.png")
    return root


@pytest.mark.parametrize("case, message", [
    ("one_class", "one class folder"),
    ("empty_class", "has no images"),
    ("no_classes", "no class folders"),
    ("corrupt_image", "cannot read image"),
    ("tiny_images", "minimum"),
])
def test_bad_image_folders_exit_2(tmp_path, capsys, case, message):
    root = tmp_path / "data"
    if case == "one_class":
        _image_folder(root, {"cats": 6})
    elif case == "empty_class":
        _image_folder(root, {"cats": 6})
        (root / "dogs").mkdir()
    elif case == "no_classes":
        root.mkdir()
        (root / "x.png").write_bytes(b"")
    elif case == "corrupt_image":
        _image_folder(root, {"cats": 6, "dogs": 6})
        (root / "dogs" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    elif case == "tiny_images":
        _image_folder(root, {"cats": 6, "dogs": 6}, size=(3, 3))
    args = ["search", "--dataset", root, "--space", PROBE_SPACE, "--estimator", "train",
            "--strategy", "random", "--trials", "1", "--no-final-train", "--no-progress",
            "--out", tmp_path / "r"]
    code, out, err = run(args, capsys)
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err + out
    assert not (tmp_path / "r").exists()


def test_mixed_sizes_and_channels_in_a_folder_are_converted(tmp_path):
    from nasforge.data import load_dataset

    root = _image_folder(tmp_path / "d", {"a": 5, "b": 5}, size=(12, 12))
    _image_folder(root, {"a": 2}, size=(20, 16), mode="RGB")  # odd ones out
    data = load_dataset(str(root), seed=0)
    assert data.input_shape == (3, 12, 12) and data.num_classes == 2


# ------------------------------------------------------------- model dirs and pickles
class _Bomb:
    """Unpickling this runs code: it creates ``MARK`` (a stand-in for anything worse)."""

    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self):
        return (Path.touch, (self.mark,))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A real exported model: a tiny cnn on digits (untrained: only loading matters)."""
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "best")


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _no_unpickling(monkeypatch) -> list[str]:
    """Make every unpickling entry point fail loudly (and record the attempt)."""
    import torch

    calls: list[str] = []

    def trap(name):
        def f(*a, **k):
            calls.append(name)
            raise AssertionError(f"{name} called on a model directory")
        return f

    for mod, name in ((pickle, "load"), (pickle, "loads"), (torch, "load"), (np, "load")):
        monkeypatch.setattr(mod, name, trap(f"{mod.__name__}.{name}"))
    monkeypatch.setattr(pickle, "Unpickler", trap("pickle.Unpickler"))
    return calls


def test_loading_a_model_never_unpickles(model_dir, monkeypatch):
    import nasforge

    calls = _no_unpickling(monkeypatch)
    m = nasforge.load(model_dir)
    assert m.predict(np.zeros((2, 8, 8), np.uint8)).class_ids.shape == (2,)
    assert calls == []


@pytest.mark.parametrize("bomb_name", ["weights.safetensors", "weights.pt", "model.pkl"])
def test_pickle_bomb_in_a_model_dir_is_refused_and_never_run(model_dir, tmp_path, capsys,
                                                              monkeypatch, bomb_name):
    import hashlib

    d = _copy(model_dir, tmp_path / "m")
    mark = tmp_path / "BOOM"
    bomb = pickle.dumps(_Bomb(mark))
    (d / bomb_name).write_bytes(bomb)
    doc = json.loads((d / "arch.json").read_text())
    doc["weights"] = {"file": bomb_name, "sha256": hashlib.sha256(bomb).hexdigest()}
    (d / "arch.json").write_text(json.dumps(doc))  # a consistent, tampered directory
    calls = _no_unpickling(monkeypatch)
    code, out, err = run(["predict", d, tmp_path / "none.png"], capsys)
    assert code == 2 and "safetensors" in err and "Traceback" not in err + out
    code, _, err = run(["export", d, "--out", tmp_path / "m.onnx"], capsys)
    assert code == 2
    assert not mark.exists() and calls == []
    # the bomb is real: unpickling it (which nasforge never does) would have gone off
    monkeypatch.undo()
    pickle.loads(bomb)
    assert mark.exists()


@pytest.mark.parametrize("tamper, message", [
    ("flip_weight_byte", "checksum"),
    ("arch_json_garbage", "not valid JSON"),
    ("arch_json_list", "not a nasforge model"),
    ("newer_format", "format version"),
    ("unknown_space", "martian"),
    ("bad_arch", "bad token"),
    ("weights_missing", "missing"),
    ("path_traversal", "inside the model directory"),
    ("wrong_shape", "does not fit"),
    ("weights_not_object", "'weights' must be an object"),
    ("weights_symlink_out", "inside the model directory"),
    ("space_config_list", "is corrupt"),
])
def test_tampered_model_dir_is_refused_exit_2(model_dir, tmp_path, capsys, tamper, message):
    import hashlib

    d = _copy(model_dir, tmp_path / "m")
    doc = json.loads((d / "arch.json").read_text())
    if tamper == "flip_weight_byte":
        raw = bytearray((d / "weights.safetensors").read_bytes())
        raw[-5] ^= 0xFF
        (d / "weights.safetensors").write_bytes(bytes(raw))
    elif tamper == "arch_json_garbage":
        (d / "arch.json").write_text("{'not': json")
    elif tamper == "arch_json_list":
        (d / "arch.json").write_text("[1, 2, 3]")
    elif tamper == "newer_format":
        doc["format_version"] = 99
    elif tamper == "unknown_space":
        doc["space"] = "martian"
    elif tamper == "bad_arch":
        doc["arch"] = {"space": "cnn", "arch": "stem8|conv-k3-w8-relu;rm -rf /|drop0.0"}
    elif tamper == "weights_missing":
        (d / "weights.safetensors").unlink()
    elif tamper == "path_traversal":
        secret = tmp_path / "secret.safetensors"
        secret.write_bytes((d / "weights.safetensors").read_bytes())
        doc["weights"] = {"file": "../secret.safetensors",
                          "sha256": hashlib.sha256(secret.read_bytes()).hexdigest()}
    elif tamper == "wrong_shape":
        doc["classes"] = doc["classes"][:3]  # the weights have 10 outputs
    elif tamper == "weights_not_object":
        doc["weights"] = ["weights.safetensors"]
    elif tamper == "weights_symlink_out":
        outside = tmp_path / "outside.safetensors"
        (d / "weights.safetensors").rename(outside)
        (d / "weights.safetensors").symlink_to(outside)
    elif tamper == "space_config_list":
        doc["space_config"] = [1, 2]
    if tamper in ("newer_format", "unknown_space", "bad_arch", "path_traversal", "wrong_shape",
                  "weights_not_object", "space_config_list"):
        (d / "arch.json").write_text(json.dumps(doc))
    code, out, err = run(["predict", d, tmp_path / "x.npy"], capsys)
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err + out


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 3, 9, 9, 2), np.uint8), "shape"),
    (np.zeros((2, 7, 9, 9), np.uint8), "channel axis"),
    (np.full((2, 8, 8), 300, np.int32), "0..255"),
    (np.full((2, 8, 8), np.nan, np.float32), "NaN"),
    (np.zeros((0, 8, 8), np.uint8), "no images"),
    (np.array([{"a": 1}], dtype=object), "pickle"),
])
def test_predict_refuses_bad_image_arrays_exit_2(model_dir, tmp_path, capsys, images, message):
    f = tmp_path / "x.npy"
    np.save(f, images, allow_pickle=True)
    code, out, err = run(["predict", model_dir, f], capsys)
    assert code == 2, (out, err)
    assert message in err and "Traceback" not in err + out


def test_predict_converts_wrong_channel_count_and_size(model_dir):
    import nasforge

    m = nasforge.load(model_dir)
    for imgs in (np.zeros((3, 20, 20, 3), np.uint8), np.zeros((2, 4, 30, 30), np.float32)):
        assert len(m.predict(imgs)) == len(imgs)


def test_no_code_path_unpickles_user_files():
    """Static guard: no torch.load / pickle.load / np.load without allow_pickle=False in
    the package; the process pool's pickle.loads (execution/pool.py) only reads bytes
    the driver pickled itself."""
    bad = []
    for f in sorted(SRC.rglob("*.py")):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"torch\.load\(|pickle\.load\(|joblib\.load|dill\.load|"
                         r"allow_pickle\s*=\s*True|weights_only\s*=\s*False", code):
                bad.append(f"{f.name}:{i}: {line.strip()}")
            if re.search(r"np\.load\(", code) and "allow_pickle=False" not in code:
                bad.append(f"{f.name}:{i}: {line.strip()}")
            if "pickle.loads(" in code and f.relative_to(SRC).as_posix() != "execution/pool.py":
                bad.append(f"{f.name}:{i}: {line.strip()}")
    assert bad == []
