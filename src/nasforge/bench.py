"""Benchmark harness: search strategies on a tabular benchmark (NAS-Bench-201 by default).

Why a harness of its own: claims such as "strategy X beats Optuna" only mean something
over many seeds, with confidence intervals, under one protocol. The protocol here is
NAS-Bench-201's: a strategy sees validation accuracy only; what is reported after ``q``
queries is the *test* accuracy of the architecture with the best validation accuracy
found so far. A query is one table evaluation: when a strategy asks for an architecture
it already got, the harness tells it the known result again without counting a query
(the same rule for every strategy, Optuna's included).

Every run also includes two anchors: ``random`` search and ``optuna-direct``, Optuna's
default ``TPESampler`` driven directly on the table through an objective function with
one ``trial.suggest_categorical`` per choice, as a user would (no nasforge adapter).

Seeds run in ``workers`` processes. Output: ``nb201_<dataset>.md`` (table),
``nb201_<dataset>.png`` (mean test accuracy vs queries with 95% CI bands) and
``nb201_<dataset>.json`` (the curves) in ``out_dir``.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from nasforge.bench_report import (  # noqa: F401 - moved there, re-exported here
    ANCHORS,
    compare,
    compare_all,
    random_median_hit,
    write_report,
)
from nasforge.errors import NasforgeError
from nasforge.estimators.base import Estimator, Result
from nasforge.run.loop import Callback

DEFAULT_STRATEGIES = ("random", "evolution", "local-search", "reinforce", "optuna-tpe")
#: a strategy that keeps asking for seen archs is stopped after this many asks per query
MAX_ASKS_PER_QUERY = 20


# ----------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class StrategySpec:
    """A strategy to benchmark: its table label, registry name and options."""

    label: str
    name: str
    options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def parse_strategies(specs: str | Iterable[str | StrategySpec]) -> list[StrategySpec]:
    """``"random,evolution[population_size=10,sample_size=3]"`` -> specs.

    Options in brackets are ``key=value`` pairs, values JSON where they parse as JSON.
    The label is the spec as written, so variants of one strategy get distinct rows.
    """
    if isinstance(specs, str):
        parts, depth, cur = [], 0, ""
        for ch in specs:
            depth += ch == "["
            depth -= ch == "]"
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        parts.append(cur)
        items: list[str | StrategySpec] = [p.strip() for p in parts if p.strip()]
    else:
        items = list(specs)
    out: list[StrategySpec] = []
    for item in items:
        if isinstance(item, StrategySpec):
            out.append(item)
            continue
        m = re.fullmatch(r"\s*([\w.-]+)\s*(?:\[(.*)\])?\s*", item)
        if not m:
            raise NasforgeError(
                f"bad strategy spec {item!r}; write name or name[key=value,key=value]"
            )
        opts: dict[str, Any] = {}
        for pair in filter(None, (p.strip() for p in (m.group(2) or "").split(","))):
            key, sep, raw = pair.partition("=")
            if not sep or not key.strip():
                raise NasforgeError(f"bad option {pair!r} in {item!r}; expected key=value")
            try:
                opts[key.strip()] = json.loads(raw)
            except ValueError:
                opts[key.strip()] = raw.strip()
        out.append(StrategySpec(item.strip(), m.group(1), opts))
    labels = [s.label for s in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise NasforgeError(f"strategy listed twice: {dup}")
    return out


# ----------------------------------------------------------------------------- one run
_WORKER: dict[tuple[Any, ...], Any] = {}


def _setup(space: str, estimator: str, est_opts: Mapping[str, Any]) -> tuple[Any, Any]:
    """(space, estimator) built once per process (the table is loaded once)."""
    key = (space, estimator, json.dumps(dict(est_opts), sort_keys=True))
    if key not in _WORKER:
        from nasforge import estimators, spaces

        _WORKER[key] = (spaces.get(space), estimators.get(estimator, **est_opts))
    return _WORKER[key]


def _worker_init() -> None:
    """Keep each worker single-threaded: the machine's cores are the workers."""
    import torch

    torch.set_num_threads(1)


