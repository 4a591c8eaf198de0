"""The benchmark harness on a tiny table: protocol bookkeeping, report files, CLI."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from nasforge import spaces
from nasforge.bench import (
    StrategySpec,
    parse_strategies,
    random_median_hit,
    register_cli,
    run_bench,
    run_one,
    summarize,
)
from nasforge.errors import NasforgeError
from nasforge.spaces.nb201 import OP_NAMES


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A made-up full NB201 table (15,625 rows) with a smooth valid and a noisy test column."""
    rng = np.random.default_rng(0)
    space = spaces.get("nb201")
    w = rng.normal(size=(6, 5))
    rows = ["index,arch,toy_valid,toy_test"]
    for i, ops in enumerate(itertools.product(range(5), repeat=6)):
        arch = space.make([OP_NAMES[o] for o in ops])
        v = 50 + 5 * sum(w[e, o] for e, o in enumerate(ops))
        rows.append(f"{i},{arch.text},{v:.3f},{v + rng.normal():.3f}")
    p = tmp_path_factory.mktemp("tbl") / "toy.csv"
    p.write_text("\n".join(rows) + "\n")
    return p


def test_parse_strategies_with_options() -> None:
    specs = parse_strategies('random, evolution[population_size=10,sample_size=3],x[a="b"]')
    assert [s.label for s in specs] == [
        "random",
        "evolution[population_size=10,sample_size=3]",
        'x[a="b"]',
    ]
    assert specs[1].name == "evolution" and specs[1].options == {
        "population_size": 10,
        "sample_size": 3,
    }
    assert specs[2].options == {"a": "b"}
    with pytest.raises(NasforgeError):
        parse_strategies("random,random")
    with pytest.raises(NasforgeError):
        parse_strategies("evolution[population_size]")


def test_run_one_tracks_test_accuracy_of_the_best_validation_arch(table: Path) -> None:
    opts = {"dataset": "toy", "table": str(table)}
    r = run_one(StrategySpec("random", "random"), 0, 40, est_opts=opts, top_k=10)
    assert r["queries"] == 40 and len(r["traj"]) == 40
    # replay the same seed by hand: the incumbent's test accuracy after every query
    from nasforge import estimators, strategies

    space = spaces.get("nb201")
    est = estimators.get("nb201-table", **opts)
    st = strategies.get("random", space=space, seed=0)
    best_v, best_t, expect = -math.inf, math.nan, []
    for _ in range(40):
        s = st.ask()
        val, test = est.lookup(s.arch.text)
        if val > best_v:
            best_v, best_t = val, test
        expect.append(best_t)
        st.tell(s, est.evaluate(s.arch, space).visible())
    assert r["traj"] == pytest.approx(expect)


def _run_one_by_hand(name: str, seed: int, queries: int, opts: dict) -> dict:
    """``run_one``'s own ask/tell loop from before it ran in ``nasforge.run.loop.Run``."""
    from nasforge import estimators, strategies
    from nasforge.bench import MAX_ASKS_PER_QUERY, _Tracker

    space = spaces.get("nb201")
    est = estimators.get("nb201-table", **opts)
    tr = _Tracker(queries, frozenset(est.top_k(10)))
    st = strategies.get(name, space=space, seed=seed)
    asks = 0
    while tr.n < queries and asks < MAX_ASKS_PER_QUERY * queries:
        sug = st.ask()
        asks += 1
        res, _ = tr.evaluate(est, space, sug.arch)
        st.tell(sug, res.visible())
    pad = queries - len(tr.traj)
    vals = [v if math.isfinite(v) else math.nan for v in tr.vals + [tr.best_val] * pad]
    return {"traj": tr.traj + [tr.best_test] * pad, "val_traj": vals, "hit": tr.hit,
            "queries": tr.n, "asks": asks, "same_network": tr.same_network}


@pytest.mark.parametrize("name", ["random", "evolution", "local-search", "hyperband"])
def test_run_one_in_the_search_loop_gives_the_numbers_of_a_plain_loop(table: Path,
                                                                     name: str) -> None:
    """The benchmark's numbers do not depend on which loop drives the strategy
    (hyperband re-asks archs at higher fidelities: cached, not counted)."""
    opts = {"dataset": "toy", "table": str(table)}
    for seed in (0, 1):
        want = _run_one_by_hand(name, seed, 60, opts)
        got = run_one(StrategySpec(name, name), seed, 60, est_opts=opts)
        assert json.dumps({k: got[k] for k in want}) == json.dumps(want)
        if name == "hyperband":
            assert got["asks"] > got["queries"]
        assert got["strategy_s"] > 0


def test_duplicates_are_not_counted_as_queries(table: Path) -> None:
    opts = {"dataset": "toy", "table": str(table)}
    r = run_one(StrategySpec("optuna-direct", "optuna-direct"), 1, 60, est_opts=opts)
    assert r["queries"] == 60
    assert r["asks"] >= r["queries"]  # Optuna repeats itself; those asks were free


def test_same_network_queries_are_counted(table: Path) -> None:
    """Random search (no skipping) repeats networks; local search with skip_equivalent never."""
    opts = {"dataset": "toy", "table": str(table)}
    rnd = run_one(StrategySpec("random", "random"), 0, 300, est_opts=opts)
    ls = run_one(StrategySpec("local-search", "local-search"), 0, 300, est_opts=opts)
    assert rnd["same_network"] > 0  # ~40% of nb201 strings repeat another string's network
    assert ls["same_network"] == 0


