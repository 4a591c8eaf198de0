"""The command line: listings, error handling (exit 2, no traceback), defaults, and a real
tiny search on digits that `show`, `predict` and `export` then use."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nasforge
import nasforge.experiment as experiment
from nasforge import estimators, spaces, strategies
from nasforge.cli import DEFAULT_TIME_BUDGET, SEARCH_DEFAULTS, main, parse_options
from nasforge.errors import NasforgeError
from nasforge.experiment import SearchResult


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``nasforge argv`` in-process; return (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    cap = capsys.readouterr()
    code = exc.value.code
    return (0 if code is None else int(code)), cap.out, cap.err


# ----------------------------------------------------------------------------- listings
@pytest.mark.parametrize(
    "command, registry",
    [("spaces", spaces.registry), ("strategies", strategies.registry),
     ("estimators", estimators.registry)],
)  # fmt: skip
def test_listings_show_every_registered_name_with_its_description(command, registry, capsys):
    code, out, err = run([command], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == len(registry.names())
    for (name, desc), line in zip(registry.describe().items(), lines, strict=True):
        assert line.split()[0] == name
        if desc:  # test modules may register undocumented toy components
            assert desc.split()[0] in line


def test_no_arguments_prints_help(capsys):
    code, out, err = run([], capsys)
    assert code == 0
    assert "search" in out + err and "predict" in out + err


# ---------------------------------------------------------------------- user errors
def test_unknown_space_lists_valid_names_exit_2(capsys, tmp_path):
    code, out, err = run(
        ["search", "--dataset", "digits", "--space", "nope", "--out", tmp_path / "r"], capsys
    )
    assert code == 2
    for name in spaces.names():
        assert name in err
    assert "Traceback" not in out + err
    assert not (tmp_path / "r").exists()


def test_unknown_strategy_exit_2(capsys, tmp_path):
    code, _, err = run(["search", "--strategy", "evolutoin", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "evolution" in err  # "did you mean" / valid names


def test_bad_time_budget_exit_2(capsys, tmp_path):
    code, out, err = run(["search", "--time-budget", "ten minutes", "--out", tmp_path], capsys)
    assert code == 2
    assert "--time-budget" in err and "10m" in err
    assert "Traceback" not in out + err
    code, _, err = run(["resume", tmp_path, "--time-budget", "0"], capsys)
    assert code == 2


def test_usage_errors_exit_2(capsys, tmp_path):
    code, _, err = run(["search", "--no-such-flag"], capsys)
    assert code == 2 and "--no-such-flag" in err
    code, _, err = run(["search", "--trials", "0"], capsys)
    assert code == 2
    code, _, err = run(["search", "--space-opt", "C", "--out", tmp_path / "r"], capsys)
    assert code == 2 and "key=value" in err
    code, _, err = run(["predict"], capsys)
    assert code == 2


def test_missing_run_dir_exit_2(capsys, tmp_path):
    for cmd in (["show", tmp_path / "nothing"], ["resume", tmp_path / "nothing"],
                ["predict", tmp_path / "nothing", "x.png"]):  # fmt: skip
        code, out, err = run(cmd, capsys)
        assert code == 2, cmd
        assert "nothing" in err and "Traceback" not in out + err


def test_real_entry_point_no_traceback(tmp_path):
    """The installed script path: `python -m nasforge.cli` with a bad name."""
    proc = subprocess.run(
        [sys.executable, "-m", "nasforge.cli", "search", "--space", "nope",
         "--out", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "cnn" in proc.stderr and "nb201" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_parse_options_json_and_strings():
    got = parse_options(["C=8", "ops=[1, 2]", "mode=min", "flag=true", "x=1.5", "s=a=b"], "--o")
    assert got == {"C": 8, "ops": [1, 2], "mode": "min", "flag": True, "x": 1.5, "s": "a=b"}
    with pytest.raises(NasforgeError, match="key=value"):
        parse_options(["novalue"], "--o")
    with pytest.raises(NasforgeError):
        parse_options(["=3"], "--o")


# ------------------------------------------------------------- defaults (no training)
@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Replace the search loop by a recorder: the CLI's arguments, not a real search."""
    calls: list[dict] = []

    def fake_search(dataset, **kw):
        calls.append({"dataset": dataset, **kw})
        return SearchResult(run_dir=Path(kw["out"]), best_arch=None)

    monkeypatch.setattr(experiment, "search", fake_search)
    return calls