@dataclass
class _Tracker(Callback):
    """The NB201 protocol's bookkeeping for one seed of one strategy.

    As a callback of the search loop it ends the run once ``queries`` table lookups
    were made (a cached repeat is no query).
    """

    queries: int
    top: frozenset[str]
    best_val: float = -math.inf
    best_test: float = math.nan
    hit: int | None = None
    n: int = 0
    traj: list[float] = field(default_factory=list)
    vals: list[float] = field(default_factory=list)
    lookup_s: float = 0.0
    cache: dict[str, Any] = field(default_factory=dict)
    #: space.equivalence_key of every queried arch, and the queries that repeated one
    networks: set[str] = field(default_factory=set)
    same_network: int = 0

    def evaluate(self, est: Any, space: Any, arch: Any) -> tuple[Any, bool]:
        """The result for ``arch`` and whether it counted as a query (not cached)."""
        if arch.text in self.cache:
            return self.cache[arch.text], False
        t0 = time.perf_counter()
        res = est.evaluate(arch, space)
        key = space.equivalence_key(arch)  # the harness's bookkeeping, not the strategy's time
        self.lookup_s += time.perf_counter() - t0
        self.cache[arch.text] = res
        self.n += 1
        self.same_network += key in self.networks
        self.networks.add(key)
        val = res.metrics.get("val_accuracy", -math.inf) if res.ok else -math.inf
        if val > self.best_val:  # ties keep the earlier architecture
            self.best_val = val
            self.best_test = float(res.report.get("test_accuracy", math.nan))
        if self.hit is None and arch.text in self.top:
            self.hit = self.n
        self.traj.append(self.best_test)
        self.vals.append(self.best_val)
        return res, True

    def on_trial_end(self, trial_id: int, suggestion: Any, result: Any) -> bool | None:
        return self.n < self.queries


class _TrackedTable(Estimator):
    """The table as the loop's estimator, every lookup going through the tracker's
    cache and bookkeeping (the fidelity is ignored: a table has one result per arch)."""

    name = "tracked-table"
    needs_data = False

    def __init__(self, tracker: _Tracker, table: Any) -> None:
        self.tracker, self.table = tracker, table

    def evaluate(self, arch: Any, space: Any, data: Any = None,
                 fidelity: Mapping[str, Any] | None = None) -> Result:
        return self.tracker.evaluate(self.table, space, arch)[0]

    def _evaluate(self, arch: Any, space: Any, data: Any, fidelity: dict[str, Any]) -> Result:
        raise NotImplementedError  # evaluate() is the whole estimator



def run_one(
    spec: StrategySpec,
    seed: int,
    queries: int,
    space: str = "nb201",
    estimator: str = "nb201-table",
    est_opts: Mapping[str, Any] | None = None,
    top_k: int = 10,
) -> dict[str, Any]:
    """One seed of one strategy: the incumbent's test accuracy after every query, and more.

    The strategy runs in the package's search loop (:class:`~nasforge.run.loop.Run`, in
    memory, in process), so the benchmark measures the strategy as ``search`` drives it;
    the tracker stops it after ``queries`` lookups, the trials budget after
    ``MAX_ASKS_PER_QUERY * queries`` asks.
    """
    sp, est = _setup(space, estimator, est_opts or {})
    top = frozenset(est.top_k(top_k))  # empty unless the estimator knows the optimum
    tr = _Tracker(queries, top)
    t_start = time.perf_counter()
    if spec.name == "optuna-direct":
        asks = _run_optuna_direct(sp, est, tr, seed, spec.options)
        strategy_s = time.perf_counter() - t_start - tr.lookup_s
    else:
        from nasforge import strategies
        from nasforge.run.loop import run_in_memory

        st = strategies.get(spec.name, space=sp, seed=seed, **spec.options)
        run = run_in_memory(st, sp, _TrackedTable(tr, est), trials=MAX_ASKS_PER_QUERY * queries,
                            callbacks=[tr])
        asks = run.n_done
        strategy_s = run.strategy_s  # ask + tell only: not the loop's own bookkeeping
    pad = queries - len(tr.traj)  # a stalled strategy stays put
    traj = tr.traj + [tr.best_test] * pad
    vals = [v if math.isfinite(v) else math.nan for v in tr.vals + [tr.best_val] * pad]
    return {
        "label": spec.label,
        "seed": seed,
        "traj": traj,
        "val_traj": vals,
        "hit": tr.hit,
        "queries": tr.n,
        "asks": asks,
        "same_network": tr.same_network,
        "strategy_s": max(0.0, strategy_s),
    }


