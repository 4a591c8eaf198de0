"""How good are the zero-cost proxies, and what do they buy a search?

:func:`validate_proxies` samples architectures of the NAS-Bench-201 table, scores
them with the proxies of :mod:`nasforge.estimators.proxies` on the benchmark's own
network (C=16, N=5, 3x32x32 input, 10 or 100 classes) and reports the Spearman and
Kendall rank correlation with the table's *validation* accuracy, plus the CPU time per
architecture per proxy. We have no CIFAR here: data-dependent proxies see a batch of
another data set (Fashion-MNIST resized to 32x32, gray replicated to 3 channels, by
default) or noise, and the report says which.

:func:`~nasforge.proxy_search.proxy_assisted_search` (in :mod:`nasforge.proxy_search`,
still importable from here) measures section 4 of the design: how many table
queries a strategy needs to reach a top-10 architecture, with and without a proxy
pre-screen of a random candidate pool (the ``proxy-warmstart`` strategy), counting the
proxy's own compute separately.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import pandas as pd
import typer

from nasforge.errors import NasforgeError
from nasforge.estimators.proxies import (
    DEFAULT_VOTE,
    PROXY_NAMES,
    build_network,
    check_proxies,
    compute_proxies,
    compute_proxy,
    rank_vote,
    transform,
)

if TYPE_CHECKING:
    from nasforge.data import Dataset

#: classifier outputs of the datasets of the NAS-Bench-201 table
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet16-120": 120, "ImageNet16-120": 120}
#: proxies that never see the classifier, so their value is the same for 10 or 100 classes
#: (torch initializes the classifier last, so every other weight is identical)
CLASSIFIER_FREE = frozenset({"naswot"})
DATA_SOURCES = ("fashion-mnist", "digits", "noise")
RESULTS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


# -- the minibatch ----------------------------------------------------------------------------
@dataclass
class ProxyBatch:
    """The one minibatch every data-dependent proxy sees, and an exact account of it."""

    x: np.ndarray
    y: np.ndarray
    description: str


def proxy_batch(
    data: str | Dataset = "fashion-mnist",
    batch_size: int = 64,
    seed: int = 0,
    input_shape: Sequence[int] = (3, 32, 32),
    data_dir: str | None = None,
) -> ProxyBatch:
    """A seeded minibatch of ``input_shape`` for proxies of networks built for CIFAR.

    Images come from the training split (resized, gray replicated to 3 channels,
    normalized with the split's statistics); ``"noise"`` is standard-normal inputs with
    uniformly random labels in 0..9.
    """
    c, h, w = (int(s) for s in input_shape)
    rng = np.random.default_rng(seed)
    if isinstance(data, str) and data == "noise":
        x = rng.standard_normal((batch_size, c, h, w)).astype(np.float32)
        y = rng.integers(0, 10, batch_size)
        return ProxyBatch(x, y, f"{batch_size} standard-normal noise inputs {c}x{h}x{w} "
                          f"with uniform random labels 0..9 (seed {seed})")  # fmt: skip
    if isinstance(data, str):
        if data not in DATA_SOURCES:
            raise NasforgeError(
                f"unknown proxy data {data!r}: use one of {', '.join(DATA_SOURCES)}"
            )
        from nasforge.data import load_dataset

        ds = load_dataset(data, data_dir=data_dir, seed=seed, max_train=max(2000, batch_size))
    else:
        ds = data
    n = len(ds.x_train)
    if n < batch_size:
        raise NasforgeError(f"{ds.name}: {n} training images, fewer than batch size {batch_size}")
    idx = rng.choice(n, size=batch_size, replace=False)
    x = np.asarray(ds.x_train[idx], dtype=np.float32)
    y = np.asarray(ds.y_train[idx], dtype=np.int64)
    src = f"{x.shape[2]}x{x.shape[3]}x{x.shape[1]}"
    if tuple(x.shape[2:]) != (h, w):
        import torch
        import torch.nn.functional as F

        x = F.interpolate(torch.from_numpy(x), size=(h, w), mode="bilinear", antialias=True,
                          align_corners=False).numpy()  # fmt: skip
    if x.shape[1] != c:
        if x.shape[1] != 1:
            raise NasforgeError(f"{ds.name}: cannot map {x.shape[1]} channels to {c}")
        x = np.repeat(x, c, axis=1)
    desc = (
        f"{batch_size} {ds.name} training images (seeded choice, seed {seed}), "
        f"normalized with the training split's mean/std, {src} (HxWxC) bilinear-resized to "
        f"{h}x{w}, gray replicated to {c} channels; labels {sorted(set(y.tolist()))[0]}.."
        f"{sorted(set(y.tolist()))[-1]} (its own {ds.num_classes} classes)"
    )
    return ProxyBatch(np.ascontiguousarray(x), y, desc)


# -- scoring many architectures -----------------------------------------------------------------
def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    _warm_up()


def _warm_up() -> None:
    """Run every proxy once on a tiny network: first calls pay one-off set-up costs
    (FlopCounterMode, LAPACK, autograd), which must not be charged to the first arch."""
    import torch

    from nasforge import spaces

    space = spaces.get("nb201", C=2, N=1)
    arch = space.make(["nor_conv_3x3"] * 6)
    net = build_network(arch, space, (3, 8, 8), 10, 0)
    x, y = torch.randn(4, 3, 8, 8), torch.arange(4)
    for p in PROXY_NAMES:
        compute_proxy(p, net, x, y, (3, 8, 8))


def _score_one(task: tuple[Any, ...]) -> dict[str, Any]:
    """All proxies of one arch (in a worker): values, and CPU/wall seconds per proxy if timed.

    Timed: every proxy alone, on one core (``time.thread_time`` of the one torch thread,
    which unlike wall time does not depend on what else the shared machine runs).
    Untimed: the loss-based proxies share one backward (same values, less compute).
    """
    import torch

    text, space_name, space_cfg, proxies, class_counts, x_np, y_np, seed, timed = task
    from nasforge import spaces

    space = spaces.get(space_name, **space_cfg)
    arch = space.parse(text)
    shape = tuple(x_np.shape[1:])
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
    row: dict[str, Any] = {"arch": text}
    start = time.thread_time()
    for i, classes in enumerate(class_counts):
        c0 = time.thread_time()
        net = build_network(arch, space, shape, classes, seed)
        row[f"build_cpu_s@{classes}"] = time.thread_time() - c0
        todo = [p for p in proxies if not (i > 0 and p in CLASSIFIER_FREE)]
        for p in proxies:
            if p not in todo:
                row[f"{p}@{classes}"] = row[f"{p}@{class_counts[0]}"]
        if not timed:
            for p, v in compute_proxies(todo, net, x, y, shape).items():
                row[f"{p}@{classes}"] = v
            continue
        for p in todo:
            c0, w0 = time.thread_time(), time.perf_counter()
            row[f"{p}@{classes}"] = compute_proxy(p, net, x, y, shape)
            row[f"cpu_s:{p}@{classes}"] = time.thread_time() - c0
            row[f"wall_s:{p}@{classes}"] = time.perf_counter() - w0
    row["total_cpu_s"] = time.thread_time() - start
    return row


def score_archs(
    archs: Sequence[str],
    proxies: Sequence[str],
    batch: ProxyBatch,
    class_counts: Sequence[int] = (10,),
    space: str = "nb201",
    space_config: Mapping[str, Any] | None = None,
    seed: int = 0,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
    timed: int | None = None,
) -> pd.DataFrame:
    """One row per arch: ``proxy@classes`` values and ``cpu_s:proxy@classes`` timings.

    The first ``timed`` archs (None: all) time every proxy alone; the others share
    the loss-based backward. ``workers`` processes (spawned, one torch thread each);
    the values do not depend on it: every network is built right after
    ``torch.manual_seed(seed)``.
    """
    proxies = check_proxies(proxies)
    cfg = dict(space_config or {})
    n_timed = len(archs) if timed is None else timed
    tasks = [
        (a, space, cfg, list(proxies), list(class_counts), batch.x, batch.y, seed, i < n_timed)
        for i, a in enumerate(archs)
    ]
    rows: list[dict[str, Any]] = []
    if workers <= 1:
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(1)
        _warm_up()
        try:
            for i, t in enumerate(tasks):
                rows.append(_score_one(t))
                if progress:
                    progress(i + 1, len(tasks))
        finally:
            torch.set_num_threads(old)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker) as pool:
            for i, r in enumerate(pool.map(_score_one, tasks, chunksize=4)):
                rows.append(r)
                if progress:
                    progress(i + 1, len(tasks))
    return pd.DataFrame(rows)


# -- correlations ---------------------------------------------------------------------------------
def _finite_for_ranking(v: pd.Series) -> np.ndarray:
    """-inf (a degenerate network) becomes just below the smallest finite score: lowest rank."""
    a = v.to_numpy(dtype=float).copy()
    fin = np.isfinite(a)
    low = (a[fin].min() - 1.0) if fin.any() else 0.0
    a[np.isneginf(a)] = low
    a[np.isposinf(a)] = (a[fin].max() + 1.0) if fin.any() else 0.0
    return a


def rank_correlations(score: pd.Series, acc: pd.Series) -> tuple[float, float]:
    """(Spearman, Kendall tau-b) of a score with accuracy, NaN scores left out."""
    from scipy.stats import kendalltau, spearmanr

    s = _finite_for_ranking(score)
    a = acc.to_numpy(dtype=float)
    ok = ~np.isnan(s)
    if ok.sum() < 3 or np.all(s[ok] == s[ok][0]):
        return math.nan, math.nan
    return float(spearmanr(s[ok], a[ok])[0]), float(kendalltau(s[ok], a[ok])[0])


def zscore_vote(scores: pd.DataFrame, proxies: Sequence[str]) -> pd.Series:
    """``zc-vote`` over a pool, calibrated on the pool itself: mean clipped z-score."""
    z = []
    for p in proxies:
        t = scores[p].map(lambda v, p=p: transform(p, float(v))).astype(float)
        fin = t[np.isfinite(t)]
        mean, std = float(fin.mean()), float(fin.std(ddof=0)) or 1.0
        z.append(((t - mean) / std).clip(-10, 10).fillna(-10.0))
    return pd.concat(z, axis=1).mean(axis=1)


def vote_name(members: Sequence[str], method: str = "rank") -> str:
    return f"{method}-vote({'+'.join(members)})"


def best_votes(
    scores: pd.DataFrame, acc: Mapping[str, pd.Series], proxies: Sequence[str], top: int = 5
) -> pd.DataFrame:
    """Every rank-vote subset of ``proxies`` (2+ members), by its worst Spearman over columns.

    For choosing the members of ``zc-vote`` on a *development* sample; evaluate the
    choice on a different sample.
    """
    rows = []
    for k in range(2, len(proxies) + 1):
        for members in itertools.combinations(proxies, k):
            v = rank_vote(scores, members)
            sp = {d: rank_correlations(v, a)[0] for d, a in acc.items()}
            rows.append({"vote": vote_name(members), "min_spearman": min(sp.values()), **sp})
    return pd.DataFrame(rows).sort_values("min_spearman", ascending=False).head(top)


# -- the validation report -----------------------------------------------------------------------
def _datasets(dataset: str | Sequence[str]) -> list[str]:
    if isinstance(dataset, str):
        dataset = dataset.split(",")
    out = [d.strip() for d in dataset if d.strip()]
    if not out:
        raise NasforgeError("no dataset column given (e.g. cifar10)")
    return out


def validate_proxies(
    space: str = "nb201",
    table: str | os.PathLike[str] | None = None,
    dataset: str | Sequence[str] = "cifar10",
    samples: int = 1000,
    proxies: Sequence[str] | str = PROXY_NAMES,
    seed: int = 0,
    workers: int = 2,
    data: str | Dataset = "fashion-mnist",
    batch_size: int = 64,
    votes: Sequence[Sequence[str]] | None = None,
    space_config: Mapping[str, Any] | None = None,
    out: str | os.PathLike[str] | None = RESULTS_DIR,
    data_dir: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    timing_samples: int | None = 100,
    per_class_networks: bool = True,
    notes: Sequence[str] = (),
) -> pd.DataFrame:
    """Rank correlation of proxies with the table's validation accuracy; writes markdown.

    Samples ``samples`` distinct table archs (seeded), scores them once per distinct class
    count (10 for cifar10, 100 for cifar100; ``naswot`` is computed once since it never
    sees the classifier; ``per_class_networks=False``: the first column's networks serve
    all columns) and returns one row per (dataset, proxy or vote) with
    ``spearman``, ``kendall``, ``n``, ``degenerate`` and per-arch ``cpu_s``/``wall_s``
    (mean) and ``cpu_s_max``, timed on the first ``timing_samples`` archs (None: all;
    each proxy alone there, the others share the loss-based backward). Votes (default:
    ``zc-vote``'s members) are reported as a rank vote and as the z-score vote. ``out``:
    directory for ``proxies_<space>.md`` and the raw ``proxies_<space>_scores.csv``
    (None: write nothing).
    The per-arch scores are in ``result.attrs["scores"]``.
    """
    from nasforge.estimators.nb201_table import load_table

    if space != "nb201":
        raise NasforgeError(
            f"proxy validation needs a benchmark table; only 'nb201' has one, not {space!r}"
        )
    if isinstance(proxies, str):
        proxies = proxies.split(",")
    proxies = check_proxies(proxies)
    if samples < 3:
        raise NasforgeError("samples must be at least 3 to compute a rank correlation")
    if workers < 1:
        raise NasforgeError("workers must be at least 1")
    tab = load_table(table)
    datasets = [tab.check_dataset(d) for d in _datasets(dataset)]
    for d in datasets:
        if d not in NUM_CLASSES:
            raise NasforgeError(f"number of classes of {d!r} unknown; known: {sorted(NUM_CLASSES)}")
    class_counts = list(dict.fromkeys(NUM_CLASSES[d] for d in datasets))
    if not per_class_networks:
        class_counts = class_counts[:1]
    k_of = {d: NUM_CLASSES[d] if per_class_networks else class_counts[0] for d in datasets}
    cfg = {"C": 16, "N": 5, **dict(space_config or {})}
    rng = np.random.default_rng(seed)
    rows_idx = rng.choice(len(tab), size=min(samples, len(tab)), replace=False)
    archs = [tab.archs[int(r)] for r in rows_idx]
    batch = proxy_batch(data, batch_size, seed, (3, 32, 32), data_dir)

    t0 = time.perf_counter()
    raw = score_archs(
        archs, proxies, batch, class_counts, space, cfg, seed, workers, progress, timing_samples
    )
    elapsed = time.perf_counter() - t0
    for k in class_counts:  # untimed runs still get (empty) timing columns
        for p in proxies:
            for kind in ("cpu_s", "wall_s"):
                if f"{kind}:{p}@{k}" not in raw.columns:
                    raw[f"{kind}:{p}@{k}"] = math.nan

    votes = [list(v) for v in (votes if votes is not None else [DEFAULT_VOTE])]
    votes = [check_proxies(v) for v in votes if set(v) <= set(proxies)]
    summary = []
    for d in datasets:
        k = k_of[d]
        acc = pd.Series(tab.valid[d][rows_idx], index=raw.index)
        sc = pd.DataFrame({p: raw[f"{p}@{k}"].astype(float) for p in proxies})
        for p in proxies:
            rho, tau = rank_correlations(sc[p], acc)
            kt = k if raw[f"cpu_s:{p}@{k}"].notna().any() else class_counts[0]  # naswot: once
            cpu, wall = raw[f"cpu_s:{p}@{kt}"], raw[f"wall_s:{p}@{kt}"]
            summary.append({
                "dataset": d, "proxy": p, "spearman": rho, "kendall": tau, "n": len(sc),
                "degenerate": int((~np.isfinite(sc[p].to_numpy(dtype=float))).sum()),
                "cpu_s": float(cpu.mean()), "cpu_s_max": float(cpu.max()),
                "wall_s": float(wall.mean()),
            })  # fmt: skip
        for members in votes:
            cpu = sum(raw[f"cpu_s:{p}@{class_counts[0]}"] for p in members)
            wall = sum(raw[f"wall_s:{p}@{class_counts[0]}"] for p in members)
            for method, fn in (("rank", rank_vote), ("zscore", zscore_vote)):
                rho, tau = rank_correlations(fn(sc, members), acc)
                summary.append({
                    "dataset": d, "proxy": vote_name(members, method), "spearman": rho,
                    "kendall": tau, "n": len(sc), "degenerate": 0, "cpu_s": float(cpu.mean()),
                    "cpu_s_max": float(cpu.max()), "wall_s": float(wall.mean()),
                })  # fmt: skip
    result = pd.DataFrame(summary)
    build = raw[[c for c in raw.columns if c.startswith("build_cpu_s@")]].to_numpy().mean()
    meta = {
        "space": space, "space_config": cfg, "table": str(tab.path), "datasets": datasets,
        "samples": len(archs), "seed": seed, "workers": workers, "batch_size": batch_size,
        "data": batch.description, "elapsed_s": elapsed, "build_cpu_s": float(build),
        "class_counts": class_counts, "proxies": proxies, "per_class": per_class_networks,
        "notes": list(notes),
        "timed": int(raw[f"cpu_s:{proxies[0]}@{class_counts[0]}"].notna().sum()),
    }  # fmt: skip
    result.attrs["scores"] = raw
    result.attrs["meta"] = meta
    if out is not None:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        keep = ["arch"] + [f"{p}@{k}" for k in class_counts for p in proxies]
        raw[keep].to_csv(out_dir / f"proxies_{space}_scores.csv", index=False)
        result.to_csv(out_dir / f"proxies_{space}_summary.csv", index=False)
        (out_dir / f"proxies_{space}.md").write_text(validation_markdown(result))
    return result


def _f(v: float, nd: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def validation_markdown(result: pd.DataFrame) -> str:
    """The report of :func:`validate_proxies` (its ``attrs["meta"]`` included)."""
    m = result.attrs.get("meta", {})
    lines = [
        f"# Zero-cost proxies on NAS-Bench-201 ({m.get('space', 'nb201')})",
        "",
        f"- {m.get('samples')} architectures sampled without replacement from `{m.get('table')}` "
        f"(seed {m.get('seed')}); networks: the benchmark's own ({m.get('space_config')}), "
        f"3x32x32 input, {' / '.join(str(k) for k in m.get('class_counts', []))} classes, "
        f"initialized with `torch.manual_seed({m.get('seed')})`, train mode.",
        f"- Rank correlation with the table's **validation** accuracy "
        f"({', '.join(f'`{d}_valid`' for d in m.get('datasets', []))}). The table comes from "
        "NAS-Bench-201's short training schedule, which lowers every correlation.",
        f"- Data-dependent proxies (naswot, snip, grad_norm, fisher, jacob_cov) saw one "
        f"minibatch: {m.get('data')}. No CIFAR images were used. synflow, params and flops "
        "use no data (synflow: one all-ones input in float64, batch-norm disabled).",
        ("- 100-class networks differ only in the classifier; every classifier-dependent "
         "proxy was recomputed on them, naswot (which never sees the classifier) was not."
         if m.get("per_class", True) and len(m.get("class_counts", [])) > 1 else
         f"- Every column was scored on the same {m.get('class_counts', ['?'])[0]}-class "
         "networks (classifier size differs only)." if len(m.get("datasets", [])) > 1 else
         "- One class count."),
        "- Time: CPU seconds of one thread (`time.thread_time`, 1 torch thread) per architecture "
        f"and proxy, each proxy computed alone, on the first {m.get('timed')} architectures "
        "(the rest let snip, grad_norm and fisher share one backward: same values, less "
        "compute); network construction excluded (building one took "
        f"{_f(m.get('build_cpu_s', math.nan))} CPU s on average). Wall seconds depend on the "
        f"machine's load (1-min load average {_f(os.getloadavg()[0], 1)} when the report was "
        "written). Limit: 0.5 s per network per proxy at batch 64 on one core. "
        f"Whole run: {_f(m.get('elapsed_s', math.nan) / 60, 1)} min wall with {m.get('workers')} "
        "worker process(es).",
        *[f"- {n}" for n in m.get("notes", [])],
        "",
    ]  # fmt: skip
    for d in m.get("datasets", sorted(set(result["dataset"]))):
        part = result[result["dataset"] == d]
        base = part.loc[part["proxy"] == "params", "spearman"]
        base_rho = float(base.iloc[0]) if len(base) else math.nan
        lines += [
            f"## {d}_valid",
            "",
            "| proxy | Spearman | Kendall | vs #params | CPU s/arch (mean) | CPU s (max) "
            "| wall s (mean) | degenerate |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]  # fmt: skip
        for _, r in part.iterrows():
            delta = r["spearman"] - base_rho
            lines.append(
                f"| {r['proxy']} | {_f(r['spearman'])} | {_f(r['kendall'])} | "
                f"{'+' if delta >= 0 else ''}{_f(delta)} | {_f(r['cpu_s'])} | "
                f"{_f(r['cpu_s_max'])} | "
                f"{_f(r['wall_s'])} | {int(r['degenerate'])} |"
            )
        lines.append("")
    lines += budget_lines(result)
    lines += _goal_lines(result)
    return "\n".join(lines) + "\n"


def budget_lines(result: pd.DataFrame, budget: float = 0.5) -> list[str]:
    """Which single proxies meet ``budget`` CPU seconds per network, and by how much not."""
    first = result[result["dataset"] == result["dataset"].iloc[0]]
    single = first[first["proxy"].isin(PROXY_NAMES)]
    ok = [f"{r.proxy} ({r.cpu_s:.3f} s, max {r.cpu_s_max:.3f})" for r in single.itertuples()
          if r.cpu_s <= budget]  # fmt: skip
    over = [
        f"{r.proxy} ({r.cpu_s:.3f} s mean, {r.cpu_s / budget - 1:+.0%}; max {r.cpu_s_max:.3f} s)"
        for r in single.itertuples()
        if r.cpu_s > budget
    ]
    return [
        f"## Time budget: {budget} CPU s per network per proxy",
        "",
        "Within (mean): " + (", ".join(ok) or "none") + ".",
        "",
        "Over (mean): " + (", ".join(over) or "none") + ".",
        "",
    ]


def _goal_lines(result: pd.DataFrame) -> list[str]:
    """Which proxies/votes beat #params by >= 0.05 Spearman on every dataset column."""
    datasets = sorted(set(result["dataset"]))
    if "params" not in set(result["proxy"]):
        return []
    margins: dict[str, float] = {}
    for name in sorted(set(result["proxy"]) - {"params"}):
        ms = []
        for d in datasets:
            part = result[result["dataset"] == d].set_index("proxy")["spearman"]
            ms.append(float(part.get(name, math.nan)) - float(part["params"]))
        margins[name] = min(ms)
    winners = sorted((n for n, v in margins.items() if v >= 0.05), key=lambda n: -margins[n])
    best = max(margins, key=lambda n: margins[n] if not math.isnan(margins[n]) else -9)
    lines = ["## Goal: beat #params by at least 0.05 Spearman on every column", ""]
    if winners:
        lines.append(
            "Met by: "
            + ", ".join(f"{n} (worst-column margin +{margins[n]:.3f})" for n in winners)
            + "."
        )
    else:
        lines.append(f"Not met. Best worst-column margin: {best} ({margins[best]:+.3f}).")
    return lines + [""]


# -- CLI ------------------------------------------------------------------------------------
def register_cli(app: typer.Typer) -> None:
    """Add ``nasforge proxies`` (the validation report) to the CLI app."""

    @app.command("proxies")
    def proxies_cmd(
        space: Annotated[str, typer.Option(help="Search space with a benchmark table.")] = "nb201",
        table: Annotated[
            str | None, typer.Option(help="NAS-Bench-201 CSV [default: $NASFORGE_NB201_TABLE].")
        ] = None,
        dataset: Annotated[
            str, typer.Option(help="Table dataset column(s), comma-separated: cifar10,cifar100.")
        ] = "cifar10",
        samples: Annotated[int, typer.Option(min=3, help="Architectures to sample.")] = 1000,
        proxies: Annotated[
            str, typer.Option(help=f"Comma-separated proxies [{','.join(PROXY_NAMES)}].")
        ] = ",".join(PROXY_NAMES),
        workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 2,
        seed: Annotated[int, typer.Option(min=0, help="Sampling and init seed.")] = 0,
        data: Annotated[
            str, typer.Option(help=f"Minibatch source: {', '.join(DATA_SOURCES)}.")
        ] = "fashion-mnist",
        batch_size: Annotated[int, typer.Option(min=2, help="Minibatch size.")] = 64,
        data_dir: Annotated[
            str | None, typer.Option("--data-dir", help="Where Fashion-MNIST's IDX files are.")
        ] = None,
        out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = RESULTS_DIR,
    ) -> None:
        """Rank-correlate zero-cost proxies with a benchmark table; write a markdown report."""

        def progress(i: int, n: int) -> None:
            if i == n or i % max(1, n // 20) == 0:
                typer.echo(f"  scored {i}/{n} architectures", err=True)

        res = validate_proxies(
            space=space, table=table, dataset=dataset, samples=samples, proxies=proxies,
            seed=seed, workers=workers, data=data, batch_size=batch_size, out=out,
            data_dir=data_dir, progress=progress,
        )  # fmt: skip
        cols = ["dataset", "proxy", "spearman", "kendall", "cpu_s", "wall_s"]
        typer.echo(res[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        typer.echo(f"wrote {Path(out) / f'proxies_{space}.md'}")


#: moved to :mod:`nasforge.proxy_search`; still importable from here
_MOVED = ("score_space", "queries_to_target", "proxy_assisted_search", "assisted_markdown")


def __getattr__(name: str) -> Any:
    """The proxy-assisted search's names, from the module they moved to (imported lazily,
    as that module imports this one)."""
    if name in _MOVED:
        from nasforge import proxy_search

        return getattr(proxy_search, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
