"""Tabular data (issue 15 part 1): reading, column typing, train-only preprocessing, the
``mlp`` space, search/retrain/test/export, ``predict`` on DataFrames, CSVs and dicts, ONNX
against torch, and one clear message (exit code 2) for each kind of bad file."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import nasforge
from nasforge import spaces
from nasforge.cli import main
from nasforge.data import input_kind_of, load_dataset
from nasforge.data.tabular import (
    TabularPreprocessor,
    column_kinds,
    from_dataframe,
    infer_task,
    read_table,
)
from nasforge.errors import DataError, NasforgeError


def _frame(n: int = 160, seed: int = 0) -> pd.DataFrame:
    """Numbers with gaps, text and boolean categories, a small-integer code, a date, an id
    and a constant column; ``label`` depends on ``a`` and ``b``, ``value`` on ``a`` and
    ``c``."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "id": np.arange(1000, 1000 + n),
        "a": rng.normal(size=n),
        "b": rng.choice(["red", "green", "blue"], n),
        "c": rng.integers(0, 4, n),
        "when": pd.date_range("2021-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
        "ok": rng.random(n) > 0.5,
        "const": 7,
    })
    df["label"] = np.where(df["a"] + (df["b"] == "red") > 0.4, "yes", "no")
    df["value"] = 2.0 * df["a"] + df["c"] + rng.normal(size=n) * 0.1
    df.loc[::9, "a"] = np.nan
    df.loc[::13, "b"] = None
    return df