def _run_optuna_direct(
    sp: Any, est: Any, tr: _Tracker, seed: int, options: Mapping[str, Any]
) -> int:
    """Optuna's TPESampler on the table through a plain objective: the anchor a user picks."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    choices = sp.choices()
    study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed, **dict(options))
    )

    def objective(trial: optuna.Trial) -> float:
        vals = [trial.suggest_categorical(c.name, list(c.options)) for c in choices]
        res, _ = tr.evaluate(est, sp, sp.make(vals))
        if tr.n >= tr.queries:
            trial.study.stop()
        if not res.ok:
            return float("nan")  # Optuna records the trial as failed
        return float(res.metrics["val_accuracy"])

    study.optimize(objective, n_trials=MAX_ASKS_PER_QUERY * tr.queries)
    return len(study.trials)


# ----------------------------------------------------------------------------- summary
@dataclass
class StrategyResult:
    """Aggregates over seeds for one strategy (accuracies as fractions)."""

    label: str
    seeds: int
    mean: list[float]
    ci: list[float]
    median_hit: float
    frac_found: float
    ms_per_query: float
    dup_asks: float
    #: queries per run of an arch computing the same network as an earlier query
    same_network: float = 0.0
    sd: list[float] = field(default_factory=list)
    #: validation accuracy of the incumbent (what strategies optimize), mean and CI
    val_mean: list[float] = field(default_factory=list)
    val_ci: list[float] = field(default_factory=list)
    #: share of runs whose incumbent has the table's best validation accuracy
    at_best: list[float] = field(default_factory=list)

    def at(self, q: int) -> tuple[float, float]:
        return self.mean[q - 1], self.ci[q - 1]


@dataclass
class BenchResult:
    """Everything one benchmark run measured, and where it wrote its files."""

    space: str
    estimator: str
    dataset: str
    queries: int
    checkpoints: list[int]
    ceiling: float | None
    top_k: int
    rows: list[StrategyResult]
    files: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0

    def row(self, label: str) -> StrategyResult:
        for r in self.rows:
            if r.label == label:
                return r
        raise KeyError(label)


def _mean_ci(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column mean, standard deviation and 95% t half-width over the rows (seeds)."""
    from scipy import stats

    n = x.shape[0]
    with warnings.catch_warnings():  # all-NaN columns (nothing succeeded yet) stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(x, axis=0)
        if n < 2:
            return mean, np.zeros_like(mean), np.zeros_like(mean)
        sd = np.nanstd(x, axis=0, ddof=1)
    return mean, sd, stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)


def summarize(
    label: str, runs: Sequence[Mapping[str, Any]], queries: int, best_val: float | None = None
) -> StrategyResult:
    """Mean and 95% t-interval of the test (and validation) accuracy per query; top-k hits."""
    traj = np.array([r["traj"] for r in runs], dtype=np.float64)
    n = traj.shape[0]
    mean, sd, ci = _mean_ci(traj)
    vals = np.array([r.get("val_traj", [math.nan] * queries) for r in runs], dtype=np.float64)
    vmean, _, vci = _mean_ci(vals)
    at_best = (
        np.mean(np.nan_to_num(vals, nan=-math.inf) >= best_val - 1e-12, axis=0)
        if best_val is not None
        else np.zeros(queries)
    )
    hits = [r["hit"] if r["hit"] is not None else queries + 1 for r in runs]
    n_q = sum(r["queries"] for r in runs) or 1
    return StrategyResult(
        label=label,
        seeds=n,
        mean=[float(x) for x in mean],
        ci=[float(x) for x in np.nan_to_num(ci)],
        median_hit=float(np.median(hits)),
        frac_found=float(np.mean([r["hit"] is not None for r in runs])),
        ms_per_query=1000.0 * sum(r["strategy_s"] for r in runs) / n_q,
        dup_asks=float(np.mean([r["asks"] - r["queries"] for r in runs])),
        same_network=float(np.mean([r.get("same_network", math.nan) for r in runs])),
        sd=[float(x) for x in np.nan_to_num(sd)],
        val_mean=[float(x) for x in vmean],
        val_ci=[float(x) for x in np.nan_to_num(vci)],
        at_best=[float(x) for x in at_best],
    )


