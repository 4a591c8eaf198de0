"""The OFA ranking benchmark's report: the table from a journal, the reading kept."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ofa_ranking.py"


@pytest.fixture(scope="module")
def ofr():
    spec = importlib.util.spec_from_file_location("ofa_ranking", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _journal() -> dict:
    def runs(vals):
        return [{"val": v, "train_s": 1.0} for v in vals]

    sup = {"options": {}, "train_s": 10.0, "scores": [0.6, 0.62, 0.7],
           "ends": {"smallest": 0.5, "largest": 0.7}}
    return {"settings": {"threads": 1, "max_train": 40, "width_mult": 0.5, "epochs": 1,
                         "phase_epochs": "1,1,1,1", "batch_size": 8},
            "archs": ["x", "y", "z"], "load": [0.1, 0.2], "machine": {"torch": "t", "cpu": "c"},
            "standalone": {"1": {"a": runs((0.70, 0.72, 0.75)), "b": runs((0.72, 0.70, 0.71))},
                           "4": {"a": runs((0.70, 0.72, 0.75)), "b": runs((0.71, 0.72, 0.76))}},
            "supernets": {"sandwich-kd": sup}}


def test_taus_are_computed_per_truth_and_a_ceiling_without_agreement_has_no_fraction(ofr):
    rk = ofr.ranking(_journal())
    assert list(rk) == ["1", "4"]
    assert rk["1"]["ceiling"] < 0.05 and rk["1"]["methods"]["sandwich-kd"]["fraction"] is None
    m = rk["4"]["methods"]["sandwich-kd"]
    assert rk["4"]["ceiling"] == pytest.approx(1.0) and m["tau"] == pytest.approx(1.0)
    assert m["fraction"] == pytest.approx(1.0) and rk["4"]["train_s"] == 6.0


def test_the_report_has_one_row_per_supernet_and_keeps_the_reading(ofr, tmp_path):
    data = SimpleNamespace(y_train=[0] * 30, y_val=[0] * 10)
    md = ofr._markdown(_journal(), data)
    rows = [line for line in md.splitlines() if line.startswith("| `sandwich-kd`")]
    assert len(rows) == 3 and "in-place KD" in rows[0]  # the supernets table, two truths
    assert "| n/a |" in rows[1] and "**1.000** | 1.00 |" in rows[2]
    assert "4-epoch stand-alone truth" in md
    path = tmp_path / "ofa_ranking.md"
    path.write_text(md + "## Reading\n\nthe hand-written part\n")
    tail = ofr.kept_tail(path)
    assert tail == ["## Reading", "", "the hand-written part"]
    again = ofr._markdown(_journal(), data, tail)
    assert again.endswith("the hand-written part\n") and again.count(ofr.KEEP_MARK) == 1
    assert ofr.kept_tail(tmp_path / "missing.md") == []


def test_quick_without_out_is_a_usage_error(ofr, tmp_path):
    with pytest.raises(SystemExit) as e:
        ofr.main(["--quick"])  # --quick without --out would overwrite the real report
    assert e.value.code == 2
