"""The fidelity rank study's pure parts: the sample, the statistics, the report."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fidelity_rank.py"


@pytest.fixture(scope="module")
def fr():
    spec = importlib.util.spec_from_file_location("fidelity_rank", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_sample_starts_with_the_known_good_designs_and_their_mutations(fr):
    from nasforge import spaces

    sp = spaces.get("cnn")
    archs = fr._sample(2, 0)
    known = [a.text for a in sp.known_good()]
    assert archs[: len(known)] == known
    assert len(archs) == len(set(archs)) and len(archs) >= len(known) + 2
    assert fr._sample(2, 0) == archs  # seeded


def test_rank_stats_and_regret(fr):
    ref = {"a": 0.9, "b": 0.8, "c": 0.7}
    perfect = fr._rank_stats(ref, {"a": 3.0, "b": 2.0, "c": 1.0})
    assert perfect["spearman"] == pytest.approx(1.0) and perfect["regret"] == 0.0
    wrong = fr._rank_stats(ref, {"a": 1.0, "b": 2.0, "c": 3.0})
    assert wrong["spearman"] == pytest.approx(-1.0)
    assert wrong["regret"] == pytest.approx(0.2) and wrong["pick"] == "c"


def test_report_lists_every_signal_and_escapes_bars(fr, tmp_path):
    archs = ["stem8|conv-k3-w8-relu|drop0.0", "stem16|conv-k3-w16-relu|drop0.0",
             "stem8|maxpool|drop0.0"]
    done = [{"arch": a, "fidelity": lab, "val_accuracy": acc, "epochs": 1.0}
            for lab, accs in (("3s", (0.5, 0.6, 0.4)), ("9s", (0.6, 0.7, 0.5)),
                              ("reference", (0.7, 0.8, 0.6)))
            for a, acc in zip(archs, accs, strict=True)]
    proxies = {a: {"jacob_cov": float(i), "flops": 1e6 * (i + 1)} for i, a in enumerate(archs)}
    out = tmp_path / "r.md"
    fr._report(done, proxies, {"3s": 3.0, "9s": 9.0, "reference": 30.0}, archs, out, [0])
    text = out.read_text()
    assert "| trial 3s | 1.00 |" in text and "successive halving 3s -> 9s" in text
    assert "proxy jacob_cov" in text and "stem16\\|conv" in text