# ----------------------------------------------------------------------------- run
def run_bench(
    space: str = "nb201",
    estimator: str = "nb201-table",
    dataset: str = "cifar10",
    strategies: str | Iterable[str | StrategySpec] = DEFAULT_STRATEGIES,
    seeds: int = 100,
    queries: int = 300,
    checkpoints: Sequence[int] = (50, 100, 150, 300),
    workers: int = 2,
    table: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] = "benchmarks/results",
    seeds_for: Mapping[str, int] | None = None,
    top_k: int = 10,
    progress: bool = True,
    first_seed: int = 0,
    resume: bool = False,
) -> BenchResult:
    """Run every strategy (plus the anchors) for ``seeds`` seeds and write the report.

    ``seeds_for`` lowers the number of seeds of slow strategies (by label); the table
    says how many seeds each row used. Seeds are ``first_seed, first_seed + 1, ...``
    (tune on other seeds than the ones you report). Finished runs are journaled in
    ``out_dir``; ``resume=True`` reuses those of an interrupted call with the same settings.
    """
    if seeds < 1 or queries < 1 or workers < 1:
        raise NasforgeError("seeds, queries and workers must be at least 1")
    specs = parse_strategies(strategies)
    labels = [s.label for s in specs]
    for anchor in ANCHORS:
        if anchor not in labels:
            specs.append(StrategySpec(anchor, anchor))
    from nasforge import strategies as S

    for s in specs:
        if s.name != "optuna-direct":
            S.registry.factory(s.name)  # unknown names fail now, with the valid list
    est_opts: dict[str, Any] = {"dataset": dataset}
    if table is not None:
        est_opts["table"] = str(table)
    sp, est = _setup(space, estimator, est_opts)  # bad table/dataset: fail before forking
    checkpoints = sorted({int(c) for c in checkpoints if 0 < int(c) <= queries} | {queries})
    unknown = sorted(set(seeds_for or {}) - {s.label for s in specs})
    if unknown:
        raise NasforgeError(f"seeds_for names {unknown}, not among the strategies {labels}")
    n_seeds = {s.label: int((seeds_for or {}).get(s.label, seeds)) for s in specs}
    tasks = [(s, first_seed + i) for i in range(max(n_seeds.values())) for s in specs
             if i < n_seeds[s.label]]  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {s.label: [] for s in specs}
    # finished runs go to a journal, so a run killed half-way continues with resume=True
    journal = Path(out_dir) / f".{space}_{dataset}.runs.jsonl"
    keys = {
        s.label: json.dumps([2, s.name, s.options, space, estimator, est_opts, queries, top_k],
                            sort_keys=True, default=str)
        for s in specs
    }  # fmt: skip
    done: set[tuple[str, int]] = set()
    if resume and journal.is_file():
        for line in journal.read_text().splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a line cut short by the kill
            key = (r.get("label"), r.get("seed"))
            if r.get("key") == keys.get(r.get("label")) and key not in done:
                done.add(key)
                runs[r["label"]].append(r)
    todo = [(s, seed) for s, seed in tasks if (s.label, seed) not in done]
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    log = journal.open("a" if resume else "w")

    def record(r: dict[str, Any]) -> None:
        runs[r["label"]].append(r)
        log.write(json.dumps({**r, "key": keys[r["label"]]}) + "\n")
        log.flush()

    t0 = time.perf_counter()
    try:
        if workers == 1:
            for s, seed in todo:
                record(run_one(s, seed, queries, space, estimator, est_opts, top_k))
        else:
            import multiprocessing as mp

            os.environ.setdefault("OMP_NUM_THREADS", "1")
            # the platform's default start method: fork on Linux shares the loaded table and
            # needs no `if __name__ == "__main__"` guard in the caller's script
            with ProcessPoolExecutor(
                workers, mp_context=mp.get_context(), initializer=_worker_init
            ) as ex:
                futs = [
                    ex.submit(run_one, s, seed, queries, space, estimator, est_opts, top_k)
                    for s, seed in todo
                ]
                for i, fut in enumerate(as_completed(futs), 1):
                    record(fut.result())
                    if progress and (i % max(1, len(futs) // 20) == 0 or i == len(futs)):
                        print(f"bench {dataset}: {i}/{len(futs)} runs (+{len(done)} resumed)",
                              file=sys.stderr, flush=True)  # fmt: skip
    finally:
        log.close()
    best_val = None
    if (best := est.best_arch()) is not None:
        best_res = est.evaluate(sp.parse(best), sp)
        best_val = best_res.metrics.get("val_accuracy") if best_res.ok else None
    rows = []
    for s in specs:
        rs = sorted(runs[s.label], key=lambda r: r["seed"])
        rows.append(summarize(s.label, rs, queries, best_val))
    ceiling = est.ceiling()
    res = BenchResult(space, estimator, dataset, queries, checkpoints, ceiling, top_k, rows)
    res.wall_s = time.perf_counter() - t0
    write_report(res, Path(out_dir), space_size=sp.size)
    journal.unlink(missing_ok=True)  # complete: the report holds it all
    return res


# ----------------------------------------------------------------------------- CLI
def bench_command(
    space: Annotated[str, typer.Option(help="Search space.")] = "nb201",
    estimator: Annotated[str, typer.Option(help="Table estimator (reports test_accuracy).")] = (
        "nb201-table"
    ),
    dataset: Annotated[str, typer.Option(help="Dataset columns of the table.")] = "cifar10",
    strategies: Annotated[
        str,
        typer.Option(help="Comma-separated strategies, options as name[key=value,...]."),
    ] = ",".join(DEFAULT_STRATEGIES),
    seeds: Annotated[int, typer.Option(help="Seeds per strategy.")] = 100,
    queries: Annotated[int, typer.Option(help="Table lookups per run.")] = 300,
    checkpoints: Annotated[str, typer.Option(help="Query counts to report.")] = "50,100,150,300",
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 2,
    table: Annotated[
        str | None, typer.Option(help="CSV table (else $NASFORGE_NB201_TABLE).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("benchmarks/results"),
    seeds_for: Annotated[
        list[str] | None, typer.Option(help="Fewer seeds for a slow strategy: LABEL=N.")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Reuse the finished runs of an interrupted call (same settings).")
    ] = False,
) -> None:
    """Benchmark search strategies on a table (NAS-Bench-201 protocol); writes md + png."""
    try:
        cps = [int(c) for c in checkpoints.split(",") if c.strip()]
    except ValueError:
        raise NasforgeError(
            f"--checkpoints: expected integers like 50,100, got {checkpoints!r}"
        ) from None
    per: dict[str, int] = {}
    for pair in seeds_for or []:
        label, sep, n = pair.rpartition("=")
        if not sep or not n.strip().isdigit():
            raise NasforgeError(f"--seeds-for expects LABEL=N, got {pair!r}")
        per[label.strip()] = int(n)
    res = run_bench(space=space, estimator=estimator, dataset=dataset, strategies=strategies,
                    seeds=seeds, queries=queries, checkpoints=cps, workers=workers, table=table,
                    out_dir=out, seeds_for=per, resume=resume)  # fmt: skip
    typer.echo(Path(res.files["markdown"]).read_text())
    typer.echo(f"wrote {res.files['markdown']}, {res.files['png']}")


def register_cli(app: typer.Typer) -> None:
    """Add ``nasforge bench`` to ``app`` (the CLI module calls this)."""
    app.command("bench")(bench_command)
