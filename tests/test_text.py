"""Text: the ``text:`` loaders (CSV, folder of .txt files), the tokenizer trained on the
training split and stored as JSON, the ``text`` space (embedding + seq blocks), ONNX on
token ids, search -> load -> predict on raw strings, and bad input."""

from __future__ import annotations

import json
import socket

import numpy as np
import pandas as pd
import pytest
import torch

from nasforge import spaces
from nasforge.data import input_kind_of, load_dataset
from nasforge.data.text import PAD_ID, TextPreprocessor, from_texts
from nasforge.errors import DataError, NasforgeError

pytest.importorskip("tokenizers")

NOISE = ("the a of and to in is it that was for on with as this movie film story plot "
         "actor scene").split()
POS = "great wonderful excellent loved superb".split()
NEG = "awful terrible boring hated worst".split()


def _corpus(n: int = 120, seed: int = 0) -> tuple[list[str], list[str]]:
    """Two classes told apart by two keywords among 4-14 noise words."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        c = i % 2
        w = list(rng.choice(NOISE, int(rng.integers(4, 15)))) + list(rng.choice(POS if c
                                                                             else NEG, 2))
        rng.shuffle(w)
        texts.append(" ".join(w))
        labels.append("pos" if c else "neg")
    return texts, labels


def _csv(tmp_path, n: int = 120, **cols) -> str:
    texts, labels = _corpus(n)
    p = tmp_path / "reviews.csv"
    pd.DataFrame({"text": texts, "label": labels, **cols}).to_csv(p, index=False)
    return str(p)


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ----------------------------------------------------------------------------- data
def test_kinds_without_loading_and_the_default_space(tmp_path) -> None:
    assert input_kind_of("text:reviews.csv") == "text"
    assert input_kind_of("TEXT:some/dir") == "text"
    assert input_kind_of("reviews.csv") == "tabular"  # no prefix: a table, as before
    assert spaces.default_for("text") == "text" and "text" in spaces.for_input("text")


def test_csv_ids_padding_and_tokenizer_of_the_training_split_only(monkeypatch, tmp_path
                                                                   ) -> None:
    _no_network(monkeypatch)  # nothing is downloaded
    texts, labels = _corpus(80)
    # a word only this text has (same length and last letter: never a piece of another)
    texts = [f"{t} q{i:03d}x" for i, t in enumerate(texts)]
    d = from_texts("toy", texts, labels, vocab_size=2000, max_length=12)
    assert d.input_kind == "text" and d.x_train.dtype == np.float32
    assert d.input_shape == (12,) and d.classes == ["neg", "pos"]
    assert (d.x_train == np.round(d.x_train)).all() and d.x_train.min() >= 0
    pre = TextPreprocessor.from_state(json.loads(json.dumps(d.preprocessing)))
    vocab = pre.tokenizer.get_vocab()
    seen = {f"q{i:03d}x" for i in range(80)} & set(vocab)
    # exactly the training texts' own words are in the vocabulary, none of val / test
    assert len(seen) == len(d.x_train) < 80
    # padding at the end, with the id the network treats as padding
    short = pre(["great"])[0]
    assert short[0] != PAD_ID and (short[1:] == PAD_ID).all()
    assert (pre(texts[:3]) == pre(texts[:3])).all() and pre(texts[:3]).shape == (3, 12)


def test_csv_through_load_dataset_with_options_and_the_default_length(tmp_path) -> None:
    p = _csv(tmp_path, extra=np.arange(120))
    d = load_dataset(f"text:{p}", target="label", verbose=False,
                     text_options={"text_column": "text", "vocab_size": 64})
    assert d.preprocessing["vocab_size"] <= 64
    assert 8 <= d.input_shape[0] <= 1024 and d.input_shape[0] % 8 == 0
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 120


def test_an_official_test_split_is_kept() -> None:
    texts, labels = _corpus(60)
    d = from_texts("split", texts[:40], labels[:40], texts[40:], labels[40:], max_length=16)
    assert len(d.x_test) == 20 and len(d.x_train) + len(d.x_val) == 40
    pre = TextPreprocessor.from_state(d.preprocessing)
    assert (pre(texts[40:]) == d.x_test).all() and list(d.y_test) == [
        d.classes.index(c) for c in labels[40:]]
    with pytest.raises(DataError, match="both"):
        from_texts("half", texts, labels, texts[:3])


def test_a_folder_of_txt_files_per_class(tmp_path) -> None:
    texts, labels = _corpus(30)
    for i, (t, c) in enumerate(zip(texts, labels, strict=True)):
        (tmp_path / "docs" / c).mkdir(parents=True, exist_ok=True)
        (tmp_path / "docs" / c / f"{i}.txt").write_text(t)
    d = load_dataset(f"text:{tmp_path / 'docs'}", verbose=False)
    assert d.classes == ["neg", "pos"] and d.input_kind == "text"
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 30


def test_bad_input_gives_one_line_errors(tmp_path) -> None:
    texts, labels = _corpus(40)
    p = tmp_path / "t.csv"
    pd.DataFrame({"review": texts, "stars": labels, "x": 1}).to_csv(p, index=False)
    with pytest.raises(DataError, match="no label column 'label'.*--target"):
        load_dataset(f"text:{p}")
    with pytest.raises(DataError, match="no text column"):
        load_dataset(f"text:{p}", target="stars")
    with pytest.raises(DataError, match="no text column 'body'"):
        load_dataset(f"text:{p}", target="stars", text_options={"text_column": "body"})
    with pytest.raises(DataError, match="empty text"):
        from_texts("e", [*texts[:-1], "   "], labels)
    with pytest.raises(DataError, match="single class"):
        from_texts("one", texts, ["pos"] * len(texts))
    with pytest.raises(DataError, match="no such file"):
        load_dataset(f"text:{tmp_path / 'missing.csv'}")
    with pytest.raises(DataError, match="no .txt files"):
        (tmp_path / "empty" / "a").mkdir(parents=True)
        load_dataset(f"text:{tmp_path / 'empty'}")
    with pytest.raises(DataError, match="vocab_size"):
        from_texts("v", texts, labels, vocab_size=3)
    with pytest.raises(DataError, match="classification"):
        from_texts("r", texts, labels, task="regression")


# ----------------------------------------------------------------------------- space
def test_known_good_bag_of_embeddings_and_bilstm_and_string_form() -> None:
    sp = spaces.get("text", vocab_size=100)
    good = sp.known_good()
    assert [a.text for a in good[:2]] == ["emb64-nopos|mean|drop0.0",
                                          "emb64-nopos|lstm-w128-bi|max|drop0.0"]
    for a in good:
        assert sp.parse(a.text) == a
        out = sp.build(a, (16,), 3)(torch.randint(0, 100, (4, 16)).float())
        assert out.shape == (4, 3)
    bag = sp.build(good[0], (16,), 2)
    assert sum(p.numel() for p in bag.parameters()) == 100 * 64 + 64 * 2 + 2
    with pytest.raises(NasforgeError, match="emb<width>"):
        sp.parse("mean|drop0.0")
    with pytest.raises(NasforgeError, match="vocab_size"):
        spaces.get("text", vocab_size=0)
    with pytest.raises(NasforgeError, match="unknown option"):
        spaces.get("text", vocab=10)


def test_sampled_archs_build_roundtrip_and_ignore_padding(rng) -> None:
    sp = spaces.get("text", vocab_size=50, widths=[16, 32], embed_widths=[8, 16],
                    heads=[2, 4])
    ids = torch.tensor([[5, 7, 9, 11, 0, 0, 0, 0]]).float()
    for _ in range(12):
        a = sp.sample(rng)
        assert sp.parse(sp.format(a)) == a
        net = sp.build(a, (8,), 2).eval()
        assert net(ids.repeat(2, 1)).shape == (2, 2)
        assert [lv.channels for lv in sp.build_backbone(a, (8,)).levels]
    # padding changes nothing: the same text padded to 8 or to 16 positions
    for text in ("emb16-nopos|mean|drop0.0", "emb16-nopos|conv-k3-d1-w32-nonorm-relu|max|drop0.0",
                 "emb16-nopos|transformer-w32-h4-f2-pre-gelu|mean|drop0.0"):
        a = sp.parse(text)
        torch.manual_seed(0)
        short = sp.build(a, (8,), 2).eval()
        long = sp.build(a, (16,), 2).eval()
        long.load_state_dict(short.state_dict())
        with torch.no_grad():
            assert torch.allclose(short(ids), long(torch.cat([ids, torch.zeros(1, 8)], 1)),
                                  atol=1e-5), text
    # float ids and integer ids are the same input
    net = sp.build(sp.parse("emb8-sin|gru-w16-bi|last|drop0.0"), (8,), 2).eval()
    with torch.no_grad():
        assert torch.equal(net(ids), net(ids.long()))


@pytest.mark.slow
def test_onnx_on_token_ids_matches_torch(tmp_path) -> None:
    from nasforge.export import export_onnx

    sp = spaces.get("text", vocab_size=200)
    for i, a in enumerate(sp.known_good()):
        net = sp.build(a, (24,), 3).eval()
        info = export_onnx(net, (24,), tmp_path / f"m{i}.onnx")  # checked with onnxruntime
        assert info.max_abs_diff is not None and info.max_abs_diff < 1e-4
    import onnxruntime as ort

    net = sp.build(sp.known_good()[1], (24,), 3).eval()  # the BiLSTM, on padded ids
    export_onnx(net, (24,), tmp_path / "lstm.onnx", check=False)
    ids = np.zeros((5, 24), np.float32)
    ids[:, :10] = np.random.default_rng(0).integers(2, 200, (5, 10))
    sess = ort.InferenceSession(str(tmp_path / "lstm.onnx"),
                                providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: ids})[0]
    with torch.no_grad():
        assert np.allclose(got, net(torch.from_numpy(ids)).numpy(), atol=1e-4)


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_search_export_load_predict_raw_strings_and_cli(tmp_path, capsys) -> None:
    import nasforge
    from nasforge.cli import main

    p = _csv(tmp_path, 160)
    out = tmp_path / "run"
    r = nasforge.search(f"text:{p}", target="label", trials=2, final_epochs=15,
                        estimator_options={"epochs": 8}, out=out, progress=False,
                        dataset_options={"vocab_size": 128}, space_options={"vocab_size": 128})
    assert r.best_arch is not None and r.test_metrics["test_accuracy"] >= 0.8
    summary = json.loads((out / "best" / "summary.json").read_text())
    assert summary["space"] == "text" and summary["onnx"]["error"] is None
    doc = json.loads((out / "best" / "arch.json").read_text())
    assert doc["input_kind"] == "text" and doc["preprocessing"]["tokenizer"]["model"][
        "type"] == "WordPiece" and "token ids" in doc["onnx_input"]
    m = nasforge.load(out)
    fresh, labels = _corpus(40, seed=7)
    pred = m.predict(fresh)  # raw strings
    # 0.7, not 0.8: the WordPiece trainer breaks frequency ties in a per-run hash order
    # (the same data gave vocabularies of 127 and 128 ids in one process), so the model
    # and its accuracy on these 40 texts move from run to run: 0.775-0.825 measured;
    # chance is 0.5
    assert np.mean(np.array(pred.labels) == np.array(labels)) >= 0.7
    assert len(m.predict("a superb and wonderful film")) == 1  # one string is one text
    with pytest.raises(DataError, match="empty"):
        m.predict(["fine", ""])
    # the ONNX graph on the ids predict computes
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "best" / "model.onnx"),
                                providers=["CPUExecutionProvider"])
    x = m.preprocess(fresh[:6])
    onnx_out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        ref = m.module(torch.from_numpy(x)).numpy()
    assert np.allclose(onnx_out, ref, atol=1e-4)
    # the command line: --text, a .txt file and a .csv with a text column
    (tmp_path / "one.txt").write_text(fresh[0])
    pd.DataFrame({"text": fresh[1:4]}).to_csv(tmp_path / "more.csv", index=False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["predict", str(out), "--text", fresh[4], str(tmp_path / "one.txt"),
              str(tmp_path / "more.csv"), "--json"])
    assert e.value.code in (0, None)
    rows = json.loads(capsys.readouterr().out)
    assert [r["text"] for r in rows] == ["text:1", str(tmp_path / "one.txt"),
                                         *[f"{tmp_path / 'more.csv'}:{i}" for i in (1, 2, 3)]]
    assert [r["label"] for r in rows] == m.predict([fresh[4], *fresh[:4]]).labels
    with pytest.raises(SystemExit) as e:
        main(["predict", str(out)])
    assert e.value.code == 2 and "--text" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_search_on_a_text_csv(tmp_path, capsys) -> None:
    from nasforge.cli import main

    p = _csv(tmp_path, 100)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        main(["search", "--dataset", f"text:{p}", "--target", "label", "--trials", "2",
              "--epochs", "3", "--final-epochs", "3", "--dataset-opt", "vocab_size=64",
              "--space-opt", "vocab_size=64", "--out", str(out), "--no-progress"])
    assert e.value.code in (0, None), capsys.readouterr().err
    assert "--text" in capsys.readouterr().out  # the "use it" lines fit a text model
    assert (out / "best" / "model.onnx").is_file()