def test_default_search_on_digits_is_a_planned_time_budget(captured, capsys, tmp_path):
    code, out, _ = run(["search", "--dataset", "digits", "--out", tmp_path / "r"], capsys)
    assert code == 0
    (kw,) = captured
    # the plan (successive halving over seconds) is chosen by search(): strategy None
    assert kw["space"] == "cnn" and kw["strategy"] is None and kw["estimator"] == "train"
    assert kw["trials"] is None and kw["time_budget"] == DEFAULT_TIME_BUDGET["digits"]
    assert kw["estimator_options"] is None and kw["final_epochs"] is None
    assert kw["final_train"] is True and kw["budget_spent"] >= 0
    assert str(tmp_path / "r") in out


def test_trials_without_time_budget_keep_the_epoch_defaults(captured, capsys, tmp_path):
    code, _, _ = run(["search", "--dataset", "digits", "--trials", "10", "--out",
                      tmp_path / "r"], capsys)
    assert code == 0
    (kw,) = captured
    d = SEARCH_DEFAULTS["digits"]
    assert kw["strategy"] == "evolution" and kw["trials"] == 10 and kw["time_budget"] is None
    assert kw["estimator_options"] == {"epochs": d["epochs"], "data_fraction": d["data_fraction"]}
    assert kw["final_epochs"] == d["final_epochs"]


def test_default_search_on_fashion_mnist_is_five_minutes(captured, capsys, tmp_path,
                                                          monkeypatch):
    import nasforge.data as D

    monkeypatch.setattr(D, "fashion_mnist_available", lambda data_dir=None: True)
    code, _, _ = run(["search", "--out", tmp_path / "r"], capsys)  # dataset auto
    assert code == 0
    (kw,) = captured
    assert kw["dataset"] == "auto" and kw["time_budget"] == 300.0


def test_auto_falls_back_to_digits_defaults(captured, capsys, tmp_path, monkeypatch):
    import nasforge.data as D

    monkeypatch.setattr(D, "fashion_mnist_available", lambda data_dir=None: False)
    run(["search", "--out", tmp_path / "r"], capsys)
    assert captured[0]["time_budget"] == DEFAULT_TIME_BUDGET["digits"]


