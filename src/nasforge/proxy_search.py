"""Proxy-assisted search on the NAS-Bench-201 table: queries to a top architecture.

Moved out of :mod:`nasforge.proxy_eval` (which still answers for these names): the
validation of the proxies lives there, their use in a search here.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nasforge.estimators.base import Estimator, Result
from nasforge.estimators.proxies import check_proxies
from nasforge.proxy_eval import RESULTS_DIR, _f, proxy_batch, score_archs
from nasforge.run.loop import Callback

if TYPE_CHECKING:
    from nasforge.data import Dataset


# -- proxy-assisted search (section 4) --------------------------------------------------------
def score_space(
    proxies: Sequence[str],
    path: str | os.PathLike[str],
    table: str | os.PathLike[str] | None = None,
    space_config: Mapping[str, Any] | None = None,
    data: str | Dataset = "fashion-mnist",
    batch_size: int = 64,
    seed: int = 0,
    workers: int = 1,
    num_classes: int = 10,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Proxies of every arch of the table, cached in the CSV ``path`` (computed once).

    Columns: ``arch``, one per proxy, ``cpu_s:<proxy>`` (CPU seconds of each proxy alone)
    and ``build_cpu_s``. An existing file with the same archs and columns is read back
    instead of recomputed.
    """
    from nasforge.estimators.nb201_table import load_table

    proxies = check_proxies(proxies)
    tab = load_table(table)
    p = Path(path)
    if p.is_file():
        cached = pd.read_csv(p)
        if set(proxies) <= set(cached.columns) and set(cached["arch"]) >= set(tab.archs):
            return cached
    batch = proxy_batch(data, batch_size, seed, (3, 32, 32))
    cfg = {"C": 16, "N": 5, **dict(space_config or {})}
    raw = score_archs(
        tab.archs, proxies, batch, [num_classes], "nb201", cfg, seed, workers, progress
    )
    out = pd.DataFrame({"arch": raw["arch"]})
    for q in proxies:
        out[q] = raw[f"{q}@{num_classes}"]
    for q in proxies:
        out[f"cpu_s:{q}"] = raw[f"cpu_s:{q}@{num_classes}"]
    out["build_cpu_s"] = raw[f"build_cpu_s@{num_classes}"]
    p.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(p, index=False)
    return out


def queries_to_target(
    strategy: Any, lookup: Mapping[str, float], target: set[str], max_queries: int
) -> int | None:
    """Table queries until ``strategy`` first asks an arch in ``target`` (None: not in budget).

    Every ask is a query (no cache), run in the package's search loop in memory.
    """
    from nasforge.run.loop import run_in_memory

    hit = _TargetHit(target)
    run_in_memory(strategy, strategy.space, _PercentTable(lookup), trials=max_queries,
                  callbacks=[hit])
    return hit.hit


class _PercentTable(Estimator):
    """Validation accuracy from a table in percent, told as a fraction."""

    name = "percent-table"
    needs_data = False

    def __init__(self, lookup: Mapping[str, float]) -> None:
        self.lookup = lookup

    def evaluate(self, arch: Any, space: Any, data: Any = None,
                 fidelity: Mapping[str, Any] | None = None) -> Result:
        return Result(metrics={"val_accuracy": self.lookup[arch.text] / 100.0})

    def _evaluate(self, arch: Any, space: Any, data: Any, fidelity: dict[str, Any]) -> Result:
        raise NotImplementedError  # evaluate() is the whole estimator


class _TargetHit(Callback):
    """Ends the run at the first queried arch in ``target``; ``hit`` is its query number."""

    def __init__(self, target: set[str]) -> None:
        self.target, self.n = target, 0
        self.hit: int | None = None

    def on_trial_end(self, trial_id: int, suggestion: Any, result: Any) -> bool | None:
        self.n += 1
        if suggestion.arch.text in self.target:
            self.hit = self.n
            return False
        return None


