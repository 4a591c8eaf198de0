"""Search spaces written as files (issue 15, part 2): parsing, every error, the examples,
repeat and active_if semantics, the generic operators, and search / export / load /
resume with a file that has moved or changed since."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_kept, sigkill_after_trials, stored_after_kill
from hypothesis import given, settings
from hypothesis import strategies as st

import nasforge
from nasforge import spaces
from nasforge.cli import main as cli_main
from nasforge.errors import ArchParseError, NasforgeError
from nasforge.spaces.file import FileSpace, SpaceFileError
from nasforge.strategies.optuna_adapter import arch_to_params, params_to_arch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "spaces"
CNN = EXAMPLES / "my-cnn.yaml"
MLP = EXAMPLES / "my-mlp.yaml"
TESTS_DIR = Path(__file__).resolve().parent

#: per-repeat widths, a conditional dropout and a residual: every feature at once
COND_DOC = {
    "name": "cond",
    "input": "image",
    "choices": {
        "depth": [1, 2, 3],
        "width": [8, 16],
        "op": ["conv", "sepconv"],
        "use_drop": [False, True],
        "p": {"values": [0.1, 0.5], "active_if": {"use_drop": True}},
        "skip": [False, True],
    },
    "layers": [
        {"repeat": "depth", "per_repeat": ["width"], "block": [
            {"op": "conv", "out": "width", "kernel": 3},
            {"op": "pool", "size": 2},
        ]},
        {"op": "residual", "active_if": {"skip": True}, "block": [
            {"op": "sepconv", "out": 8, "act": "gelu"}]},
        {"op": "dropout", "p": "p", "active_if": {"use_drop": True}},
        {"op": "norm", "kind": "batch", "active_if": {"op": "conv"}},
    ],
}


def cond_space() -> FileSpace:
    return spaces.get("file", document=COND_DOC)


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------------------ examples
def test_the_example_as_written() -> None:
    sp = spaces.from_file(CNN)
    assert sp.title == "my-cnn" and sp.input_kind == "image" and sp.name == "file"
    assert [c.name for c in sp.choices()] == ["depth", "width", "kernel", "act", "dropout"]
    assert sp.size == len(list(sp.enumerate())) == 3 * 3 * 2 * 2 * 2
    a = sp.parse("depth=4;width=16;kernel=5;act=gelu;dropout=0.2")
    net = sp.build(a, (1, 8, 8), 10)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 4 and all(c.kernel_size == (5, 5) and c.out_channels == 16
                                   for c in convs)
    assert any(isinstance(m, torch.nn.GELU) for m in net.modules())
    assert net(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    # 8x8 and four 2x2 pools: 4, 2, 1, and the fourth is skipped instead of emptying the map
    feats = net.eval().forward_features(torch.zeros(1, 1, 8, 8))
    assert feats[-1].shape == (1, 16, 1, 1)
    pools = [m for m in net.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 3
    assert [lv.stride for lv in sp.backbone_levels(a, (1, 8, 8))] == [1, 2, 4, 8]


def test_the_tabular_example_trains_on_vectors() -> None:
    sp = spaces.from_file(MLP)
    assert sp.input_kind == "tabular"
    a = sp.parse("depth=3;width=32;act=relu;dropout=0.0")
    torch.manual_seed(0)
    net = sp.build(a, (7,), 3)
    assert [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)] == [
        32, 32, 32, 3]
    x = torch.randn(64, 7)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    first = None
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.5 * first
    with pytest.raises(NasforgeError, match="tabular rows: input_shape must be"):
        sp.build(a, (1, 8, 8), 3)
    with pytest.raises(NasforgeError, match="takes images"):
        spaces.from_file(CNN).build(spaces.from_file(CNN).sample(np.random.default_rng(0)),
                                    (7,), 3)


def test_json_and_toml_files_are_the_same_space(tmp_path) -> None:
    sp = spaces.from_file(CNN)
    j = write(tmp_path, json.dumps(sp.document), "s.json")
    toml = write(tmp_path, """
name = "my-cnn"
input = "image"
[choices]
depth = [2, 3, 4]
width = [16, 32, 64]
kernel = [3, 5]
act = ["relu", "gelu"]
dropout = [0.0, 0.2]
[[layers]]
repeat = "depth"
block = [{op = "conv", out = "width", kernel = "kernel", act = "act"},
         {op = "pool", kind = "max", size = 2}]
