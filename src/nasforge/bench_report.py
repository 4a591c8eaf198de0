"""The benchmark's report: the markdown table, the curves' PNG and JSON, the comparisons.

Moved out of :mod:`nasforge.bench` (which re-exports every name) so that the harness --
running strategies on a table -- and the writing up of what it measured stay apart.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from nasforge.bench import BenchResult

#: the anchors every benchmark run includes (re-exported by :mod:`nasforge.bench`)
ANCHORS = ("random", "optuna-direct")


# ----------------------------------------------------------------------------- comparisons
def compare(res: BenchResult, anchor: str = "optuna-direct") -> list[str]:
    """Markdown lines: the best non-anchor strategy per checkpoint vs ``anchor`` (Welch t)."""
    from scipy import stats

    own = [r for r in res.rows if r.label not in ANCHORS]
    if not own or anchor not in {r.label for r in res.rows}:
        return []
    a = res.row(anchor)
    out = [f"Best strategy (anchors aside) at each checkpoint vs `{anchor}` "
           "(difference of means, Welch t-test):", ""]  # fmt: skip
    for c in res.checkpoints:
        i = c - 1
        best = max(own, key=lambda r: r.mean[i])
        p = float("nan")
        if best.seeds > 1 and a.seeds > 1 and (best.sd[i] > 0 or a.sd[i] > 0):
            t = stats.ttest_ind_from_stats(
                best.mean[i], best.sd[i], best.seeds, a.mean[i], a.sd[i], a.seeds, equal_var=False
            )
            p = float(t.pvalue)
        out.append(
            f"- @{c}: `{best.label}` {_pct(best.mean[i])} vs {_pct(a.mean[i])} "
            f"({100 * (best.mean[i] - a.mean[i]):+.2f} points, p = {p:.3g})"
        )
    if "random" in {r.label for r in res.rows}:
        rnd = res.row("random")
        best = min(own, key=lambda r: r.median_hit)
        q = res.queries
        rmed = f">{q}" if rnd.median_hit > q else f"{rnd.median_hit:g}"
        bmed = f">{q}" if best.median_hit > q else f"{best.median_hit:g}"
        out.append(
            f"- top-{res.top_k}: `{best.label}` needs a median of {bmed} queries "
            f"({100 * best.frac_found:.0f}% of runs found one); `random` {rmed} "
            f"({100 * rnd.frac_found:.0f}%)"
        )
    return out + [""]


def compare_all(res: BenchResult, anchor: str = "optuna-direct") -> list[str]:
    """Markdown table: every strategy minus ``anchor`` at every checkpoint, with Welch p.

    The per-checkpoint "best strategy" above may switch strategies between checkpoints;
    this table shows one strategy's margins everywhere, so no row is picked after the fact.
    """
    from scipy import stats

    if anchor not in {r.label for r in res.rows}:
        return []
    a = res.row(anchor)
    out = [f"Every strategy minus `{anchor}` (test accuracy points; Welch p in brackets):", "",
           "| strategy | " + " | ".join(f"@{c}" for c in res.checkpoints) + " |",
           "|---|" + "|".join(["--:"] * len(res.checkpoints)) + "|"]  # fmt: skip
    for r in res.rows:
        if r.label == anchor:
            continue
        cells = [f"`{r.label}`"]
        for c in res.checkpoints:
            i = c - 1
            p = float("nan")
            if r.seeds > 1 and a.seeds > 1 and (r.sd[i] > 0 or a.sd[i] > 0):
                p = float(stats.ttest_ind_from_stats(
                    r.mean[i], r.sd[i], r.seeds, a.mean[i], a.sd[i], a.seeds, equal_var=False
                ).pvalue)  # fmt: skip
            cells.append(f"{100 * (r.mean[i] - a.mean[i]):+.2f} ({p:.2g})")
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]


def random_median_hit(size: int, k: int) -> int:
    """Median queries for uniform sampling without replacement to hit one of ``k`` targets."""
    p_miss, q = 1.0, 0
    while p_miss > 0.5 and q < size:
        p_miss *= (size - k - q) / (size - q)
        q += 1
    return q


# ----------------------------------------------------------------------------- report
def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def write_report(res: BenchResult, out_dir: Path, space_size: int | None = None) -> None:
    """Markdown table, PNG of the curves with CI bands, JSON of the curves."""
    most = max(r.seeds for r in res.rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{res.space}_{res.dataset}"
    md, png, js = out_dir / f"{stem}.md", out_dir / f"{stem}.png", out_dir / f"{stem}.json"
    q = res.queries
    head = ["strategy", "seeds"] + [f"test acc @{c}" for c in res.checkpoints]
    head += [f"top-{res.top_k}: median queries", f"top-{res.top_k} found by {q}",
             "strategy ms/query", "dup asks/run", "same-network queries/run"]  # fmt: skip
    lines = [
        f"# {res.space} / {res.dataset}: search strategies on the table",
        "",
        "Test accuracy (%) of the architecture with the best validation accuracy found so far "
        "(NAS-Bench-201 protocol: strategies see validation accuracy only), "
        "mean ± 95% CI (t-interval over seeds), after the given number of queries "
        "(a query = one table lookup; re-asked architectures are answered from cache and "
        "not counted).",
        "",
    ]
    if res.ceiling is not None:
        lines.append(
            f"Ceiling (test accuracy of the best-validation architecture): **{_pct(res.ceiling)}**."
        )
    lines += [
        f"Top-{res.top_k}: the {res.top_k} best architectures by validation accuracy; "
        f"median queries until one is found, counting a run that never finds one as {q + 1} "
        f"(so a median of {q + 1} means most runs missed); 'found' = fraction of seeds that did.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|",
    ]
    for r in res.rows:
        cells = [f"`{r.label}`", str(r.seeds)]
        for c in res.checkpoints:
            m, ci = r.at(c)
            cells.append(f"{_pct(m)} ± {_pct(ci)}")
        med = f">{q}" if r.median_hit > q else f"{r.median_hit:g}"
        cells += [med, f"{100 * r.frac_found:.0f}%", f"{r.ms_per_query:.2f}", f"{r.dup_asks:.1f}",
                  f"{r.same_network:.1f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if any(r.val_mean for r in res.rows):
        lines += [
            "Validation accuracy (%) of the incumbent, which is what the strategies maximize "
            "(mean ± 95% CI), and in brackets the share of runs already holding an architecture "
            "with the table's best validation accuracy. Where several architectures tie on "
            "validation accuracy, the first one found stays the incumbent, so the test accuracy "
            "above also depends on which of them a strategy meets first.",
            "",
            "| strategy | " + " | ".join(f"val acc @{c}" for c in res.checkpoints) + " |",
            "|---|" + "|".join(["--:"] * len(res.checkpoints)) + "|",
        ]
        for r in res.rows:
            cells = [f"`{r.label}`"]
            for c in res.checkpoints:
                i = c - 1
                share = f" ({100 * r.at_best[i]:.0f}%)" if r.at_best else ""
                cells.append(f"{_pct(r.val_mean[i])} ± {_pct(r.val_ci[i])}{share}")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += compare(res)
    lines += compare_all(res)
    if space_size:
        lines.append(
            f"For reference, uniform random sampling without replacement needs a median of "
            f"{random_median_hit(space_size, res.top_k)} queries to hit one of {res.top_k} "
            f"targets among {space_size} architectures."
        )
    lines += [
        "`optuna-direct`: Optuna's default `TPESampler(seed=s)` driven directly with "
        "`trial.suggest_categorical` per choice (no nasforge adapter). "
        "Strategy ms/query: wall-clock time inside the strategy (ask + tell, "
        "or Optuna's own loop) per counted query, table lookups excluded. "
        "Dup asks/run: asks answered from the cache (the same string again, not counted). "
        "Same-network queries/run: counted queries of an architecture that computes the same "
        "network as an earlier query (`space.equivalence_key`: an edge that carries nothing, "
        "or nodes 1 and 2 swapped); strategies with `skip_equivalent` avoid them.",
        "",
        f"{res.queries} queries, wall time {res.wall_s:.0f} s. Regenerate with "
        f"`nasforge bench --space {res.space} --estimator {res.estimator} "
        f"--dataset {res.dataset} --seeds {most} --queries {q} "
        f"--strategies '{','.join(r.label for r in res.rows)}'"
        + "".join(f" --seeds-for '{r.label}={r.seeds}'" for r in res.rows if r.seeds < most)
        + "`.",
        "",
    ]
    md.write_text("\n".join(lines))
    js.write_text(json.dumps(_rounded(asdict(res)), indent=1))
    _plot(res, png)
    res.files = {"markdown": str(md), "png": str(png), "json": str(js)}


def _rounded(x: Any) -> Any:
    """Floats to 6 significant digits: the JSON stays small enough to commit."""
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def _plot(res: BenchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    x = np.arange(1, res.queries + 1)
    lows = []
    for r in res.rows:
        m, ci = 100 * np.asarray(r.mean), 100 * np.asarray(r.ci)
        (line,) = ax.plot(x, m, label=f"{r.label} ({r.seeds} seeds)", lw=1.4)
        ax.fill_between(x, m - ci, m + ci, color=line.get_color(), alpha=0.15, lw=0)
        finite = m[min(len(m) - 1, max(9, res.queries // 10)) :]
        if np.isfinite(finite).any():
            lows.append(np.nanmin(finite))
    if res.ceiling is not None:
        ax.axhline(100 * res.ceiling, color="k", ls="--", lw=1, label="ceiling")
    if lows:
        top = 100 * res.ceiling if res.ceiling is not None else max(ax.get_ylim())
        ax.set_ylim(min(lows) - 0.3, top + 0.3)
    ax.set_xlabel("queries (table lookups)")
    ax.set_ylabel("test accuracy of best-validation arch (%)")
    ax.set_title(f"{res.space} / {res.dataset}: mean and 95% CI over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