def test_summary_statistics() -> None:
    runs = [
        {"traj": [0.5, 0.6], "hit": 2, "queries": 2, "asks": 3, "strategy_s": 0.002},
        {"traj": [0.7, 0.8], "hit": None, "queries": 2, "asks": 2, "strategy_s": 0.002},
        {"traj": [0.6, 0.7], "hit": 1, "queries": 2, "asks": 2, "strategy_s": 0.002},
    ]
    s = summarize("x", runs, 2)
    assert s.mean == pytest.approx([0.6, 0.7])
    assert s.ci[1] == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)  # t(0.975, 2)
    assert s.median_hit == 2 and s.frac_found == pytest.approx(2 / 3)
    assert s.ms_per_query == pytest.approx(1.0) and s.dup_asks == pytest.approx(1 / 3)
    assert random_median_hit(100, 1) == 50
    assert random_median_hit(15625, 10) == pytest.approx(15625 * math.log(2) / 10, rel=0.05)


def test_tiny_run_writes_markdown_png_and_json(table: Path, tmp_path: Path) -> None:
    res = run_bench(
        dataset="toy",
        strategies="local-search,random",
        seeds=3,
        queries=30,
        checkpoints=(10, 20),
        workers=1,
        table=table,
        out_dir=tmp_path,
        seeds_for={"local-search": 2},
    )
    assert [r.label for r in res.rows] == ["local-search", "random", "optuna-direct"]
    assert res.row("local-search").seeds == 2 and res.row("random").seeds == 3
    assert res.checkpoints == [10, 20, 30]
    md = (tmp_path / "nb201_toy.md").read_text()
    assert "| `local-search` | 2 |" in md and "`optuna-direct`" in md
    assert f"{100 * res.ceiling:.2f}" in md and "@20" in md
    assert "vs `optuna-direct`" in md and "- @30: `local-search`" in md  # the comparison
    assert "| `random` | " in md.split("val acc @20")[1]  # the validation table
    every = md.split("Every strategy minus `optuna-direct`")[1]
    assert "| `local-search` | " in every and "| `random` | " in every
    from nasforge import estimators

    est = estimators.get("nb201-table", table=str(table), dataset="toy")
    best_val = est.lookup(est.best_arch())[0]
    for r in res.rows:  # the incumbent's validation accuracy never decreases, never beats the best
        assert all(b >= a for a, b in itertools.pairwise(r.val_mean))
        assert max(r.val_mean) <= best_val + 1e-9
        assert all(0.0 <= x <= 1.0 for x in r.at_best)
        if r.val_mean[-1] >= best_val - 1e-9:  # every run at the best: the share says 100%
            assert r.at_best[-1] == 1.0
    png = tmp_path / "nb201_toy.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    data = json.loads((tmp_path / "nb201_toy.json").read_text())
    assert len(data["rows"][0]["mean"]) == 30


def test_an_interrupted_run_resumes_from_its_journal(table: Path, tmp_path: Path) -> None:
    kw = dict(dataset="toy", strategies="random", seeds=3, queries=12, checkpoints=(6,),
              workers=1, table=table, out_dir=tmp_path, progress=False)  # fmt: skip
    full = run_bench(**kw)
    assert not (tmp_path / ".nb201_toy.runs.jsonl").exists()  # removed once the report is out
    # a journal as a killed call leaves it: random seeds 0 and 1 done, a torn last line
    journal = tmp_path / ".nb201_toy.runs.jsonl"
    opts = {"dataset": "toy", "table": str(table)}
    import nasforge.bench as B

    key = json.dumps([2, "random", {}, "nb201", "nb201-table", opts, 12, 10], sort_keys=True)
    fake = [dict(run_one(StrategySpec("random", "random"), s, 12, est_opts=opts), key=key)
            for s in (0, 1)]  # fmt: skip
    fake[1]["traj"] = [0.0] * 12  # marks the resumed run, to see it was reused
    journal.write_text("".join(json.dumps(r) + "\n" for r in fake) + '{"label": "ran')
    calls = []
    orig = B.run_one
    B.run_one = lambda s, seed, *a, **k: calls.append((s.label, seed)) or orig(s, seed, *a, **k)
    try:
        res = run_bench(**kw, resume=True)
    finally:
        B.run_one = orig
    assert ("random", 0) not in calls and ("random", 1) not in calls
    assert ("random", 2) in calls and ("optuna-direct", 0) in calls
    assert res.row("random").mean[-1] < full.row("random").mean[-1]  # the zeros were used
    assert res.row("optuna-direct").mean == pytest.approx(full.row("optuna-direct").mean)


def test_bad_inputs_fail_clearly(table: Path, tmp_path: Path) -> None:
    with pytest.raises(NasforgeError, match="Valid strategys|valid"):
        run_bench(dataset="toy", strategies="no-such", seeds=1, queries=5, workers=1,
                  table=table, out_dir=tmp_path)  # fmt: skip
    with pytest.raises(NasforgeError, match="toy"):
        run_bench(dataset="cifar10", strategies="random", seeds=1, queries=5, workers=1,
                  table=table, out_dir=tmp_path)  # fmt: skip


def test_cli_command(table: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    register_cli(app)

    @app.command("other")  # a second command so typer keeps `bench` as a subcommand
    def other() -> None: ...

    out = tmp_path / "res"
    r = CliRunner().invoke(
        app,
        ["bench", "--dataset", "toy", "--strategies", "random", "--seeds", "2", "--queries", "12",
         "--checkpoints", "5", "--workers", "1", "--table", str(table), "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (out / "nb201_toy.md").is_file() and (out / "nb201_toy.png").is_file()
    assert "optuna-direct" in r.output
