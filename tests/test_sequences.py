"""Time series: the aeon-bundled UCR/UEA sets, the user file readers, padding and the mask,
the ``seq`` space, ONNX of recurrent and attention networks, and search -> predict."""

from __future__ import annotations

import json
import socket

import numpy as np
import pandas as pd
import pytest
import torch

from nasforge import spaces
from nasforge.data import input_kind_of, load_dataset
from nasforge.data.sequences import bundled, from_series, pad_series, to_model_input
from nasforge.errors import DataError, NasforgeError

aeon = pytest.importorskip("aeon")


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _toy(n: int = 48, c: int = 1, length: int = 24, seed: int = 0, ragged: bool = False
         ) -> tuple[list[np.ndarray], np.ndarray]:
    """Two classes: a sine or a ramp, with noise; ``ragged``: lengths from 12 to ``length``."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for i in range(n):
        n_i = int(rng.integers(12, length + 1)) if ragged else length
        t = np.linspace(0, 1, n_i)
        base = np.sin(6 * t) if i % 2 else t * 2 - 1
        xs.append(np.stack([base + 0.1 * rng.standard_normal(n_i) for _ in range(c)]))
        ys.append("sine" if i % 2 else "ramp")
    return xs, np.array(ys)


# ----------------------------------------------------------------------------- aeon
def test_bundled_sets_load_offline_with_official_splits(monkeypatch) -> None:
    _no_network(monkeypatch)
    sets = bundled()
    assert {"GunPoint", "BasicMotions", "JapaneseVowels", "ItalyPowerDemand"} <= set(sets)
    assert sets["BasicMotions"]["channels"] == 6 and sets["JapaneseVowels"]["length"] is None
    d = load_dataset("aeon:GunPoint")
    assert d.input_kind == "sequence" and d.x_train.dtype == np.float32
    assert len(d.x_test) == 150 and len(d.x_train) + len(d.x_val) == 50  # official split
    assert d.x_train.shape[1:] == (2, 150) and d.classes == ["1", "2"]
    assert (d.x_train[:, 0] == 1).all()  # fixed length: every step is real
    assert input_kind_of("aeon:GunPoint") == "sequence" and spaces.default_for("sequence") == "seq"
    with pytest.raises(DataError, match="not bundled with aeon.*GunPoint"):
        load_dataset("aeon:NoSuchSet")


def test_variable_length_is_padded_and_masked_never_truncated(monkeypatch) -> None:
    _no_network(monkeypatch)
    from aeon.datasets import load_classification

    raw, _ = load_classification("JapaneseVowels", split="test")
    d = load_dataset("aeon:JapaneseVowels")
    assert d.x_test.shape[1] == 13  # the mask + 12 channels
    lengths = sorted(int(s.shape[1]) for s in raw)
    assert sorted(d.x_test[:, 0].sum(1).astype(int).tolist()) == lengths
    assert d.x_test.shape[2] >= max(lengths)
    padded = d.x_test[:, 1:] * (1 - d.x_test[:, :1])
    assert not padded.any()  # padding is zero after normalization too


def test_padding_policy_and_statistics_of_real_steps() -> None:
    xs = [np.array([[1.0, 2.0, 3.0]]), np.array([[5.0]]), np.array([[1.0, 1.0]])] * 4
    x = pad_series(xs, 4)
    assert x.shape == (12, 2, 4) and x[1, 0].tolist() == [1, 0, 0, 0]
    with pytest.raises(DataError, match="more than the 2 this model takes"):
        pad_series(xs, 2)
    d = from_series("toy", xs, np.arange(12) % 2, test_fraction=0.25, val_fraction=0.25)
    steps = np.concatenate([d.x_train[i, 1][d.x_train[i, 0] > 0] for i in range(len(d.x_train))])
    assert abs(steps.mean()) < 1e-5 and abs(steps.std() - 1) < 1e-4  # over real steps only


# ----------------------------------------------------------------------------- user files
def test_user_files_npz_npy_csv_wide_long_and_ts(tmp_path) -> None:
    xs, y = _toy(40, c=2)
    arr = np.stack(xs)
    np.savez(tmp_path / "s.npz", x=arr, y=y)
    np.save(tmp_path / "s.npy", arr)
    np.save(tmp_path / "s_labels.npy", y)
    np.savez(tmp_path / "flat.npz", x=arr[:, 0], y=y)  # 2-d: a table too, unless prefixed
    assert input_kind_of(str(tmp_path / "flat.npz")) != "sequence"
    assert load_dataset(f"series:{tmp_path / 'flat.npz'}").x_train.shape[1:] == (2, 24)
    for spec in (tmp_path / "s.npz", tmp_path / "s.npy"):
        assert input_kind_of(str(spec)) == "sequence"
        d = load_dataset(str(spec))
        assert d.x_train.shape[1:] == (3, 24) and d.classes == ["ramp", "sine"]
        assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 40
    xr, yr = _toy(30, ragged=True)
    wide = pd.DataFrame([np.pad(s[0], (0, 24 - s.shape[1]), constant_values=np.nan)
                         for s in xr]).assign(label=yr)
    wide.to_csv(tmp_path / "wide.csv", index=False)
    d = load_dataset(f"series:{tmp_path / 'wide.csv'}")
    assert d.x_train.shape[2] == max(s.shape[1] for s in xr)
    assert sorted(np.concatenate([d.x_train, d.x_val, d.x_test])[:, 0].sum(1).astype(int)) \
        == sorted(s.shape[1] for s in xr)
    rows = [{"id": i, "time": t, "a": s[0, t], "b": -s[0, t], "label": yr[i]}
            for i, s in enumerate(xr) for t in range(s.shape[1])][::-1]  # any row order
    pd.DataFrame(rows).to_csv(tmp_path / "long.csv", index=False)
    d = load_dataset(f"series:{tmp_path / 'long.csv'}")
    assert d.x_train.shape[1] == 3
    ts = tmp_path / "toy.ts"  # the UCR/UEA format, unequal lengths
    ts.write_text("@problemName toy\n@timeStamps false\n@missing false\n@univariate true\n"
                  "@equalLength false\n@classLabel true ramp sine\n@data\n" + "".join(
                      ",".join(f"{v:.4f}" for v in s[0]) + f":{lab}\n"
                      for s, lab in zip(xr, yr, strict=True)))
    assert input_kind_of(str(ts)) == "sequence"
    assert load_dataset(str(ts)).x_train.shape[2] == max(s.shape[1] for s in xr)


def test_bad_files_give_one_line_errors(tmp_path) -> None:
    xs, y = _toy(20)
    np.savez(tmp_path / "noy.npz", x=np.stack(xs))
    np.save(tmp_path / "alone.npy", np.stack(xs))
    np.savez(tmp_path / "pickle.npz", x=np.array([object()] * 3, dtype=object), y=y[:3])
    pd.DataFrame(np.stack(xs)[:, 0]).to_csv(tmp_path / "nolabel.csv", index=False)
    pd.DataFrame({"id": [0, 0, 1], "v": [1, 2, 3], "label": ["a", "b", "a"]}).to_csv(
        tmp_path / "twolabels.csv", index=False)
    holes = np.stack(xs)
    holes[3, 0, 5] = np.nan
    np.savez(tmp_path / "holes.npz", x=holes, y=y)
    cases = {
        "series:" + str(tmp_path / "noy.npz"): "needs arrays 'x'",
        str(tmp_path / "alone.npy"): "alone_labels.npy",
        "series:" + str(tmp_path / "pickle.npz"): "pickles are never loaded",
        "series:" + str(tmp_path / "nolabel.csv"): "needs a 'label' column",
        "series:" + str(tmp_path / "twolabels.csv"): "several labels",
        str(tmp_path / "holes.npz"): "missing or infinite values inside",
        "series:" + str(tmp_path / "nothere.csv"): "no such file",
    }
    for spec, msg in cases.items():
        with pytest.raises(DataError, match=msg) as e:
            load_dataset(spec)
        assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- the space
def test_fcn_is_a_point_of_the_space_and_first_known_good() -> None:
    sp = spaces.get("seq")
    fcn = sp.known_good()[0]
    blocks = sp.blocks(fcn)
    assert [(b.type, b.width, b.kernel, b.norm, b.act) for b in blocks] == [
        ("conv", 128, 8, "batch", "relu"), ("conv", 256, 5, "batch", "relu"),
        ("conv", 128, 3, "batch", "relu")]
    assert fcn["readout"] == "mean" and sp.parse(fcn.text) == fcn
    net = sp.build(fcn, (2, 150), 2)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [(m.out_channels, m.kernel_size[0]) for m in convs] == [(128, 8), (256, 5), (128, 3)]
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules()) == 3


def test_space_operators_and_padding_invariance(rng) -> None:
    sp = spaces.get("seq", max_blocks=3, widths=[8, 16])
    x = torch.randn(3, 3, 20)
    x[:, 0] = 1.0
    x[1, 0, 11:] = 0.0
    types = set()
    for _ in range(25):
        a = sp.sample(rng)
        types.update(b.type for b in sp.blocks(a))
        assert sp.parse(a.text) == a and sp.from_json(sp.to_json(a)) == a
        assert sp.mutate(a, rng) != a and all(n != a for n in sp.neighbors(a)[:5])
        assert sp.encode(a).shape == (sp.encoding_size,)
        net = sp.build(a, (3, 20), 4).eval()
        x2 = x.clone()
        x2[1, 1:, 11:] = 123.0  # what is under the padding never matters
        with torch.no_grad():
            assert torch.allclose(net(x), net(x2), atol=1e-5), a.text
        bb = sp.build_backbone(a, (3, 20))
        assert bb(x)[0].shape[1] == bb.levels[0].channels
    assert {"lstm", "gru", "transformer", "conv"} <= types
    with pytest.raises(NasforgeError, match="mask as channel 0"):
        sp.build(a, (3, 8, 8), 2)
    with pytest.raises(NasforgeError, match="divide"):
        spaces.get("seq", widths=[6], heads=[4])


@pytest.mark.slow
def test_onnx_matches_torch_for_lstm_gru_and_attention(tmp_path) -> None:
    from nasforge.export import export_onnx

    sp = spaces.get("seq")
    designs = [
        sp.design([{"type": "conv", "kernel": 5, "width": 32},
                   {"type": "lstm", "width": 32}], "last"),
        sp.design([{"type": "gru", "width": 32, "bidir": True}, {"type": "avgpool"}],
                  "attention"),
        sp.design([{"type": "transformer", "width": 32, "heads": 4, "prenorm": False},
                   {"type": "maxpool"}, {"type": "sepconv", "kernel": 8, "dilation": 2,
                                         "width": 32, "norm": "layer"}], "max"),
    ]
    for i, a in enumerate(designs):
        net = sp.build(a, (3, 30), 4).eval()
        info = export_onnx(net, (3, 30), tmp_path / f"m{i}.onnx")  # checked with onnxruntime
        assert info.max_abs_diff is not None and info.max_abs_diff < 1e-4


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_cli_search_predict_end_to_end_on_a_ragged_set(tmp_path, capsys) -> None:
    from nasforge.cli import main

    xs, y = _toy(60, c=2, length=30, ragged=True)
    np.savez(tmp_path / "toy.npz", x=np.stack([np.pad(s, ((0, 0), (0, 30 - s.shape[1])),
                                                       constant_values=np.nan) for s in xs]),
             y=y)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["search", "--dataset", str(tmp_path / "toy.npz"), "--trials", "3", "--epochs",
              "3", "--final-epochs", "5", "--out", str(out), "--no-progress", "--seed", "1"])
    assert e.value.code in (0, None), capsys.readouterr().err
    summary = json.loads((out / "best" / "summary.json").read_text())
    assert summary["space"] == "seq" and summary["onnx"]["error"] is None
    assert (out / "best" / "model.onnx").is_file()
    np.save(tmp_path / "new.npy", np.stack([s[:, :12] for s in xs[:4]]))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["predict", str(out), str(tmp_path / "new.npy"), "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 4 and {r["label"] for r in rows} <= {"ramp", "sine"}
    import nasforge

    m = nasforge.load(out)
    pred = m.predict([s for s in xs[:6]])  # raw series of different lengths
    assert len(pred) == 6 and np.allclose(pred.probabilities.sum(1), 1)
    with pytest.raises(DataError, match="more than the 30"):
        m.predict(np.zeros((1, 2, 31)))
    x = to_model_input(xs[0], m.input_shape, m.mean, m.std)
    assert x.shape == (1, 3, 30) and x[0, 0].sum() == xs[0].shape[1]


def test_regression_on_the_seq_space(tmp_path) -> None:
    import nasforge

    xs, _ = _toy(40)
    target = np.array([float(s.mean()) for s in xs], np.float32)
    ds = from_series("reg", xs, target, task="regression")
    assert ds.task == "regression" and ds.input_kind == "sequence"
    r = nasforge.search(ds, trials=1, estimator_options={"epochs": 2}, final_epochs=1,
                        out=tmp_path / "r", progress=False)
    assert r.best_arch is not None and "test_rmse" in r.test_metrics
    vals = nasforge.load(tmp_path / "r").predict(np.stack(xs[:3]))
    assert np.asarray(getattr(vals, "values", vals)).shape[0] == 3