def run(argv: list, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    cap = capsys.readouterr()
    return (0 if exc.value.code is None else int(exc.value.code)), cap.out, cap.err


# ----------------------------------------------------------------------------- reading
def test_csv_tsv_and_parquet_read_the_same_table(tmp_path) -> None:
    df = _frame(30)
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    for name in ("t.csv", "t.tsv"):
        got = read_table(tmp_path / name)
        assert list(got.columns) == list(df.columns) and len(got) == 30
        assert input_kind_of(str(tmp_path / name)) == "tabular"
    pytest.importorskip("pyarrow")
    df.to_parquet(tmp_path / "t.parquet")
    assert read_table(tmp_path / "t.parquet").shape == df.shape
    assert input_kind_of(df) == "tabular" and input_kind_of("digits") == "image"
    assert spaces.default_for("tabular") == "mlp"


def test_column_kinds_and_drops_are_detected() -> None:
    df = _frame().drop(columns=["label", "value"])
    kinds, dropped = column_kinds(df)
    assert kinds == {"a": "numeric", "b": "categorical", "c": "categorical",
                     "when": "date", "ok": "categorical"}
    assert set(dropped) == {"id", "const"}
    assert "id-like" in dropped["id"] and "constant" in dropped["const"]


def test_dataset_is_tabular_float32_standardized_with_training_statistics(capsys) -> None:
    ds = from_dataframe(_frame().drop(columns="value"), "label")
    out = capsys.readouterr().out
    assert "categorical" in out and "dropped     id: id-like" in out and "date" in out
    assert ds.input_kind == "tabular" and ds.task == "classification"
    assert ds.classes == ["no", "yes"]
    (f,) = ds.input_shape
    assert ds.x_train.dtype == np.float32 and ds.x_train.shape[1] == f
    # 1 numeric + flag, 3 + missing colors, 4 codes, 3 date parts, 2 booleans
    assert f == 2 + 4 + 4 + 3 + 2
    assert np.allclose(ds.x_train.mean(0), 0, atol=1e-5)  # training statistics ...
    assert not np.allclose(ds.x_test.mean(0), 0, atol=1e-3)  # ... not the test split's
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 160


def test_imputation_uses_the_training_rows_only() -> None:
    df = pd.DataFrame({"a": [1.5, 2.5, 3.5, np.nan, 1000.5, np.nan],
                       "b": ["x", "y", "x", None, "z", "y"]})
    kinds, dropped = column_kinds(df)
    pre = TabularPreprocessor.fit(df.iloc[:4], kinds, dropped, [])  # 1000 is not training
    a = next(c for c in pre.columns if c["name"] == "a")
    assert a["fill"] == 2.5 and a["flag"]  # the training median, with a missing flag
    raw = pre.encode(df)
    names = pre.feature_names
    assert raw[3, names.index("a")] == 2.5 and raw[3, names.index("a.missing")] == 1.0
    assert raw[5, names.index("a")] == 2.5 and raw[4, names.index("a")] == 1000.5
    # "z" never occurs in training: all zeros; a missing color has its own column
    assert raw[4, [i for i, n in enumerate(names) if n.startswith("b=")]].sum() == 0
    assert raw[3, names.index("b=(missing)")] == 1.0


def test_target_inference_override_and_rows_without_target(capsys) -> None:
    df = _frame()
    assert infer_task(df[["label"]]) == "classification"
    assert infer_task(df[["value"]]) == "regression"
    assert infer_task(df[["c"]]) == "classification"  # few whole numbers
    df.loc[[1, 2, 5], "value"] = np.nan
    ds = from_dataframe(df.drop(columns="label"), "value")
    out = capsys.readouterr().out
    assert "dropped 3 row(s) whose target is missing" in out and "task: regression" in out
    assert ds.task == "regression" and ds.target_names == ["value"]
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 157
    ds = from_dataframe(_frame(), "c", task="regression", verbose=False)
    assert ds.task == "regression" and ds.y_train.dtype == np.float32
    multi = from_dataframe(_frame().drop(columns="label"), ["value", "a"], verbose=False)
    assert multi.task == "regression" and multi.y_train.shape[1] == 2 == multi.n_outputs


def test_preprocessing_state_round_trips_as_json() -> None:
    df = _frame()
    ds = from_dataframe(df, "label", verbose=False)
    state = json.loads(json.dumps(ds.preprocessing))
    pre = TabularPreprocessor.from_state(state)
    x = pre(df.drop(columns=["label"]))
    assert x.shape == (160, ds.input_shape[0])
    allx = np.concatenate([ds.x_train, ds.x_val, ds.x_test])
    assert np.allclose(np.sort(x, 0), np.sort(allx, 0), atol=1e-6)
    state["columns"][0]["kind"] = "martian"
    with pytest.raises(NasforgeError, match="corrupt"):
        TabularPreprocessor.from_state(state)


# ----------------------------------------------------------------------------- the space
def test_mlp_space_operators_backbone_and_known_designs() -> None:
    sp = spaces.get("mlp")
    assert sp.input_kind == "tabular" and sp.has_backbone()
    rng = np.random.default_rng(0)
    good = sp.known_good()
    assert len(good) == 3 and any(a["residual"] for a in good)
    for arch in [*good, *(sp.sample(rng) for _ in range(10))]:
        assert sp.parse(arch.text) == arch and sp.from_json(sp.to_json(arch)) == arch
        assert sp.mutate(arch, rng) != arch and arch not in sp.neighbors(arch)
        assert sp.encode(arch).shape == (sp.encoding_size,)
        net, bb = sp.build(arch, (6,), 3).eval(), sp.build_backbone(arch, (6,)).eval()
        x = torch.randn(5, 6)
        assert net(x).shape == (5, 3)
        (feat,) = bb(x)
        assert feat.shape == (5, bb.levels[0].channels) and bb.levels[0].stride == 1
        assert set(bb.state_dict()) <= set(net.state_dict())
    one = sp.parse("layers=1;w1=64;act=relu;norm=none;dropout=0.0")
    assert one == sp.make({**one.as_dict(), "w3": 512, "residual": True})  # inactive
    with pytest.raises(NasforgeError, match="feature vectors"):
        sp.build(one, (1, 8, 8), 2)
    with pytest.raises(NasforgeError, match="unknown norm"):
        spaces.get("mlp", norms=["group"])


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tab")
    df = _frame().drop(columns="value")
    result = nasforge.search(df, target="label", trials=2, out=out / "run",
                             estimator_options={"epochs": 5}, final_epochs=8, progress=False)
    return df, result


def test_search_on_a_dataframe_trains_tests_and_exports(trained) -> None:
    df, result = trained
    assert result.input_kind == "tabular" and result.model_dir is not None
    assert result.test_metrics["test_accuracy"] > 0.7
    doc = json.loads((result.model_dir / "arch.json").read_text())
    assert doc["input_kind"] == "tabular" and doc["space"] == "mlp"
    assert doc["preprocessing"]["columns"][0]["name"] == "a"  # data, not pickled code
    assert not list(result.model_dir.glob("*.pkl"))
    assert "preprocessed float32 matrix" in doc["onnx_input"]


def test_predict_takes_dataframes_csv_and_dict_records(trained, tmp_path) -> None:
    df, result = trained
    model = nasforge.load(result.model_dir)
    rows = df.drop(columns=["label"]).head(6)
    p = model.predict(rows)
    assert len(p) == 6 and set(p.labels) <= {"yes", "no"}
    rows.to_csv(tmp_path / "new.csv", index=False)
    assert model.predict(tmp_path / "new.csv").labels == p.labels
    recs = rows.to_dict("records")
    assert model.predict(recs).labels == p.labels
    assert model.predict(recs[0]).labels == p.labels[:1]
    assert np.allclose(model.predict(df.head(6)).probabilities, p.probabilities)  # target ok
    with pytest.raises(DataError, match="missing column\\(s\\) 'b'"):
        model.predict(rows.drop(columns="b"))
    with pytest.raises(DataError, match="unexpected column\\(s\\) 'zzz'"):
        model.predict(rows.assign(zzz=1))


def test_onnx_takes_the_preprocessed_matrix_and_matches_torch(trained) -> None:
    import onnxruntime as ort

    df, result = trained
    model = nasforge.load(result.model_dir)
    x = model.preprocess(df.drop(columns=["label"]).head(16))
    sess = ort.InferenceSession(str(result.model_dir / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.shape[1] == x.shape[1]
    onnx_out = sess.run(None, {inp.name: x})[0]
    with torch.no_grad():
        torch_out = model.module(torch.from_numpy(x)).numpy()
    assert np.abs(onnx_out - torch_out).max() < 1e-4


def test_cli_regression_end_to_end_on_a_csv(tmp_path, capsys) -> None:
    df = _frame(120).drop(columns="label")
    df.to_csv(tmp_path / "d.csv", index=False)
    code, out, err = run(["search", "--dataset", tmp_path / "d.csv", "--target", "value",
                          "--trials", "2", "--epochs", "3", "--final-epochs", "3",
                          "--out", tmp_path / "run", "--no-progress"], capsys)
    assert code == 0, err
    assert "task: regression" in out and "test_rmse" in out
    df.drop(columns="value").head(4).to_csv(tmp_path / "new.csv", index=False)
    code, out, err = run(["predict", tmp_path / "run" / "best", tmp_path / "new.csv"], capsys)
    assert code == 0, err
    assert out.count("value=") == 4 and "new.csv:1:" in out
    code, out, err = run(["show", tmp_path / "run"], capsys)
    assert code == 0 and "DATA.csv" in out and "IMAGE.png" not in out
    cfg = json.loads((tmp_path / "run" / "config.json").read_text()) \
        if (tmp_path / "run" / "config.json").exists() else None
    if cfg is not None:
        assert cfg["dataset"]["options"]["target"] == ["value"]


# ----------------------------------------------------------------------------- bad files
def _bad(tmp_path, name: str, text: str | bytes) -> str:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return str(p)


def _good_rows(n: int = 20) -> str:
    return "".join(f"{i % 5},{i * 0.5},{'a' if i % 2 else 'b'}\n" for i in range(n))


@pytest.mark.parametrize(("label", "name", "text", "target", "message"), [
    ("wrong-target", "t.csv", "x,y,z\n" + _good_rows(), "zz", "no column 'zz'"),
    ("did-you-mean", "t.csv", "x,label,z\n" + _good_rows(), "lable", "did you mean 'label'"),
    ("constant-target", "t.csv", "x,y,z\n" + "".join(f"1,{i},a\n" for i in range(20)), "x",
     "same value"),
    ("one-row", "t.csv", "x,y,z\n1,2,a\n", "x", "1 row"),
    ("all-missing", "t.csv", "x,y,z\n" + "".join(f"{i % 2},{i},\n" for i in range(20)), "x",
     "column 'z' has no values"),
    ("mixed-types", "t.csv", "x,y,z\n" + "".join(f"{i % 2},{'oops' if i == 3 else i},a\n"
                                                 for i in range(20)), "x",
     "column 'y' mixes numbers and text"),
    ("empty", "t.csv", "", "x", "is empty"),
    ("binary", "t.csv", b"\x89PNG\r\n\x1a\n\0\0\0IHDR", "x", "not a text table"),
    ("not-a-table", "t.txt", "x,y\n1,2\n", "x", "not a table file"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 20 and "\n" not in v else "")
def test_bad_files_give_one_message_and_exit_2(tmp_path, capsys, label, name, text, target,
                                               message) -> None:
    path = _bad(tmp_path, name, text)
    code, out, err = run(["search", "--dataset", path, "--target", target, "--trials", "1",
                          "--out", tmp_path / "run", "--no-progress"], capsys)
    assert code == 2, (out, err)
    assert message in " ".join(err.split()), err
    assert "Traceback" not in out + err
    assert not (tmp_path / "run" / "run.db").exists()


def test_load_dataset_reads_a_table_and_refuses_a_target_for_images(tmp_path) -> None:
    _frame(40).to_csv(tmp_path / "t.csv", index=False)
    ds = load_dataset(str(tmp_path / "t.csv"), target="label", verbose=False)
    assert ds.input_kind == "tabular"
    with pytest.raises(DataError, match="target names a column"):
        load_dataset("digits", target="x")


def test_the_final_training_is_capped_at_the_spaces_epoch_factor() -> None:
    from types import SimpleNamespace

    from nasforge.run.finalize import _epoch_cap

    sp = spaces.get("mlp")
    rec = SimpleNamespace(metrics={"epochs": 40.0, "train_time_s": 1.0})
    assert _epoch_cap(sp, rec, secs=60.0) == 80  # 2 x the trial's epochs, fits in time
    assert _epoch_cap(sp, rec, secs=1.5) is None  # would not fit: train for the time
    assert _epoch_cap(spaces.get("cnn"), rec, secs=60.0) is None  # images: no cap
