"""Peer: a hand-designed detector of nasforge's own family, trained for the whole budget.

The backbone is the ``cnn`` space's first known-good design (the one a nasforge search
tries first: ``stem16|maxpool|conv-k3-w32-relu-skip|...``), with the detection task's
default FPN neck and FCOS head (``fpn_width`` 64, ``head_depth`` 2). No search: it is
trained with the time-budgeted job's recipe (AdamW 2e-3, wd 5e-4, warmup 3 %, batch 32,
cosine over the wall-clock time) on train + val for the budget counted from process start,
less a reserve for the test and the ONNX export, then tested, measured and exported to
``OUT/best`` by the same code as a search's winner (``nasforge.run.finalize.finish_model``),
so its ``summary.json`` and ``model.onnx`` are the same kind as nasforge's.
``--task segmentation`` does the same with the segmentation task's default U-Net
decoder in place of the FPN/FCOS head (the segmentation benchmark's ``hand`` system).

    PYTHONPATH=src taskset -c 1 python benchmarks/peers/hand_detector.py \
        --data DATA/data.yaml --budget 480 --out RUN
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

T0 = time.monotonic()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a YOLO-layout data.yaml")
    ap.add_argument("--budget", type=float, required=True, help="wall-clock seconds, all in")
    ap.add_argument("--out", required=True, help="run folder (the model goes to OUT/best)")
    ap.add_argument("--reserve", type=float, default=45.0,
                    help="seconds kept for the test, the latency timing and the export")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--head", default="",
                    help="neck/head choices changed from the defaults, 'k=v;k=v' (e.g. "
                         "'neck=pan;resolution=0.75'); the model directory then stores the "
                         "with-head space")
    ap.add_argument("--task", default="detection", choices=("detection", "segmentation"))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    import nasforge
    from nasforge.run.budget import RECIPE
    from nasforge.run.finalize import finish_model

    data = nasforge.load_dataset(args.data, task=args.task, seed=args.seed)
    space = nasforge.spaces.get("cnn")
    arch = space.known_good()[0]
    if args.head:
        from nasforge.spaces.headed import with_task_choices

        space = with_task_choices(space, data.make_task())
        arch = space.parse(f"{space.backbone_arch(space.known_good()[0]).text} + {args.head}")
    torch.manual_seed(args.seed)
    model = data.build_network(space, arch)
    task = data.make_task()
    recipe = {**RECIPE, **getattr(task, "train_defaults", {}), "augment": "none"}
    kw = {k: recipe[k] for k in ("batch_size", "optimizer", "lr", "weight_decay",
                                 "label_smoothing", "augment", "warmup")}
    secs = args.budget - (time.monotonic() - T0) - args.reserve
    n_params = sum(p.numel() for p in model.parameters())
    print(f"hand {args.task} model {arch.text}: {n_params:,} params, "
          f"training {secs:.0f} s on train + val", flush=True)
    final, model_dir = finish_model(
        model, arch, space, data, Path(args.out) / "best",
        train={**kw, "epochs": 10**6, "data_fraction": 1.0, "resolution": None,
               "seed": args.seed, "seconds": max(1.0, secs), "include_val": True},
        onnx=True, say=lambda m: print(m, flush=True))
    wall = time.monotonic() - T0
    print("RESULT " + json.dumps({"model_dir": str(model_dir), "wall_s": wall,
                                  "arch": arch.text, "metrics": final}, default=str),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
