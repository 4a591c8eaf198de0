"""The ranking-ceiling benchmark's pure parts: the CPU time counted, the local-search
pick at a budget, the hand-written report lines kept on regenerating."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "ranking_ceiling.py"


@pytest.fixture(scope="module")
def rc():
    spec = importlib.util.spec_from_file_location("ranking_ceiling", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_a_supernet_costs_its_training_and_its_search_not_the_ranking(rc):
    r = {"train_s": 76.0, "found_search_s": 78.0, "score_s": 38.0}
    assert rc.supernet_cost(r) == pytest.approx(154.0)


def test_the_pick_at_a_budget_is_the_best_trial_finished_by_then(rc):
    trials = [{"arch": "a", "val": 0.80, "end_s": 5.0},
              {"arch": "b", "val": None, "end_s": 9.0},  # failed
              {"arch": "c", "val": 0.85, "end_s": 12.0},
              {"arch": "d", "val": 0.90, "end_s": 20.0}]
    assert rc.incumbent_at(trials, 4.0) is None
    assert rc.incumbent_at(trials, 10.0) == {"arch": "a", "val": 0.80, "trials": 2,
                                             "used_s": 9.0}
    assert rc.incumbent_at(trials, 12.0)["arch"] == "c"
    assert rc.incumbent_at(trials, 100.0) == {"arch": "d", "val": 0.90, "trials": 4,
                                              "used_s": 20.0}
    assert rc.incumbent_at(trials[1:2], 100.0) is None  # only a failed trial


def test_ties_keep_the_first_trial(rc):
    trials = [{"arch": "a", "val": 0.8, "end_s": 1.0}, {"arch": "b", "val": 0.8, "end_s": 2.0}]
    assert rc.incumbent_at(trials, 3.0)["arch"] == "a"


def test_regenerating_keeps_the_hand_written_lines(rc):
    old = "# T\n\n## Goals\n\n- Best method: x\n- hand bullet\n\n## Reading\n\n- note\n"
    assert rc.kept_tail(old) == ["- hand bullet", "", "## Reading", "", "- note"]
    marked = f"# T\n- Best method: x\n- generated\n{rc.KEEP_MARK}\n- kept\n"
    assert rc.kept_tail(marked) == ["- kept"]
    assert rc.kept_tail("# T\n\nno goals yet\n") == []
