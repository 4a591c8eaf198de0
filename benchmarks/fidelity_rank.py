"""Does a short trial rank networks like the long final training does? (Fashion-MNIST)

A time-budgeted job (``nasforge search --time-budget 15m``) picks its winner with
successive halving over *training seconds*: six networks trained for ~26 s, the best two
for ~78 s (``nasforge.budget.plan_job(900)``). This measures whether those fidelities,
and the zero-cost proxies that could prune before any training, order a sample of
architectures the way a long training does.

Sample: the ``cnn`` space's known-good designs (what the search tries first), one random
mutation of each of them (what it tries next) and random draws from the space. Each
network is trained with the job's recipe (``nasforge.budget.RECIPE``, flips) for every
fidelity and for the reference, each run from scratch with its own cosine schedule over
its own time (so a short run is not a prefix of a long one), and scored on the 6k
validation split. Reported: Spearman and Kendall rank correlation of each fidelity and
proxy with the reference, and the *regret* of trusting it: the reference accuracy of the
network it ranks first, below the best reference accuracy.

    python3 benchmarks/fidelity_rank.py --cores 0,1                  # ~40 min on 2 cores
    python3 benchmarks/fidelity_rank.py --quick --cores 0            # smoke run, ~2 min

Runs go one per core (pinned, one torch thread) and are kept in a journal, so an
interrupted study resumes with ``--resume``. Both cores busy at once slow each other
(shared host), equally for every network: absolute accuracies are below what one job
alone reaches, the ranking is what is measured.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

_DATA: Any = None


def _sample(n_random: int, seed: int) -> list[str]:
    """Known-good designs, one mutation of each, then ``n_random`` draws (distinct)."""
    from nasforge.spaces.cnn import CNNSpace

    sp = CNNSpace()
    rng = np.random.default_rng(seed)
    known = sp.known_good()
    out = [sp.format(a) for a in known]
    for a in known:
        out.append(sp.format(sp.mutate(a, rng)))
    while len(out) < 2 * len(known) + n_random:
        out.append(sp.format(sp.sample(rng)))
    return list(dict.fromkeys(out))


def _init(cores: list[int], counter: Any) -> None:
    with counter.get_lock():
        i = counter.value
        counter.value += 1
    core = cores[i % len(cores)]
    try:
        os.sched_setaffinity(0, {core})
    except (AttributeError, OSError):
        pass
    import torch

    torch.set_num_threads(1)


def _run(job: tuple[str, str, float, int]) -> dict[str, Any]:
    """Train one network for ``seconds`` and score it on the validation split."""
    global _DATA
    import torch

    from nasforge.budget import RECIPE
    from nasforge.data import default_augment, load_dataset
    from nasforge.estimators.training import train_model
    from nasforge.spaces.cnn import CNNSpace

    arch_s, label, seconds, seed = job
    if _DATA is None:
        _DATA = load_dataset("fashion-mnist", seed=0)
    sp = CNNSpace()
    torch.manual_seed(seed)
    net = sp.build(sp.parse(arch_s), _DATA.input_shape, _DATA.num_classes)
    t0 = time.monotonic()
    hist = train_model(net, _DATA, epochs=10_000, seconds=seconds, seed=seed,
                       augment=default_augment(_DATA), **RECIPE)
    return {"arch": arch_s, "fidelity": label, "seconds": seconds, "seed": seed,
            "val_accuracy": hist["val_accuracy"], "epochs": hist["epochs"],
            "steps": hist["steps"], "wall_s": time.monotonic() - t0}


def _proxies(archs: list[str]) -> dict[str, dict[str, float]]:
    """Zero-cost proxies and size of every network (a minibatch of 64 training images)."""
    from nasforge.data import load_dataset
    from nasforge.estimators.proxies import build_network, compute_proxies, minibatch
    from nasforge.spaces.cnn import CNNSpace

    data = load_dataset("fashion-mnist", seed=0)
    sp = CNNSpace()
    names = ["jacob_cov", "naswot", "synflow", "snip", "grad_norm", "fisher", "params",
             "flops"]
    x, y, _ = minibatch(data, 64, 0, data.input_shape, data.num_classes)
    out = {}
    for a in archs:
        net = build_network(sp.parse(a), sp, data.input_shape, data.num_classes, seed=0)
        out[a] = compute_proxies(names, net, x, y, data.input_shape)
    return out


def _rank_stats(ref: dict[str, float], score: dict[str, float]) -> dict[str, float]:
    from scipy.stats import kendalltau, spearmanr

    keys = [k for k in ref if k in score and np.isfinite(score[k])]
    r = np.array([ref[k] for k in keys])
    s = np.array([score[k] for k in keys])
    rho = float(spearmanr(r, s).statistic)
    tau = float(kendalltau(r, s).statistic)
    pick = keys[int(np.argmax(s))]
    return {"spearman": rho, "kendall": tau, "n": len(keys),
            "regret": float(r.max() - ref[pick]), "pick": pick}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cores", default="0", help="comma-separated cores, one run on each")
    ap.add_argument("--fidelities", default="26,78",
                    help="trial seconds to compare (the 15-min plan's rungs by default)")
    ap.add_argument("--reference", type=float, default=360.0, help="reference seconds")
    ap.add_argument("--random", type=int, default=2, help="random draws beyond the mutations")
    ap.add_argument("--archs", default=None,
                    help="the sample itself: architectures separated by commas (instead of "
                         "the known-good designs, their mutations and random draws)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 networks, 3/6 s")
    ap.add_argument("--resume", action="store_true", help="reuse the journal's runs")
    ap.add_argument("--journal", default=str(RESULTS / "fidelity_rank_journal.json"))
    ap.add_argument("--report", default=str(RESULTS / "fidelity_rank_fashion_mnist.md"))
    args = ap.parse_args(argv)
    from nasforge.data import fashion_mnist_available

    if not fashion_mnist_available(None):
        print("Fashion-MNIST not found: apt-get install dataset-fashion-mnist", file=sys.stderr)
        return 2
    cores = [int(c) for c in args.cores.split(",") if c.strip()]
    fids = [float(f) for f in args.fidelities.split(",")]
    ref_s = args.reference
    archs = ([a.strip() for a in args.archs.split(",") if a.strip()] if args.archs
             else _sample(args.random, args.seed))
    if args.quick:
        archs, fids, ref_s = archs[:3], [3.0], 6.0
        args.journal = str(Path(args.journal).with_suffix(".quick.json"))
        args.report = str(Path(args.report).with_suffix(".quick.md"))
    labels = {f"{f:g}s": f for f in fids}
    labels["reference"] = ref_s
    journal_p = Path(args.journal)
    done: list[dict[str, Any]] = []
    if args.resume and journal_p.exists():
        done = json.loads(journal_p.read_text())["runs"]
    have = {(d["arch"], d["fidelity"]) for d in done}
    jobs = [(a, lab, s, args.seed) for lab, s in labels.items() for a in archs
            if (a, lab) not in have]
    jobs.sort(key=lambda j: -j[2])  # longest first: the cores finish together
    print(f"{len(archs)} networks, fidelities {list(labels)}; {len(jobs)} runs to do on "
          f"cores {cores} (~{sum(j[2] + 8 for j in jobs) / len(cores) / 60:.0f} min)",
          flush=True)
    proxies = _proxies(archs)

    def save() -> None:
        journal_p.parent.mkdir(parents=True, exist_ok=True)
        journal_p.write_text(json.dumps({"runs": done, "proxies": proxies}, indent=1))

    counter = mp.get_context("spawn").Value("i", 0)
    with mp.get_context("spawn").Pool(len(cores), initializer=_init,
                                      initargs=(cores, counter)) as pool:
        for rec in pool.imap_unordered(_run, jobs):
            done.append(rec)
            save()
            print(f"  {rec['fidelity']:>9} {rec['val_accuracy']:.4f} {rec['epochs']:5.2f} ep "
                  f"{rec['arch']}", flush=True)
    save()
    _report(done, proxies, labels, archs, Path(args.report), cores, given=bool(args.archs))
    print(f"report: {args.report}")
    return 0


def _cell(text: str) -> str:
    """An architecture string inside a markdown table cell (its bars escaped)."""
    return text.replace("|", "\\|")


def _report(done: list[dict[str, Any]], proxies: dict[str, dict[str, float]],
            labels: dict[str, float], archs: list[str], path: Path, cores: list[int],
            given: bool = False) -> None:
    from nasforge.spaces.cnn import CNNSpace

    acc: dict[str, dict[str, float]] = {lab: {} for lab in labels}
    ep: dict[str, dict[str, float]] = {lab: {} for lab in labels}
    for d in done:
        if d["arch"] in archs and d["fidelity"] in acc:
            acc[d["fidelity"]][d["arch"]] = d["val_accuracy"]
            ep[d["fidelity"]][d["arch"]] = d["epochs"]
    ref = acc["reference"]
    n_known = len(CNNSpace().known_good())
    rows = []
    for lab in labels:
        if lab != "reference":
            rows.append((f"trial {lab}", _rank_stats(ref, acc[lab])))
    for name in next(iter(proxies.values())):
        sign = -1.0 if name in ("params", "flops") else 1.0  # smaller as "better"
        score = {a: sign * v for a, v in ((a, proxies[a][name]) for a in archs)}
        rows.append((f"proxy {name}" + (" (smaller first)" if sign < 0 else ""),
                     _rank_stats(ref, score)))
    fid = [lab for lab in labels if lab != "reference"]
    if len(fid) >= 2:  # what the job does: the best third at the first rung, then the next
        first = sorted(acc[fid[0]], key=lambda k: -acc[fid[0]][k])
        keep = first[: max(1, len(first) // 3)]
        second = {a: acc[fid[1]].get(a, -1.0) for a in keep}
        pick = max(second, key=lambda a: second[a])
        rows.insert(len(fid), (f"successive halving {fid[0]} -> {fid[1]} (best third)",
                               {"spearman": float("nan"), "kendall": float("nan"),
                                "regret": float(max(ref.values()) - ref[pick]),
                                "pick": pick}))
    lines = [
        "# Fidelity rank study: Fashion-MNIST, `cnn` space",
        "",
        f"Generated by `benchmarks/fidelity_rank.py` ({time.strftime('%Y-%m-%d')}). "
        + (f"{len(ref)} networks given with `--archs`. " if given else
           f"{len(ref)} networks: the {n_known} known-good designs, a random mutation of "
           "each, and random draws from the space (as far as the count goes). ")
        + "Each trained from scratch with the job's recipe "
        "(AdamW 2e-3, wd 5e-4, label smoothing 0.1, warm-up 3 %, flips, batch 128) for "
        f"each fidelity ({', '.join(fid)}) and for the reference "
        f"({labels['reference']:g} s), a cosine schedule over its own time; validation "
        f"accuracy on the 6k validation split. Runs on cores {cores}, one torch thread "
        + ("each, both cores busy at once (they slow each other, equally for every "
           "network)." if len(cores) > 1 else "each, one run at a time."),
        "",
        "| ranking signal | Spearman vs reference | Kendall | regret (points) | its pick |",
        "|---|--:|--:|--:|---|",
    ]
    for name, st in rows:
        lines.append(f"| {name} | {st['spearman']:.2f} | {st['kendall']:.2f} | "
                     f"{100 * st['regret']:.2f} | `{_cell(st['pick'])}` |")
    lines += ["", "Per network (validation accuracy %, epochs in brackets):", "",
              "| network | " + " | ".join(labels) + " | jacob_cov | MFLOPs |",
              "|---|" + "--:|" * (len(labels) + 2)]
    for a in sorted(ref, key=lambda k: -ref[k]):
        cells = [f"{100 * acc[lab].get(a, float('nan')):.2f} ({ep[lab].get(a, 0):.1f})"
                 for lab in labels]
        lines.append(f"| `{_cell(a)}` | " + " | ".join(cells)
                     + f" | {proxies[a]['jacob_cov']:.1f} | {proxies[a]['flops'] / 1e6:.1f} |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
