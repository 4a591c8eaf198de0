"""Per-trial cost of nasforge's own loop, store and strategy bookkeeping (issue 11, section 4).

Runs ``nasforge.search`` on NAS-Bench-201 with the table estimator in-process (a lookup:
nothing is trained) and a SQLite run directory, so what is left of a trial's wall time is
nasforge itself. Each trial's wall time (from one ask to the next) is split into the
strategy's own ``ask``/``tell``, the table lookup, and the rest: the loop, the two store
transactions (``synchronous=FULL``: two fsyncs per trial) and ``state_dict()``. Reported
near trial 100, 1,000 and the end (medians of 10 trials) for each strategy.

Goal: the nasforge part flat (the last trials cost at most 1.5x the 100th) and under 5 ms.

    python benchmarks/overhead.py                                 # 10,000 trials each
    python benchmarks/overhead.py --trials 300 --strategies random    # a smoke run

The table is read from ``--table``, ``$NASFORGE_NB201_TABLE`` or
``../shared/benchmarks/nb201/nb201_cifar.csv``; it is never copied into the repository.
NAS-Bench-201 has 15,625 cells (6,466 distinct networks): strategies that skip seen or
equivalent cells run short of new ones near 10,000 and then repeat; the report counts it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = ROOT.parent / "shared/benchmarks/nb201/nb201_cifar.csv"
STRATEGIES = "random,evolution,local-search,optuna-tpe"
#: TPE refits its densities on every trial at every ask (its own cost grows with the run)
DEFAULT_CAPS = {"optuna-tpe": 3000}


def timed_run(name: str, trials: int, table: str, run_dir: Path, seed: int = 0) -> dict[str, Any]:
    """One search; per-trial timings (seconds) of each part."""
    import gc

    from nasforge import estimators, spaces, strategies
    from nasforge.experiment import search
    from nasforge.store import RunStore as Store

    space = spaces.get("nb201")
    st = strategies.get(name, space=space, seed=seed)
    est = estimators.get("nb201-table", table=table, dataset="cifar10")
    est.table  # load it before the clock starts  # noqa: B018
    t_ask: list[float] = []  # when each ask began
    ask_s: list[float] = []
    tell_s: list[float] = []
    look_s: list[float] = []
    state_s: list[float] = []
    store_s: list[float] = []  # start_trial + finish_trial (the two transactions)
    gc_s: list[float] = []  # cyclic-GC pauses, whoever allocated
    ask, tell, state_dict, evaluate = st.ask, st.tell, st.state_dict, est.evaluate
    start_trial, finish_trial = Store.start_trial, Store.finish_trial
    clock = time.perf_counter
    gc_t0 = [0.0]
    gc_n = [0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_t0[0] = clock()
        elif gc_s:
            gc_s[-1] += clock() - gc_t0[0]
            gc_n[0] += 1

    def timed_start(self: Any, *a: Any, **k: Any) -> int:
        t0 = clock()
        out = start_trial(self, *a, **k)
        store_s.append(clock() - t0)
        return out

    def timed_finish(self: Any, *a: Any, **k: Any) -> None:
        t0 = clock()
        finish_trial(self, *a, **k)
        store_s[-1] += clock() - t0

    def timed_ask() -> Any:
        t0 = clock()
        t_ask.append(t0)
        gc_s.append(0.0)
        s = ask()
        ask_s.append(clock() - t0)
        return s

    def timed_tell(s: Any, r: Any) -> None:
        t0 = clock()
        tell(s, r)
        tell_s.append(clock() - t0)

    def timed_state() -> dict[str, Any]:
        t0 = clock()
        out = state_dict()
        state_s.append(clock() - t0)
        return out

    def timed_eval(*a: Any, **k: Any) -> Any:
        t0 = clock()
        out = evaluate(*a, **k)
        look_s.append(clock() - t0)
        return out

    st.ask, st.tell, st.state_dict = timed_ask, timed_tell, timed_state  # type: ignore[method-assign]
    est.evaluate = timed_eval  # type: ignore[method-assign]
    Store.start_trial, Store.finish_trial = timed_start, timed_finish  # type: ignore[method-assign]
    gc.callbacks.append(on_gc)
    t0 = clock()
    try:
        search("digits", space=space, strategy=st, estimator=est, trials=trials, seed=seed,
               out=run_dir, final_train=False, progress=False)
    finally:
        Store.start_trial, Store.finish_trial = start_trial, finish_trial  # type: ignore
        gc.callbacks.remove(on_gc)
    total = clock() - t0
    with Store.open(run_dir) as s:
        archs = [t.arch for t in s.trials()]
        state, _ = s.strategy_state()
    n = len(t_ask) - 1  # the last trial has no next ask to end it
    wall = [t_ask[i + 1] - t_ask[i] for i in range(n)]
    # two state_dict() calls per trial (after ask, after tell)
    st2 = [state_s[2 * i] + state_s[2 * i + 1] for i in range(n)]
    return {
        "strategy": name, "trials": len(archs), "total_s": total,
        "wall": wall, "ask": ask_s[:n], "tell": tell_s[:n], "lookup": look_s[:n], "state": st2,
        "store": store_s[:n], "gc": gc_s[:n], "gc_count": gc_n[0],
        "overhead": [wall[i] - ask_s[i] - tell_s[i] - look_s[i] for i in range(n)],
        "distinct": len(set(archs)),
        "distinct_networks": len({space.equivalence_key(space.parse(a)) for a in archs}),
        "state_bytes": len(json.dumps(state)),
        "db_bytes": sum(p.stat().st_size for p in run_dir.iterdir() if p.is_file()),
    }


def window(xs: list[float], end: int, k: int = 50) -> float:
    """Median of ``xs`` over trials ``end-k+1 .. end`` (1-based), in milliseconds."""
    end = min(end, len(xs))
    return 1e3 * statistics.median(xs[max(0, end - k):end])


def report(runs: list[dict[str, Any]], caps: dict[str, int], trials: int, table: str,
           where: str = "") -> str:
    marks = [m for m in (100, 1000) if m < trials]
    aff = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = f"{aff} of {os.cpu_count()} CPUs usable (taskset), niceness {os.nice(0)}"
    lines = [
        "# nasforge per-trial overhead (NAS-Bench-201 table, in-process, SQLite run dir)",
        "",
        f"`python benchmarks/overhead.py` ({time.strftime('%Y-%m-%d')}, Python "
        f"{platform.python_version()}, {cpus}; the machine was shared with other "
        "jobs). One run per strategy,"
        f" seed 0, up to {trials:,} trials through `nasforge.search` (final training off), "
        f"run directories on {where or 'disk'}, "
        "the table estimator in-process. Per trial: wall = one ask to the next; strategy = "
        "its own `ask` + `tell`; lookup = the table; **nasforge** = wall - strategy - "
        "lookup: the loop, the two store transactions (WAL, `synchronous=FULL`) and "
        "`state_dict()` twice; store = the two transactions alone; loop = nasforge - "
        "store; GC = cyclic-GC pauses (inside any of these, mostly caused by the "
        "strategy's allocations). Medians of 50 trials (the 50 up to trial N; 'end' = "
        "the last 50), in ms.",
        "",
        "| strategy | trials | " + " | ".join(f"nasforge @{m}" for m in marks)
        + " | nasforge @end | end / @100 | loop @end | store @end | strategy @100 | strategy @end "
          "| state_dict @end | strategy share of wall | saved state | distinct cells / networks |",
        "|---" * (11 + len(marks)) + "|",
    ]
    for r in runs:
        n = len(r["wall"])
        ov = r["overhead"]
        strat = [a + t for a, t in zip(r["ask"], r["tell"], strict=True)]
        share = sum(strat) / sum(r["wall"])
        loop = [o - x for o, x in zip(ov, r["store"], strict=True)]
        at = [window(ov, m) for m in marks]
        end = window(ov, n)
        ratio = end / at[0] if at else float("nan")
        lines.append(
            f"| {r['strategy']} | {r['trials']:,} | " + " | ".join(f"{x:.2f}" for x in at)
            + f" | {end:.2f} | {ratio:.2f} | {window(loop, n):.2f} | {window(r['store'], n):.2f}"
              f" | {window(strat, 100):.2f} | {window(strat, n):.2f}"
              f" | {window(r['state'], n):.3f} | {100 * share:.0f} % | {r['state_bytes']:,} B"
              f" | {r['distinct']:,} / {r['distinct_networks']:,} |"
        )
    lines += ["", "Whole-run means (ms per trial): "]
    for r in runs:
        m = lambda k, r=r: 1e3 * statistics.fmean(r[k])  # noqa: E731
        lines.append(
            f"- {r['strategy']}: wall {m('wall'):.2f}, nasforge {m('overhead'):.2f} (of which "
            f"store {m('store'):.2f}, state_dict {m('state'):.3f}; GC pauses anywhere "
            f"{m('gc'):.2f}), strategy ask {m('ask'):.2f} + tell {m('tell'):.2f}, "
            f"lookup {m('lookup'):.3f}; {r['total_s']:.0f} s in all, run directory "
            f"{r['db_bytes'] / 1e6:.1f} MB."
        )
    capped = {k: v for k, v in caps.items() if v < trials}
    if capped:
        lines += ["", "Capped: " + ", ".join(f"{k} at {v:,} trials" for k, v in capped.items())
                  + " (TPE refits its densities over all trials at every ask, so its own "
                    "time per trial grows with the run; nasforge's part is measured the same "
                    "way)."]
    lines += ["", f"Table: `{Path(table).name}` (outside the repository)."]
    return "\n".join(lines) + "\n"


def plot(runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        for ax, key in zip(axes, ("overhead", "strat"), strict=True):
            xs = np.array(r[key] if key != "strat" else
                          [a + t for a, t in zip(r["ask"], r["tell"], strict=True)]) * 1e3
            k = max(1, len(xs) // 100)
            med = [float(np.median(xs[i:i + k])) for i in range(0, len(xs) - k + 1, k)]
            ax.plot(np.arange(len(med)) * k + k, med, label=r["strategy"])
    axes[0].set_title("nasforge per trial (loop + store + state), ms")
    axes[1].set_title("strategy ask + tell per trial, ms")
    for ax in axes:
        ax.set_xlabel("trial")
        ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", default=STRATEGIES)
    ap.add_argument("--trials", type=int, default=10_000)
    ap.add_argument("--cap", action="append", default=[], metavar="NAME=N",
                    help=f"fewer trials for a slow strategy (default {DEFAULT_CAPS})")
    ap.add_argument("--table", default=os.environ.get("NASFORGE_NB201_TABLE", str(DEFAULT_TABLE)))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/overhead.md"))
    ap.add_argument("--runs", default=None, help="where the run directories go (default: temp)")
    args = ap.parse_args()
    caps = {**DEFAULT_CAPS, **{k: int(v) for k, _, v in (c.rpartition("=") for c in args.cap)}}
    base = Path(args.runs or tempfile.mkdtemp(prefix="nasforge-overhead-"))
    runs = []
    for name in filter(None, (s.strip() for s in args.strategies.split(","))):
        n = min(args.trials, caps.get(name, args.trials))
        print(f"{name}: {n} trials ...", flush=True)
        runs.append(timed_run(name, n, args.table, base / name))
        print(f"  {runs[-1]['total_s']:.0f} s", flush=True)
    where = ("tmpfs: the fsyncs cost nothing, this is nasforge's CPU time"
             if str(base.resolve()).startswith("/dev/shm") else f"disk ({base})")
    text = report(runs, caps, args.trials, args.table, where)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps(
        [{k: v for k, v in r.items() if not isinstance(v, list)} for r in runs], indent=1))
    try:
        plot(runs, out.with_suffix(".png"))
    except ImportError:
        pass
    print(text)


if __name__ == "__main__":
    main()