[[layers]]
op = "dropout"
p = "dropout"
""", "s.toml")
    for p in (j, toml):
        other = spaces.from_file(p)
        assert other.choices() == sp.choices() and other.config() == sp.config()


def test_config_rebuilds_from_json_with_sorted_keys() -> None:
    """A stored run or model keeps the document (choices as an ordered list): the order
    of the decisions survives JSON that sorts its keys."""
    for sp in (spaces.from_file(CNN), cond_space()):
        stored = json.loads(json.dumps(sp.config(), sort_keys=True))
        again = spaces.get("file", **stored)
        assert again.choices() == sp.choices() and again.config() == sp.config()
        a = sp.sample(np.random.default_rng(1))
        assert again.parse(a.text) == a


# ---------------------------------------------------------------------- repeat/active_if
def test_per_repeat_choices_and_their_inactive_copies() -> None:
    sp = cond_space()
    names = [c.name for c in sp.choices()]
    assert names == ["depth", "width[0]", "width[1]", "width[2]", "op", "use_drop", "p",
                     "skip"]
    a = sp.make({"depth": 1, "width[0]": 16, "width[1]": 16, "width[2]": 16, "op": "conv",
                 "use_drop": False, "p": 0.5, "skip": True})
    # repeats that are not built, and p while use_drop is false, are reset and left out
    assert a["width[1]"] == 8 and a["width[2]"] == 8 and a["p"] == 0.1
    assert a.text == "depth=1;width[0]=16;op=conv;use_drop=False;skip=True"
    assert sp.parse(a.text) == a
    b = sp.make({**a.as_dict(), "depth": 2, "width[1]": 16})
    net = sp.build(b, (1, 8, 8), 4)
    widths = [m.out_channels for m in net.body.modules()
              if isinstance(m, torch.nn.Conv2d) and m.groups == 1 and m.kernel_size == (3, 3)]
    assert widths == [16, 16]
    # 3 depths with 2, 4, 8 width vectors; x2 op; use_drop: off or 2 values; x2 skip
    assert len(list(sp.enumerate())) == sp.size == (2 + 4 + 8) * 2 * 3 * 2


def test_shared_choice_is_one_decision_for_all_repeats() -> None:
    sp = spaces.from_file(CNN)
    a = sp.parse("depth=3;width=64;kernel=3;act=relu;dropout=0.0")
    convs = [m for m in sp.build(a, (1, 8, 8), 2).modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 64]


def test_active_if_on_choices_and_layers() -> None:
    sp = cond_space()
    base = {c.name: c.options[0] for c in sp.choices()}
    off = sp.make({**base, "use_drop": False})
    on = sp.make({**base, "use_drop": True, "p": 0.5})
    assert not sp.is_active("p", off.as_dict()) and sp.is_active("p", on.as_dict())
    drops = [m.p for m in sp.build(on, (1, 8, 8), 2).modules() if isinstance(m, torch.nn.Dropout)]
    assert drops == [0.5]
    assert not [m for m in sp.build(off, (1, 8, 8), 2).modules()
                if isinstance(m, torch.nn.Dropout)]
    assert sp.neighbors(off) and all(n["p"] == 0.1 for n in sp.neighbors(off)
                                     if not n["use_drop"])
    # the encoding leaves the inactive p all zero
    enc = sp.encode(off)
    assert enc.sum() == sum(1 for c in sp.choices() if sp.is_active(c.name, off.as_dict()))


def test_a_choice_used_only_by_an_unbuilt_repeat_is_inactive() -> None:
    doc = {"name": "z", "input": "tabular",
           "choices": {"n": [0, 1], "w": [4, 8]},
           "layers": [{"repeat": "n", "block": [{"op": "linear", "out": "w"}]},
                      {"op": "act", "kind": "relu"}]}
    sp = spaces.get("file", document=doc)
    assert sp.make({"n": 0, "w": 8}) == sp.make({"n": 0, "w": 4})
    assert len(list(sp.enumerate())) == 3
    assert sp.build(sp.make({"n": 0, "w": 8}), (5,), 2)(torch.zeros(2, 5)).shape == (2, 2)


# --------------------------------------------------------------------- generic operators
SETTINGS = settings(max_examples=40, deadline=None)


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1))
def test_random_archs_build_and_round_trip(seed) -> None:
    sp = cond_space()
    rng = np.random.default_rng(seed)
    a = sp.sample(rng)
    assert sp.parse(sp.format(a)) == a and sp.make(a.as_dict()) == a
    assert sp.from_json(sp.to_json(a)) == a
    assert params_to_arch(sp, arch_to_params(sp, a)) == a
    m = sp.mutate(a, rng)
    assert m != a and sp.parse(m.text) == m
    c = sp.crossover(a, m, rng)
    assert sp.parse(c.text) == c
    assert sp.equivalence_key(a) == a.text
    assert len(sp.encode(a)) == sp.encoding_size
    with torch.no_grad():
        assert sp.build(a, (1, 8, 8), 3).eval()(torch.zeros(1, 1, 8, 8)).shape == (1, 3)


def test_pickles_for_worker_processes() -> None:
    import pickle

    sp = cond_space()
    again = pickle.loads(pickle.dumps(sp))
    assert again.choices() == sp.choices() and again.config() == sp.config()
    a = sp.sample(np.random.default_rng(0))
    assert again.parse(a.text) == a


def test_parse_errors_are_arch_parse_errors() -> None:
    sp = spaces.from_file(CNN)
    for bad in ("depth=5", "widht=16", "depth", "kernel=4;depth=2"):
        with pytest.raises(ArchParseError):
            sp.parse(bad)


# -------------------------------------------------------------------------------- errors
GOOD = CNN.read_text()


@pytest.mark.parametrize("text, key, allowed", [
    (GOOD.replace("op: conv", "op: konv"), "layers[0].block[0].op", "did you mean 'conv'"),
    (GOOD.replace("out: width", "out: widht"), "layers[0].block[0].out",
     "did you mean choice 'width'"),
    (GOOD.replace("kernel: [3, 5]", "kernel: []"), "choices.kernel", "at least one value"),
    (GOOD.replace("width: [16, 32, 64]", "width: [16, 32.5]"), "layers[0].block[0].out",
     "integer from 1"),
    (GOOD.replace("dropout: [0.0, 0.2]", "dropout: [0.0, 2]"), "layers[1].p", "[0, 1)"),
    (GOOD.replace("kernel: [3, 5]", "kernel: [3, 4]"), "layers[0].block[0].kernel", "odd"),
    (GOOD.replace("name: my-cnn\n", ""), "name", "missing"),
    (GOOD.replace("    block:\n", "    blok:\n"), "layers[0].blok", "did you mean 'block'"),
    (GOOD + "heads: [gap]\n", "heads", "allowed: name, input, choices, layers"),
    (GOOD.replace("repeat: depth", "repeat: act"), "layers[0].repeat", "integers from 0"),
    (GOOD.replace("repeat: depth", "repeat: dpth"), "layers[0].repeat",
     "did you mean choice 'depth'"),
    (GOOD.replace("size: 2}", "size: 2, active_if: {actt: relu}}"),
     "layers[0].block[1].active_if.actt", "did you mean 'act'"),
    (GOOD.replace("size: 2}", "size: 2, active_if: {act: tanh}}"),
     "layers[0].block[1].active_if.act", "its values: ['relu', 'gelu']"),
    (GOOD.replace("input: image", "input: audio"), "input", "image, tabular"),
    (GOOD.replace("kernel: kernel, ", ""), "choices.kernel", "not used"),
    (GOOD.replace("{op: dropout, p: dropout}", "{op: dropout}"), "layers[1].p",
     "missing"),
    (GOOD + "  - {op: conv, out: [16\n", "", "invalid YAML at line 16"),
    (GOOD.replace("  kernel: [3, 5]\n", "  kernel: [3, 5]\n  width: [8]\n"), "",
     "invalid YAML at line 7, column 3: key 'width' appears twice"),
    (GOOD.replace("width: [16, 32, 64]", "width: [16, 16]"), "choices.width", "duplicate"),
    (GOOD.replace("act: [relu, gelu]", "act: [relu, null]"), "choices.act", "NoneType"),
    (GOOD.replace("dropout: [0.0, 0.2]", "dropout:\n    values: [0.0, 0.2]\n"
                                         "    active_if: {width: 16}"),
     "choices.dropout.active_if.width", None),  # fine: width is declared before
    (GOOD.replace("dropout: [0.0, 0.2]", "dropout:\n    values: [0.0, 0.2]\n"
                                         "    active_if: {later: 1}\n  later: [1, 2]"),
     "choices.dropout.active_if.later", "declared before"),
    ("- just\n- a list\n", "", "must be a mapping"),
    (GOOD.replace("layers:", "layers: []\nold:"), "", None),  # raises on 'old' or layers
    (GOOD.replace("{op: dropout, p: dropout}", "{op: linear, out: 8}\n  - {op: pool}"),
     "layers[2].op", "takes image inputs"),
])
def test_a_wrong_file_gets_one_message(tmp_path, text, key, allowed) -> None:
    p = write(tmp_path, text)
    if allowed is None and key.startswith("choices.dropout"):
        assert spaces.from_file(p).choices()  # a valid variation: no error
        return
    with pytest.raises(SpaceFileError) as e:
        spaces.from_file(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and "\n" not in msg
    if key:
        assert f": {key}: " in msg
    if allowed:
        assert allowed in msg


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 70) | st.floats(allow_nan=True)
    | st.sampled_from(["depth", "width", "conv", "pool", "relu", "max", "x", ""]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["op", "out", "repeat", "block", "active_if", "p", "kind"]), inner,
        max_size=3),
    max_leaves=8)


def _leaves(doc, path=()):  # noqa: ANN001, ANN202 - paths to every value of a document
    yield path
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(
        doc, list) else ()
    for k, v in items:
        yield from _leaves(v, (*path, k))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_mutated_document_is_a_space_or_one_space_file_error(data) -> None:
    """Any value swapped into the example (or the conditional document) anywhere: a
    working space, or a SpaceFileError -- never another exception."""
    doc = json.loads(json.dumps(data.draw(st.sampled_from([
        spaces.from_file(CNN).document, COND_DOC]))))
    path = data.draw(st.sampled_from(list(_leaves(doc))[1:]))
    node = doc
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = data.draw(_JSON)
    try:
        sp = spaces.get("file", document=doc)
    except SpaceFileError as e:
        assert "\n" not in str(e)
        return
    a = sp.sample(np.random.default_rng(0))
    assert sp.parse(a.text) == a
    shape = (1, 8, 8) if sp.input_kind == "image" else (5,)
    with torch.no_grad():
        sp.build(a, shape, 2).eval()(torch.zeros(1, *shape))


def test_a_missing_file_and_a_bad_suffix(tmp_path) -> None:
    with pytest.raises(SpaceFileError, match="no such file"):
        spaces.from_file(tmp_path / "nope.yaml")
    with pytest.raises(SpaceFileError, match=r"ends in \.yaml"):
        spaces.from_file(write(tmp_path, GOOD, "space.txt"))
    with pytest.raises(SpaceFileError, match="invalid JSON at line 1"):
        spaces.from_file(write(tmp_path, "{name: 1}", "s.json"))
    with pytest.raises(SpaceFileError, match="invalid TOML"):
        spaces.from_file(write(tmp_path, "name = = 1", "s.toml"))


def test_a_hostile_document_is_refused_in_one_line() -> None:
    deep: dict = {"op": "residual", "block": [{"op": "act", "kind": "a"}]}
    for _ in range(12):
        deep = {"op": "residual", "block": [deep]}
    big = {"repeat": 64, "block": [{"repeat": 64, "block": [{"op": "act", "kind": "a"},
                                                            {"op": "act", "kind": "a"}]}]}
    for layers, what in ([deep], "nested more than"), ([big], "more than 4096 layers"):
        with pytest.raises(SpaceFileError, match=what):
            spaces.get("file", document={"name": "h", "input": "tabular",
                                         "choices": {"a": ["relu"]}, "layers": layers})
    with pytest.raises(NasforgeError):
        spaces.get("file", document="not a mapping")


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("op: conv", "op: konv"), "did you mean 'conv'"),
    (None, "no such file"),
])
def test_cli_exit_2_on_a_wrong_file(tmp_path, capsys, edit, message) -> None:
    p = write(tmp_path, edit(GOOD)) if edit else tmp_path / "missing.yaml"
    with pytest.raises(SystemExit) as e:
        cli_main(["search", "--dataset", "digits", "--space", str(p), "--out",
                  str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_a_tabular_file_space_refuses_images(tmp_path) -> None:
    with pytest.raises(NasforgeError, match="builds networks for tabular inputs, but the "
                                            "data are image"):
        nasforge.search("digits", space=MLP, trials=1, out=tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "run.db").exists()


def test_space_options_do_not_apply_to_a_file() -> None:
    with pytest.raises(NasforgeError, match="do not apply to a space file"):
        nasforge.search("digits", space=str(CNN), space_options={"max_blocks": 2}, trials=1,
                        progress=False)


# ------------------------------------------------------------ search, export, load, resume
EST = {"epochs": 1, "data_fraction": 0.2}


@pytest.mark.slow
def test_search_export_load_resume_with_a_moved_and_edited_file(tmp_path) -> None:
    src = tmp_path / "mine.yaml"
    shutil.copy(CNN, src)
    out = tmp_path / "run"
    res = nasforge.search("digits", space=src, strategy="random", trials=2,
                          estimator_options=EST, final_epochs=1, out=out, progress=False)
    assert res.model_dir is not None
    stored = json.loads((res.model_dir / "arch.json").read_text())
    assert stored["space"] == "file" and stored["space_config"]["document"]["name"] == "my-cnn"
    # the file moves away and another space is written in its place: nothing breaks
    src.rename(tmp_path / "moved.yaml")
    src.write_text(GOOD.replace("width: [16, 32, 64]", "width: [8]"))
    model = nasforge.load(out)
    from sklearn.datasets import load_digits

    images = load_digits().images[:4] / 16
    pred = model.predict(images)
    assert len(pred.labels) == 4 and np.allclose(pred.probabilities.sum(1), 1, atol=1e-5)
    res2 = nasforge.resume(out, trials=3, progress=False)
    assert len([t for t in res2.trials if t.done]) == 3
    # the edited file is a different space: resuming with it is refused
    with pytest.raises(NasforgeError, match="different configuration"):
        nasforge.search("digits", space=src, strategy="random", trials=4,
                        estimator_options=EST, out=out, resume=True, progress=False)


def child_search(space: str, out: str, trials: int) -> None:
    """Run in a subprocess by the kill test."""
    nasforge.search("digits", space=space, strategy="evolution", trials=trials, seed=3,
                    estimator_options=EST, final_train=False, out=out, progress=False)


@pytest.mark.slow
def test_sigkill_then_resume_with_the_file_gone(tmp_path) -> None:
    src = tmp_path / "mine.yaml"
    shutil.copy(CNN, src)
    out, n = tmp_path / "run", 6
    code = (f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); import test_space_file as t; "
            f"t.child_search({str(src)!r}, {str(out)!r}, {n})")
    sigkill_after_trials(code, out, 2, poll=0.05)
    before, _running = stored_after_kill(out)
    assert 2 <= len(before) < n
    src.unlink()
    res = nasforge.resume(out, progress=False)
    done = [t for t in res.trials if t.done]
    assert len(done) == n and len({t.arch for t in done}) == n
    assert_kept(before, {t.id: t for t in done})


@pytest.mark.slow
def test_cli_search_resume_and_load(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    argv = ["search", "--dataset", "digits", "--space", str(CNN), "--trials", "2",
            "--epochs", "1", "--data-fraction", "0.2", "--final-epochs", "1",
            "--no-progress", "--out", str(out)]
    with pytest.raises(SystemExit) as e:
        cli_main(argv)
    assert e.value.code in (0, None), capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli_main(["resume", str(out), "--trials", "3", "--no-progress"])
    assert e.value.code in (0, None), capsys.readouterr().err
    assert nasforge.load(out).predict(np.zeros((8, 8))).labels


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


@pytest.mark.slow
def test_the_tabular_example_searches_a_table_and_predicts(tmp_path: Path) -> None:
    """examples/spaces/my-mlp.yaml on a table end to end, trained like the mlp space (it
    learns wine: a constant predictor gets 40 %)."""
    import pandas as pd
    from sklearn.datasets import load_wine

    import nasforge

    frame = load_wine(as_frame=True).frame
    res = nasforge.search(frame, target="target", space=str(EXAMPLES / "my-mlp.yaml"),
                          trials=2, out=tmp_path / "run", progress=False, seed=0)
    assert res.test_metrics["test_accuracy"] > 0.8
    model = nasforge.load(tmp_path / "run" / "best")
    pred = model.predict(frame.drop(columns="target").head(20))
    assert (pd.Series(pred.labels).astype(int).to_numpy()
            == frame["target"].head(20).to_numpy()).mean() > 0.8
