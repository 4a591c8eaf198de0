"""Does Once-for-All's supernet rank sub-networks, and do the sandwich rule and in-place
distillation help? Measured against the noise ceiling (issue #17, part 2).

1. The truth and its ceiling: ``--nets`` uniformly sampled sub-networks of the ``mobile``
   space (width 0.5), each trained stand-alone from scratch twice (seeds A and B,
   ``--epochs`` epochs, SGD cosine, the same training subset); the ceiling is Kendall's tau
   between the two runs, the truth their mean (as in ``ranking_ceiling.py``). Each epoch
   count is kept: ``--resume --epochs 6`` adds a longer truth and ranks against both.
2. Supernets, each trained once by progressive shrinking with the same phase epochs:
   ``ps-1`` (OFA as in ``ofa.py``: one random sub-network per step), ``ps-3`` (three
   random ones per step: the compute of a sandwich step), ``sandwich`` (largest + smallest
   + one random) and ``sandwich-kd`` (the same, the smaller two learning from the largest's
   soft labels: in-place distillation). Every sub-network of part 1 is scored with
   inherited weights after BN recalibration; tau against each truth, absolute and as a
   fraction of its ceiling; the smallest and largest sub-networks' inherited accuracies.

A journal (``--work``/journal.json) keeps every finished part: ``--resume`` skips them.
Writes ``ofa_ranking.md``/``.json``/``.png`` to ``--out`` (default benchmarks/results).

    taskset -c 0 python benchmarks/ofa_ranking.py          # ~30 min on one core
    python benchmarks/ofa_ranking.py --quick --out /tmp/q  # smoke test, ~1 min
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from ranking_ceiling import kendall, sample_archs  # noqa: E402

RESULTS = HERE / "results"
KEEP_MARK = "<!-- generated above; hand-written below, kept on regenerating -->"
VARIANTS: dict[str, dict[str, Any]] = {
    "ps-1": {"subnets_per_step": 1},
    "ps-3": {"subnets_per_step": 3},
    "sandwich": {"subnets_per_step": 1, "sandwich": True},
    "sandwich-kd": {"subnets_per_step": 1, "sandwich": True, "inplace_kd": True},
}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _save(path: Path, journal: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(journal, indent=1, default=str))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-train", type=int, default=4000, help="train+val pool (stratified)")
    ap.add_argument("--val-fraction", type=float, default=0.25)
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--phase-epochs", default="3,1,1,2", help="largest,kernel,depth,expand")
    ap.add_argument("--nets", type=int, default=20, help="sub-networks ranked")
    ap.add_argument("--epochs", type=int, default=2, help="stand-alone epochs per seed")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--work", default="runs/bench-ofa-ranking", help="journal folder")
    ap.add_argument("--out", default=None, help="report folder (default benchmarks/results)")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--quick", action="store_true", help="toy scale smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.max_train, args.phase_epochs, args.nets, args.epochs = 600, "1,1,1,1", 5, 1
        if args.out is None:
            ap.error("--quick needs --out (it never writes the real report)")
    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else RESULTS
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    jpath = work / "journal.json"
    journal: dict[str, Any] = json.loads(jpath.read_text()) if args.resume and jpath.exists() \
        else {"settings": {k: v for k, v in vars(args).items() if k not in ("resume",)}}
    journal.setdefault("load", []).append(os.getloadavg()[0])

    from nasforge.data import load_dataset
    from nasforge.estimators.training import train_model
    from nasforge.oneshot.ofa import (
        OFASupernet,
        SubnetEvaluator,
        _parse_phase_epochs,
        train_progressive,
    )
    from nasforge.spaces.mobile import MobileSpace

    data = load_dataset("fashion-mnist", data_dir=args.data_dir, seed=args.seed,
                        max_train=args.max_train, val_fraction=args.val_fraction)  # fmt: skip
    _log(f"data: {len(data.y_train)} train / {len(data.y_val)} val")
    space = MobileSpace(width_mult=args.width_mult)
    sample = sample_archs(space, args.nets, args.seed)
    journal["archs"] = [a.text for a in sample]

    # 1. stand-alone, twice (kept per epoch count: a later run adds a longer truth)
    sa = journal.setdefault("standalone", {}).setdefault(str(args.epochs), {})
    for tag, base in (("a", 1000), ("b", 2000)):
        rows = sa.setdefault(tag, [])
        for i, a in enumerate(sample[len(rows):], start=len(rows)):
            torch.manual_seed(base + i)
            model = space.build(a, data.input_shape, data.num_classes)
            h = train_model(model, data, epochs=args.epochs, batch_size=args.batch_size,
                            seed=base + i)  # fmt: skip
            rows.append({"val": h["val_accuracy"], "train_s": h["train_time_s"]})
            _save(jpath, journal)
            _log(f"stand-alone {args.epochs} ep {tag} {i + 1}/{len(sample)}: "
                 f"{h['val_accuracy']:.4f} ({h['train_time_s']:.0f} s)")  # fmt: skip

    # 2. supernets: inherited scores (the taus are computed against every truth at the end)
    sups = journal.setdefault("supernets", {})
    pe = _parse_phase_epochs(args.phase_epochs)
    for name in [v for v in args.variants.split(",") if v]:
        if name in sups:
            continue
        if name not in VARIANTS:
            ap.error(f"unknown variant {name!r}; variants are {', '.join(VARIANTS)}")
        torch.manual_seed(args.seed)
        sn = OFASupernet(space, data.input_shape, data.num_classes)
        hist = train_progressive(sn, data, pe, batch_size=args.batch_size, seed=args.seed,
                                 **VARIANTS[name])  # fmt: skip
        ev = SubnetEvaluator(sn, data, calib_batches=8, batch_size=args.batch_size,
                             seed=args.seed)  # fmt: skip
        t0 = time.perf_counter()
        scores = [ev.score(a)[0] for a in sample]
        score_s = time.perf_counter() - t0
        ends = {k: ev.score(getattr(space, k)())[0] for k in ("smallest", "largest")}
        sups[name] = {"options": VARIANTS[name], "train_s": hist["train_time_s"],
                      "phase_s": {p: h["time_s"] for p, h in hist["phases"].items()},
                      "score_s": score_s, "scores": scores, "ends": ends}  # fmt: skip
        _save(jpath, journal)
        _log(f"{name}: trained {hist['train_time_s']:.0f} s, smallest {ends['smallest']:.3f} "
             f"largest {ends['largest']:.3f}")
    journal["ranking"] = ranking(journal)
    for ep, r in journal["ranking"].items():
        _log(f"{ep}-epoch truth: ceiling {r['ceiling']:.3f}; " + ", ".join(
            f"{n} {m['tau']:.3f}" for n, m in r["methods"].items()))
    journal["load"].append(os.getloadavg()[0])
    journal["machine"] = {"python": platform.python_version(), "torch": torch.__version__}
    _save(jpath, journal)

    from _common import cpu_name, write_report

    journal["machine"]["cpu"] = cpu_name()
    tail = kept_tail(out / "ofa_ranking.md")
    write_report(out, "ofa_ranking", _markdown(journal, data, tail), journal, {}, _plot)
    return 0


def ranking(j: dict[str, Any]) -> dict[str, Any]:
    """Per stand-alone epoch count: the ceiling tau(A, B) and each supernet's tau against
    mean(A, B) (absolute, as a fraction of the ceiling) and against A and B alone."""
    out: dict[str, Any] = {}
    for ep, sa in sorted(j.get("standalone", {}).items(), key=lambda kv: int(kv[0])):
        va, vb = [r["val"] for r in sa.get("a", [])], [r["val"] for r in sa.get("b", [])]
        if not va or len(va) != len(vb):
            continue
        truth = [(x + y) / 2 for x, y in zip(va, vb, strict=True)]
        ceiling = kendall(va, vb)
        methods = {}
        for name, r in j.get("supernets", {}).items():
            sc = r["scores"][: len(truth)]
            tau = kendall(sc, truth)
            methods[name] = {"tau": tau, "tau_a": kendall(sc, va), "tau_b": kendall(sc, vb),
                             "fraction": tau / ceiling if ceiling > 0.05 else None}  # fmt: skip
        out[ep] = {"ceiling": ceiling, "train_s": sum(r["train_s"] for r in sa["a"] + sa["b"]),
                   "methods": methods}  # fmt: skip
    return out


STEPS = {"ps-1": "1 random", "ps-3": "3 random", "sandwich": "largest + smallest + 1",
         "sandwich-kd": "largest + smallest + 1, in-place KD"}  # fmt: skip


def _markdown(j: dict[str, Any], data: Any, tail: list[str] = ()) -> str:
    s = j["settings"]
    rk = j.get("ranking") or ranking(j)
    truths = ", ".join(f"{ep} epoch(s) ({r['train_s']:.0f} s for both seeds)"
                       for ep, r in rk.items())  # fmt: skip
    lines = [
        "# Once-for-All: does the supernet rank, with and without the sandwich rule?",
        "",
        f"Generated by `benchmarks/ofa_ranking.py` on {time.strftime('%Y-%m-%d %H:%M')}, "
        f"torch {j['machine']['torch']}, {j['machine']['cpu']}, {s['threads']} torch "
        f"thread(s), load average {j['load'][0]:.2f} at the start and {j['load'][-1]:.2f} "
        "at the end.",
        "",
        "## Settings",
        "",
        f"- Data: Fashion-MNIST, stratified pool of {s['max_train']} training images, "
        f"{len(data.y_train)} train / {len(data.y_val)} validation.",
        f"- Space: `mobile`, width_mult {s['width_mult']}; {len(j['archs'])} uniformly "
        "sampled sub-networks.",
        f"- Truth: each sub-network trained stand-alone twice (seeds A and B) for {truths}; "
        "the ceiling is tau(A, B), the truth mean(A, B).",
        f"- Supernets: progressive shrinking, phase epochs {s['phase_epochs']} "
        "(largest,kernel,depth,expand), batch "
        f"{s['batch_size']}; scored with inherited weights after BN recalibration "
        "(8 batches), the same seed and data for every variant.",
        "",
        "## Supernets",
        "",
        "| supernet | per shrinking step | train s | smallest (inherited val) | largest |",
        "|---|---|--:|--:|--:|",
    ]
    for name, r in j["supernets"].items():
        lines.append(f"| `{name}` | {STEPS.get(name, '')} | {r['train_s']:.0f} | "
                     f"{r['ends']['smallest']:.3f} | {r['ends']['largest']:.3f} |")
    for ep, r in rk.items():
        lines += [
            "",
            f"## Ranking against the {ep}-epoch stand-alone truth",
            "",
            f"Noise ceiling: Kendall tau between seeds A and B = **{r['ceiling']:.3f}**"
            + (" (no agreement: the fraction of it is not reported)"
               if r["ceiling"] <= 0.05 else "") + ".",
            "",
            "| supernet | tau vs mean(A, B) | of the ceiling | tau vs A / B |",
            "|---|--:|--:|--:|",
        ]  # fmt: skip
        for name, m in r["methods"].items():
            frac = f"{m['fraction']:.2f}" if m["fraction"] is not None else "n/a"
            lines.append(f"| `{name}` | **{m['tau']:.3f}** | {frac} | "
                         f"{m['tau_a']:.3f} / {m['tau_b']:.3f} |")  # fmt: skip
    lines += ["", "![inherited vs stand-alone](ofa_ranking.png)", "", KEEP_MARK]
    return "\n".join(lines + list(tail)) + "\n"


def kept_tail(path: Path) -> list[str]:
    """The hand-written lines after :data:`KEEP_MARK` of an earlier report (kept when the
    report is regenerated, e.g. after ``--resume`` with one more variant)."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return lines[lines.index(KEEP_MARK) + 1 :] if KEEP_MARK in lines else []


def _plot(j: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rk = j.get("ranking") or ranking(j)
    if not rk:
        return
    ep = max(rk, key=int)  # the longest (least noisy) truth
    sa = j["standalone"][ep]
    va, vb = [r["val"] for r in sa["a"]], [r["val"] for r in sa["b"]]
    truth = [(x + y) / 2 for x, y in zip(va, vb, strict=True)]
    names = list(j["supernets"])
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(3.2 * (len(names) + 1), 3.2))
    axes = np.atleast_1d(axes)
    axes[0].scatter(va, vb, s=12)
    axes[0].set(title=f"{ep} ep: seed A vs B (tau {rk[ep]['ceiling']:.2f})", xlabel="A",
                ylabel="B")  # fmt: skip
    for ax, name in zip(axes[1:], names, strict=True):
        ax.scatter(j["supernets"][name]["scores"], truth, s=12)
        ax.set(title=f"{name} (tau {rk[ep]['methods'][name]['tau']:.2f})",
               xlabel="inherited val", ylabel="stand-alone mean")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
