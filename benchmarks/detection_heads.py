"""The searched neck and head of issue 13, one choice at a time, at equal CPU time.

The detection task's neck, head and input resolution are architecture choices of the
search (``with-head``). This measures what each option buys on its own: the ``cnn``
space's first known-good backbone (the hand design of ``detection.md``) with the default
head (FPN 64, one conv per level, three levels, decoupled towers of two convs, full
resolution) and with one choice changed at a time, each trained by
``peers/hand_detector.py`` for the same wall-clock budget on ONE pinned core, one after
another, on one generated data set, then scored by the same code as ``detection.py``
(pycocotools COCOeval on the test split, torch's FLOP counter, ONNX Runtime batch-1
one-thread latency). Writes ``detection_heads.md``, ``.json`` and ``.png`` (mAP against
latency: the trade-offs a mAP + latency search can choose from); a journal makes it
resumable.

    python benchmarks/detection_heads.py --core 1 --budget 150 --images 1500
    python benchmarks/detection_heads.py --quick --core 0          # smoke test, ~3 min
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(HERE))
import detection as DB  # noqa: E402 - the detection benchmark's runner and scorers
from _common import cpu_name, write_report  # noqa: E402

#: one change from the default head each ("" = the default)
VARIANTS = {
    "default (fpn, w64, d1, conv, 3 levels, decoupled, head w64 d2, res 1.0)": "",
    "neck=pan": "neck=pan",
    "neck_block=dw": "neck_block=dw",
    "neck_depth=0": "neck_depth=0",
    "neck & head width 32": "neck_width=32;head_width=32",
    "neck & head width 96": "neck_width=96;head_width=96",
    "head_tower=shared": "head_tower=shared",
    "head_depth=1": "head_depth=1",
    "n_levels=2": "n_levels=2",
    "resolution=0.75": "resolution=0.75",
    "resolution=0.5": "resolution=0.5",
}
JOURNAL = "journal.json"


def _slug(head: str) -> str:
    """A variant's folder and journal key: its head text with non-alphanumerics as ``_``."""
    return "".join(c if c.isalnum() else "_" for c in (head or "default"))