def proxy_assisted_search(
    proxies: Mapping[str, tuple[Mapping[str, float], float]],
    table: str | os.PathLike[str] | None = None,
    datasets: Sequence[str] = ("cifar10", "cifar100"),
    bases: Sequence[str] = ("evolution", "random"),
    seeds: int = 100,
    pool_sizes: Sequence[int] = (200, 1000),
    top: int = 10,
    max_queries: int = 5000,
    base_options: Mapping[str, Mapping[str, Any]] | None = None,
    out: str | os.PathLike[str] | None = RESULTS_DIR,
    notes: Sequence[str] = (),
) -> pd.DataFrame:
    """Queries to reach a top-``top`` arch, per strategy, with and without a proxy warm start.

    ``proxies``: label -> (score of every arch, larger is better; CPU seconds per arch).
    For every base strategy and seed: the plain strategy, and ``proxy-warmstart`` over
    it for each proxy and pool size M (top-k = evolution's population, or the whole
    pool for random search, which then evaluates the pool in proxy order). A warm start
    costs ``M * cpu_s`` of proxy compute besides the queries. Writes
    ``proxy_assisted_nb201.md`` to ``out``.
    """
    from nasforge import spaces, strategies
    from nasforge.estimators.nb201_table import load_table

    tab = load_table(table)
    space = spaces.get("nb201")
    opts = {b: dict((base_options or {}).get(b, {})) for b in bases}

    def scorer_of(scores: Mapping[str, float]) -> Callable[[Sequence[Any]], list[float]]:
        return lambda archs: [float(scores[a.text]) for a in archs]

    rows = []
    t0 = time.perf_counter()
    for d in datasets:
        tab.check_dataset(d)
        lookup = dict(zip(tab.archs, tab.valid[d], strict=True))
        target = tab.top_k(d, top)
        for base in bases:
            variants: list[tuple[str, int | None]] = [("-", None)]
            variants += [(label, m) for label in proxies for m in pool_sizes]
            for label, m in variants:
                found: list[float] = []
                k = 0
                for seed in range(seeds):
                    if m is None:
                        st = strategies.get(base, space=space, seed=seed, **opts[base])
                    else:
                        st = strategies.get(
                            "proxy-warmstart", space=space, seed=seed, base=base,
                            base_options=opts[base], pool_size=m,
                            top_k=m if base == "random" else None,
                            scorer=scorer_of(proxies[label][0]),
                        )  # fmt: skip
                        k = st.top_k
                    q = queries_to_target(st, lookup, target, max_queries)
                    found.append(math.inf if q is None else float(q))
                arr = np.array(found)
                ok = np.isfinite(arr)
                capped = np.where(ok, arr, max_queries + 1.0)  # percentiles without inf - inf

                def pct(q: float, capped: np.ndarray = capped) -> float:
                    v = float(np.percentile(capped, q))
                    return v if v <= max_queries else math.inf

                rows.append({
                    "dataset": d, "base": base, "proxy": label, "pool": m or 0, "top_k": k,
                    "seeds": seeds, "median": pct(50),
                    "mean": float(arr[ok].mean()) if ok.any() else math.nan,
                    "p25": pct(25), "p75": pct(75),
                    "found": float(ok.mean()),
                    "proxy_cpu_s": (m or 0) * (proxies[label][1] if m else 0.0),
                })  # fmt: skip
    res = pd.DataFrame(rows)
    res.attrs["meta"] = {
        "proxies": {k: v[1] for k, v in proxies.items()}, "top": top, "seeds": seeds,
        "max_queries": max_queries, "table": str(tab.path), "elapsed_s": time.perf_counter() - t0,
        "base_options": opts, "notes": list(notes),
        "targets": {d: len(tab.top_k(d, top)) for d in datasets},
    }  # fmt: skip
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "proxy_assisted_nb201.md").write_text(assisted_markdown(res))
    return res


def assisted_markdown(res: pd.DataFrame) -> str:
    """The report of :func:`proxy_assisted_search`."""
    m = res.attrs.get("meta", {})
    costs = "; ".join(f"{k}: {v:.4f} CPU s/arch" for k, v in m.get("proxies", {}).items())
    lines = [
        "# Proxy-assisted search on NAS-Bench-201",
        "",
        "Table queries (validation-accuracy lookups) a strategy needs until it first asks one "
        f"of the top-{m.get('top')} architectures by that column's validation accuracy "
        f"(ties included: {m.get('targets')} archs), over {m.get('seeds')} seeds "
        f"(0..{int(m.get('seeds', 1)) - 1}); runs that did not get there within "
        f"{m.get('max_queries')} queries count as infinite in the median/percentiles and are "
        "left out of the mean (see 'found').",
        "",
        f"- Proxies (one core): {costs}. A pool of M archs costs M times that, *besides* "
        "the queries (column 'proxy CPU s').",
        "- With a proxy, `proxy-warmstart` samples a pool of M random archs, ranks them by "
        "the proxy and hands the best to the base strategy first: for evolution its whole "
        "initial population (top-k = population size), for random search the whole pool in "
        "proxy order (top-k = M); then the base strategy runs unchanged.",
        f"- Base options: {m.get('base_options')}.",
        *[f"- {n}" for n in m.get("notes", [])],
        f"- Simulation time: {m.get('elapsed_s', math.nan):.0f} s wall.",
        "",
    ]  # fmt: skip
    for d in sorted(set(res["dataset"])):
        part = res[res["dataset"] == d]
        lines += [
            f"## {d}_valid",
            "",
            "| strategy | proxy | pool M | top-k | median queries | mean (found) | p25-p75 "
            "| found | proxy CPU s |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for _, r in part.iterrows():
            lines.append(
                f"| {r['base']} | {r['proxy']} | {int(r['pool']) or '-'} | "
                f"{int(r['top_k']) or '-'} | {_q(r['median'])} | {_f(r['mean'], 0)} | "
                f"{_q(r['p25'])}-{_q(r['p75'])} | {r['found']:.0%} | {r['proxy_cpu_s']:.0f} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def _q(v: float) -> str:
    return ">max" if not math.isfinite(v) else f"{v:.0f}"