def test_explicit_options_win_and_are_passed(captured, capsys, tmp_path):
    code, _, err = run(
        ["search", "--dataset", "digits", "--epochs", "2", "--data-fraction", "0.5",
         "--time-budget", "2m", "--seed", "4", "--final-epochs", "1", "--space", "nb201",
         "--space-opt", "C=8", "--strategy-opt", "population_size=4",
         "--estimator-opt", "batch_size=64", "--out", tmp_path / "r", "--no-progress"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    (kw,) = captured
    assert kw["trials"] is None and kw["time_budget"] == 120.0  # time budget alone: no trial cap
    assert kw["seed"] == 4 and kw["final_epochs"] == 1 and kw["progress"] == "phases"
    assert kw["space"] == "nb201" and kw["space_options"] == {"C": 8}
    assert kw["strategy_options"] == {"population_size": 4}
    assert kw["estimator_options"] == {"epochs": 2, "data_fraction": 0.5, "batch_size": 64}


def test_conflicting_epochs_exit_2(captured, capsys, tmp_path):
    code, _, err = run(
        ["search", "--epochs", "2", "--estimator-opt", "epochs=3", "--out", tmp_path], capsys
    )
    assert code == 2 and "conflicts" in err and not captured


def test_other_estimators_get_no_training_defaults(captured, capsys, tmp_path):
    code, _, err = run(["search", "--dataset", "digits", "--estimator", "synflow",
                        "--out", tmp_path / "r"], capsys)  # fmt: skip
    assert code == 0, err
    assert not captured[0]["estimator_options"]


def test_ctrl_c_exits_130_with_resume_hint(monkeypatch, capsys, tmp_path):
    def interrupted(dataset, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "search", interrupted)
    code, out, err = run(["search", "--dataset", "digits", "--out", tmp_path / "r"], capsys)
    assert code == 130
    assert f"nasforge resume {tmp_path / 'r'}" in err
    assert "Traceback" not in out + err


def test_bugs_keep_their_traceback(monkeypatch, tmp_path):
    def buggy(dataset, **kw):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(experiment, "search", buggy)
    with pytest.raises(ZeroDivisionError):
        main(["search", "--dataset", "digits", "--out", str(tmp_path / "r")])


# ------------------------------------------------------------------ a real tiny run
@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real 2-trial search on digits through the CLI, with final training and export."""
    out = tmp_path_factory.mktemp("cli") / "run"
    with pytest.raises(SystemExit) as exc:
        main(["search", "--dataset", "digits", "--trials", "2", "--epochs", "1",
              "--final-epochs", "1", "--out", str(out), "--no-progress",
              "--estimator-opt", "measure_latency=false"])  # fmt: skip
    assert exc.value.code in (0, None)
    return out


def test_search_writes_the_model_and_says_where(run_dir):
    best = run_dir / "best"
    for f in ("arch.json", "weights.safetensors", "model.onnx", "summary.json"):
        assert (best / f).is_file(), f
    assert nasforge.load(best).input_shape == (1, 8, 8)


def test_show_lists_trials_best_and_final_metrics(run_dir, capsys):
    from nasforge.store import RunStore

    with RunStore.open(run_dir) as store:
        trials = store.trials()
        best = store.best("val_accuracy", "max")
    code, out, err = run(["show", run_dir], capsys)
    assert code == 0, err
    flat = re.sub(r"[\s│]", "", out)  # table cells may fold long strings over lines
    for t in trials:
        assert t.arch in flat
    assert f"Best architecture (trial {best.id}): {best.arch}" in out
    assert "test_accuracy" in out
    assert str(run_dir / "best") in out
    code, out, _ = run(["show", run_dir, "--top", "1"], capsys)
    assert code == 0 and "top 1" in out


@pytest.fixture(scope="module")
def digit_pngs(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = load_digits()
    folder = tmp_path_factory.mktemp("pngs")
    paths = []
    for i in range(3):
        img = (d.images[i] / 16.0 * 255).astype(np.uint8)
        p = folder / f"digit{i}.png"
        Image.fromarray(img, "L").save(p)
        paths.append(p)
    return paths


def test_predict_prints_a_class_per_image(run_dir, digit_pngs, capsys):
    model = nasforge.load(run_dir / "best")
    expected = model.predict(digit_pngs)
    code, out, err = run(["predict", run_dir / "best", *digit_pngs], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3
    for line, path, label in zip(lines, digit_pngs, expected.labels, strict=True):
        assert line.startswith(f"{path}: {label} (")
        assert label in model.classes


def test_predict_json_top_k(run_dir, digit_pngs, capsys):
    code, out, err = run(["predict", run_dir, digit_pngs[0], "--top-k", "3", "--json"], capsys)
    assert code == 0, err
    (doc,) = json.loads(out)
    assert doc["image"] == str(digit_pngs[0])
    assert len(doc["top_k"]) == 3
    probs = [t["probability"] for t in doc["top_k"]]
    assert probs == sorted(probs, reverse=True) and 0 <= probs[-1] <= probs[0] <= 1
    assert doc["label"] == doc["top_k"][0]["label"]


def test_predict_folder_and_npy(run_dir, digit_pngs, tmp_path, capsys):
    arr = np.stack([np.asarray(Image.open(p)) for p in digit_pngs])
    np.save(tmp_path / "x.npy", arr)
    code, out_npy, err = run(["predict", run_dir, tmp_path / "x.npy"], capsys)
    assert code == 0, err
    code, out_dir, err = run(["predict", run_dir, digit_pngs[0].parent], capsys)
    assert code == 0, err
    labels = lambda out: [ln.split(": ")[1].split(" (")[0] for ln in out.strip().splitlines()]  # noqa: E731
    assert labels(out_npy) == labels(out_dir)


def test_predict_unreadable_image_exit_2(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    code, out, err = run(["predict", run_dir, bad], capsys)
    assert code == 2 and "bad.png" in err and "Traceback" not in out + err


def test_export_onnx_matches_torch(run_dir, tmp_path, capsys):
    import onnxruntime as ort
    import torch

    target = tmp_path / "exported.onnx"
    code, out, err = run(["export", run_dir, "--format", "onnx", "--out", target], capsys)
    assert code == 0, err
    assert str(target) in out
    model = nasforge.load(run_dir)
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    sess = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        ref = model.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    code, _, err = run(["export", run_dir, "--format", "tflite", "--out", target], capsys)
    assert code == 2 and "onnx" in err


# ------------------------------------------------------------------ command modules
def test_command_modules_add_commands_and_a_broken_one_is_skipped(tmp_path, monkeypatch, capsys):
    import nasforge.cli as cli

    (tmp_path / "nf_hello_cmd.py").write_text(
        "import typer\n"
        "def register_cli(app: typer.Typer) -> None:\n"
        "    @app.command('hello')\n"
        "    def hello(name: str = 'world') -> None:\n"
        "        typer.echo(f'hello {name}')\n"
    )
    (tmp_path / "nf_broken_cmd.py").write_text(
        "from __future__ import annotations\n"
        "import typer\n"
        "def register_cli(app: typer.Typer) -> None:\n"
        "    @app.command('broken')\n"
        "    def broken(x: NoSuchType = None) -> None: ...\n"  # fails when typer builds it
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["nf_hello_cmd", "nf_broken_cmd", "nf_absent"])
    monkeypatch.setattr(cli.app, "registered_commands", list(cli.app.registered_commands))
    cli._load_command_modules()
    err = capsys.readouterr().err
    assert "nf_broken_cmd" in err and "nf_absent" not in err  # absent: silently skipped
    code, out, _ = run(["hello", "--name", "nas"], capsys)
    assert code == 0 and out.strip() == "hello nas"
    code, out, _ = run(["spaces"], capsys)  # the core commands still work
    assert code == 0 and "cnn" in out
    code, _, err = run(["broken"], capsys)
    assert code == 2


def test_search_help_shows_the_defaults(capsys):
    code, out, err = run(["search", "--help"], capsys)
    assert code == 0
    text = " ".join((out + err).split())
    assert "default: 10" in text and "runs/SPACE-STRATEGY-TIME" in text  # not eaten as markup


def test_summary_lines_show_every_tasks_primary_metric():
    """The summary line reads the metric names from the registered tasks: a segmentation
    run's test mIoU shows (it was left out when the list was written by hand)."""
    from nasforge.cli._app import _metrics_line

    line = _metrics_line({"test_miou": 0.19, "test_dice": 0.28, "test_loss": 0.7,
                          "params": 122117, "peak_memory_mb": 3.2})
    assert "test_miou 0.19" in line and "test_dice" in line and "params" in line
    assert "peak_memory_mb" not in line
    assert _metrics_line({"test_accuracy": 0.9, "val_accuracy": 0.8}).startswith(
        "test_accuracy")
