"""NAS-Bench-201 benchmark of the search strategies (CIFAR-10 and CIFAR-100 tables).

Writes ``benchmarks/results/nb201_<dataset>.{md,png,json}`` via :func:`nasforge.bench.run_bench`.
The table lives beside the repository (``../shared/benchmarks/nb201/nb201_cifar.csv``) or at
``$NASFORGE_NB201_TABLE``; it is never copied into the repository.

    python benchmarks/nb201.py                      # the full run: 100 seeds x 300 queries
    python benchmarks/nb201.py --seeds 5 --queries 60 --datasets cifar10   # a smoke run
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from nasforge.bench import parse_strategies, run_bench

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TABLE = ROOT.parent / "shared/benchmarks/nb201/nb201_cifar.csv"
#: the project's strategies; the anchors (random, optuna-direct) are always added
STRATEGIES = (
    "random,evolution,evolution[population_size=10,sample_size=5],local-search,"
    "local-search[order=model],reinforce,optuna-tpe,"
    'optuna-nsga2[sampler_options={"population_size":20}],bananas'
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="cifar10,cifar100")
    ap.add_argument("--strategies", default=STRATEGIES)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--table", default=os.environ.get("NASFORGE_NB201_TABLE", str(DEFAULT_TABLE)))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results"))
    ap.add_argument(
        "--seeds-for",
        action="append",
        default=[],
        metavar="LABEL=N",
        help="fewer seeds for a slow strategy",
    )
    ap.add_argument("--resume", action="store_true", help="reuse runs of an interrupted call")
    args = ap.parse_args()
    seeds_for = {k: int(v) for k, _, v in (p.rpartition("=") for p in args.seeds_for)}
    from nasforge import strategies as S

    specs = parse_strategies(args.strategies)
    missing = [s.label for s in specs if s.name not in S.registry and s.name != "optuna-direct"]
    if missing:  # e.g. a strategy still being written: benchmark the others
        print(f"skipping unregistered strategies: {missing}")
    specs = [s for s in specs if s.label not in missing]
    for dataset in filter(None, (d.strip() for d in args.datasets.split(","))):
        res = run_bench(
            dataset=dataset,
            strategies=specs,
            seeds=args.seeds,
            queries=args.queries,
            workers=args.workers,
            table=args.table,
            out_dir=args.out,
            seeds_for=seeds_for,
        )
        print(Path(res.files["markdown"]).read_text())


if __name__ == "__main__":
    main()
