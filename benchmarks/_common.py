"""Helpers shared by the benchmark scripts (the Fashion-MNIST ones, ``constrained.py`` and
``fashion_mnist.py``, and :func:`html_report` for every script that stores runs).

Not a benchmark itself. The scripts run as ``python benchmarks/<name>.py`` and import this
module from their own folder.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``), for the set-up notes of a result."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def write_report(out: str | Path, name: str, markdown: str, journal: dict[str, Any],
                 meta: dict[str, Any], plot: Any) -> None:
    """``OUT/NAME.md`` (``markdown``), ``NAME.json`` (the journal and ``meta``) and
    ``NAME.png`` (``plot(journal, path)``): what a journalled benchmark writes at the end."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(markdown)
    (out / f"{name}.json").write_text(json.dumps({**journal, "meta": meta}, indent=1,
                                                 default=str) + "\n")
    plot(journal, out / f"{name}.png")
    print(f"wrote {out / (name + '.md')}", flush=True)


def prepare(ap: argparse.ArgumentParser, args: argparse.Namespace, name: str) -> bool:
    """Set torch's threads (``--threads``), pick a new run folder (``--out``, default
    ``runs/bench-<name>-<time>``) and check that Fashion-MNIST is there; False (with a
    message) if it is not. An existing ``--out`` is a usage error."""
    torch.set_num_threads(args.threads)
    if args.out is None:
        args.out = f"runs/bench-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if Path(args.out).exists():
        ap.error(f"--out {args.out} exists; choose a new directory")

    from nasforge.data import fashion_mnist_available

    if not fashion_mnist_available(args.data_dir):
        print("Fashion-MNIST not found: apt-get install dataset-fashion-mnist or --data-dir",
              file=sys.stderr)
        return False
    return True


def search(out: Path, args: argparse.Namespace, plan: dict[str, Any],
           **kw: Any) -> tuple[Any, float]:
    """``nasforge.search`` of the ``cnn`` space on Fashion-MNIST (train estimator) for
    ``plan["search_s"]`` seconds, then the final retrain; ``(result, wall seconds)``.

    ``plan`` gives the space, estimator and dataset options and the final epochs; ``kw``
    the strategy and goals (``strategy=``, ``objectives=``, ...).
    """
    import nasforge

    t0 = time.monotonic()
    res = nasforge.search(
        "fashion-mnist", space="cnn", estimator="train", trials=None,
        time_budget=plan["search_s"], seed=args.seed, out=out,
        space_options=plan["space_options"], estimator_options=plan["estimator_options"],
        final_epochs=plan["final_epochs"], dataset_options=plan["dataset_options"],
        data_dir=args.data_dir, progress=not args.no_progress, **kw,
    )
    return res, time.monotonic() - t0


def html_report(run_dir: str | Path, markdown: str | Path) -> Path | None:
    """Write ``nasforge report`` of ``run_dir`` beside the benchmark's ``markdown`` as
    ``<stem>_report.html`` (one self-contained file: the run's plots with plotly.js
    inlined, so about 5 MB; ``.gitignore`` keeps it out of the repository). A run that
    cannot be read (it failed before storing anything) gets a message, not a crash."""
    from nasforge.dashboard.report import write_report

    md = Path(markdown)
    out = md.with_name(f"{md.stem}_report.html")
    try:
        write_report(run_dir, out)
    except Exception as e:  # noqa: BLE001 - a benchmark's table matters more than its report
        print(f"no HTML report for {run_dir}: {e}", file=sys.stderr)
        return None
    print(f"HTML report of {run_dir}: {out}")
    return out
