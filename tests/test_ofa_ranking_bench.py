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
    sa = {"a": [{"val": v, "train_s": 1.0} for v in (0.70, 0.72, 0.75)],
          "b": [{"val": v, "train_s": 1.0} for v in (0.71, 0.70, 0.76)]}
    sup = {"options": {}, "train_s": 10.0, "scores": [0.6, 0.62, 0.7], "tau": 1.0,
           "tau_a": 1.0, "tau_b": 1 / 3, "fraction": 3.0,
           "ends": {"smallest": 0.5, "largest": 0.7}}
    return {"settings": {"threads": 1, "max_train": 40, "width_mult": 0.5, "epochs": 1,
                         "phase_epochs": "1,1,1,1", "batch_size": 8},
            "load": [0.1, 0.2], "machine": {"torch": "x", "cpu": "y"}, "standalone": sa,
            "ceiling": 1 / 3, "supernets": {"sandwich-kd": sup}}


def test_the_report_has_one_row_per_supernet_and_keeps_the_reading(ofr, tmp_path):
    data = SimpleNamespace(y_train=[0] * 30, y_val=[0] * 10)
    md = ofr._markdown(_journal(), data)
    row = next(line for line in md.splitlines() if line.startswith("| `sandwich-kd`"))
    assert "**1.000**" in row and "| 3.00 |" in row and "in-place KD" in row
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