def run_variant(name: str, head: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    slug = _slug(head)
    out = work / slug
    cmd = [sys.executable, str(HERE / "peers" / "hand_detector.py"), "--data",
           str(work / "data" / "data.yaml"), "--budget", str(args.budget), "--seed",
           str(args.seed), "--out", str(out), "--reserve", str(args.reserve)]
    if head:
        cmd += ["--head", head]
    job = DB.run_job(cmd, args.core, work / f"{slug}.log", args.budget * 3 + 120,
                     DB.nasforge_env())
    res = job.get("result") or {}
    if job["rc"] != 0 or not res:
        return {"status": "failed", **job, "error_tail": DB._tail(job["log"])}
    return {"status": "ok", **job, "model_dir": res["model_dir"], "arch": res["arch"],
            "nasforge_test": res["metrics"]}


def score(step: dict[str, Any], work: Path, args: argparse.Namespace) -> dict[str, Any]:
    model_dir = Path(step["model_dir"])
    test = work / "data" / "images" / "test"
    preds = DB.nasforge_predictions(model_dir, test)
    n_classes = DB._n_classes(work / "data" / "data.yaml")
    m = json.loads((model_dir / "summary.json").read_text()).get("metrics", {})
    return {**DB.coco_eval(DB.ground_truth(test), preds, n_classes),
            **DB.nasforge_costs(model_dir, args.size),
            **DB.onnx_latency(model_dir / "model.onnx", args.repeats),
            "epochs": m.get("epochs")}


def render(journal: dict[str, Any], meta: dict[str, Any], args: argparse.Namespace) -> str:
    st = journal["steps"]
    lines = ["# Detection: the searched neck and head, one choice at a time", "",
             f"Data: `nasforge datasets make detection --images {args.images} --seed "
             f"{args.seed} --size {args.size}`. Each row: the cnn space's first known-good "
             f"backbone with the default head and one choice changed, trained by "
             f"`peers/hand_detector.py` for {args.budget:g} s of wall time (counted from "
             f"process start; {args.reserve:g} s of it kept for test and export) on core "
             f"{args.core}, one after another, one thread. mAP: pycocotools COCOeval on the "
             f"test split (conf >= 0.001, at most 100 boxes). FLOPs: torch's FlopCounterMode, "
             f"batch 1. Latency: ONNX Runtime, batch 1, one thread, median of "
             f"{args.repeats} runs.", "",
             "| variant | mAP@.5:.95 | mAP@.5 | params | GFLOPs | ONNX ms (p90) | epochs "
             "| wall s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, head in VARIANTS.items():
        slug = _slug(head)
        t, s = st.get(f"train_{slug}", {}), st.get(f"score_{slug}", {})
        if s.get("status", "ok") != "ok" or "map50_95" not in s:
            lines.append(f"| {name} | failed | | | | | | {t.get('wall_s', 0):.0f} |")
            continue
        ep = s.get("epochs")
        lines.append(f"| {name} | {s['map50_95']:.4f} | {s['map50']:.4f} | "
                     f"{s['params']:,} | {s['flops'] / 1e9:.3f} | {s['onnx_ms']:.2f} "
                     f"({s['onnx_ms_p90']:.2f}) | {f'{ep:.1f}' if ep is not None else '-'} | "
                     f"{t['wall_s']:.0f} |")
    lines += ["", f"Machine: {meta['cpu']}, Python {meta['python']}, torch {meta['torch']}; "
              f"written {meta['written']}; command `{meta['command']}`.", ""]
    return "\n".join(lines)


def plot(journal: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for head in VARIANTS.values():
        slug = _slug(head)
        s = journal["steps"].get(f"score_{slug}", {})
        if "map50_95" in s:
            ax.scatter(s["onnx_ms"], s["map50_95"], color="black" if not head else "C0")
            ax.annotate(head or "default", (s["onnx_ms"], s["map50_95"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("ONNX Runtime latency, batch 1, one thread (ms)")
    ax.set_ylabel("test mAP@.5:.95")
    ax.set_title("one neck/head choice changed at a time, equal CPU time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=150.0, help="seconds per variant")
    ap.add_argument("--reserve", type=float, default=30.0)
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--core", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--quick", action="store_true", help="200 images of 64 px, 40 s each")
    ap.add_argument("--variants", default="", help="comma list of head texts to run "
                    "('default' for the default head); all when empty")
    ap.add_argument("--tag", default="", help="write detection_heads_TAG.*")
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.size, args.budget, args.reserve, args.repeats = 200, 64, 40, 15, 30
    name = "detection_heads_quick" if args.quick else "detection_heads"
    if args.tag:
        name += f"_{args.tag}"
    if args.variants:
        wanted = {"" if v == "default" else v for v in args.variants.split(",")}
        unknown = wanted - set(VARIANTS.values())
        if unknown:
            ap.error(f"unknown variants {sorted(unknown)}; choose from "
                     f"{', '.join(v or 'default' for v in VARIANTS.values())}")
        for k in [k for k, v in VARIANTS.items() if v not in wanted]:
            del VARIANTS[k]
    work = Path(args.work or ROOT / "runs" / f"bench-{name}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    settings = {k: getattr(args, k) for k in ("budget", "reserve", "images", "size", "seed",
                                              "core", "repeats", "quick")}
    journal = DB.load_journal(work / JOURNAL, settings, args.resume)
    os.sched_setaffinity(0, {args.core})
    import torch

    torch.set_num_threads(1)
    if not DB._done(journal, "data"):
        journal["steps"]["data"] = DB.make_data(work, args, args.core)
        DB.save_journal(work / JOURNAL, journal)
    for label, head in VARIANTS.items():
        slug = _slug(head)
        if not DB._done(journal, f"train_{slug}"):
            print(f"[{time.strftime('%H:%M:%S')}] {label}: {args.budget:g} s", flush=True)
            journal["steps"][f"train_{slug}"] = run_variant(label, head, work, args)
            journal["steps"].pop(f"score_{slug}", None)
            DB.save_journal(work / JOURNAL, journal)
        if DB._done(journal, f"train_{slug}") and not DB._done(journal, f"score_{slug}"):
            try:
                sc = {"status": "ok", **score(journal["steps"][f"train_{slug}"], work, args)}
            except Exception as e:  # noqa: BLE001 - recorded; the others still run
                sc = {"status": "failed", "error_tail": f"{type(e).__name__}: {e}"}
            journal["steps"][f"score_{slug}"] = sc
            DB.save_journal(work / JOURNAL, journal)
            print(f"[{time.strftime('%H:%M:%S')}] {label}: mAP {sc.get('map50_95')}",
                  flush=True)
    meta = {"cpu": cpu_name(), "python": platform.python_version(), "torch": torch.__version__,
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": "python benchmarks/detection_heads.py " + " ".join(argv or sys.argv[1:])}
    write_report(args.out, name, render(journal, meta, args), journal, meta, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
