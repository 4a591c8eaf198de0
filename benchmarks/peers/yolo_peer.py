"""Ultralytics YOLO from scratch, the detection benchmark's peer (``benchmarks/detection.py``).

Runs in its OWN virtual environment (``--system-site-packages`` over the shared one, plus
``pip install ultralytics torch==2.13.0``), never in nasforge's: ultralytics would pull its
own torch and torchvision. Pip's only torchvision for torch 2.13 is the CUDA build, whose
``_C.so`` needs ``libtorch_cuda.so`` and does not load next to the CPU torch (``import
torchvision`` fails with ``RuntimeError: operator torchvision::nms does not exist``).
:func:`shim_torchvision` therefore defines the one torchvision op YOLO uses, ``nms``, in
pure torch (greedy NMS, the same algorithm) before torchvision is imported. Nothing else
of torchvision's C++ is used by detection training, validation or export.

Offline: ``pretrained=False``, ``amp=False`` (the AMP check would download yolo11n.pt),
``plots=False`` (plots fetch Arial.ttf), ``YOLO_OFFLINE=1`` and a private settings dir.

    python yolo_peer.py train --data UL.yaml --out DIR --budget 480 --imgsz 128
    python yolo_peer.py predict --weights DIR/weights/last.pt --images IMG_DIR --json P.json

Prints one JSON line per command (``RESULT {...}``) the driver reads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch


def _nms_cpu(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS (torchvision's semantics: indices kept, by descending score)."""
    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    order = scores.argsort(descending=True)
    boxes = dets[order].float()
    x0, y0, x1, y1 = boxes.unbind(1)
    area = (x1 - x0).clamp(min=0) * (y1 - y0).clamp(min=0)
    keep: list[int] = []
    alive = torch.ones(len(boxes), dtype=torch.bool)
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        keep.append(i)
        rest = alive.nonzero().flatten()
        rest = rest[rest > i]
        if len(rest) == 0:
            break
        w = (torch.minimum(x1[i], x1[rest]) - torch.maximum(x0[i], x0[rest])).clamp(min=0)
        h = (torch.minimum(y1[i], y1[rest]) - torch.maximum(y0[i], y0[rest])).clamp(min=0)
        inter = w * h
        iou = inter / (area[i] + area[rest] - inter).clamp(min=1e-9)
        alive[rest[iou > iou_threshold]] = False
    return order[torch.tensor(keep, dtype=torch.long)]


def shim_torchvision() -> None:
    """Make ``import torchvision`` work with the CUDA torchvision wheel over CPU torch:
    define ``torchvision::nms`` (and the ``qnms`` schema its meta registrations expect)
    before torchvision loads, then tell torchvision its ops are there."""
    try:
        torch.ops.torchvision.nms  # noqa: B018  (the real extension loaded: nothing to do)
        return
    except (AttributeError, RuntimeError):
        pass
    lib = torch.library.Library("torchvision", "DEF")  # noqa: TID251
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.impl("nms", _nms_cpu, "CPU")
    globals()["_TV_LIB"] = lib  # keep the library alive
    import torchvision.extension

    torchvision.extension._has_ops = lambda: True  # type: ignore[attr-defined]


def torch_flops(net: torch.nn.Module, imgsz: int) -> int:
    """FLOPs of one forward at batch 1 by torch's own counter (2 per multiply-add of the
    convolutions and matmuls), the counter the driver applies to every system."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    m = copy.deepcopy(net).float().eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        m(torch.zeros(1, 3, imgsz, imgsz))
    return int(counter.get_total_flops())


def _quiet_integrations() -> None:
    """No MLflow/TensorBoard/W&B... logging (MLflow is installed in the shared env)."""
    from ultralytics.utils import SETTINGS

    SETTINGS.update({k: False for k in ("mlflow", "tensorboard", "wandb", "comet", "clearml",
                                        "dvc", "neptune", "raytune", "hub") if k in SETTINGS})


def _offline_env(out: Path) -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    cfg = out.parent / "ultralytics_config"
    cfg.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cfg))


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train ``args.model`` from scratch for ``args.budget`` seconds of wall time (from
    process start): ultralytics' ``time=`` (hours) sizes the epochs to the budget that
    remains after the import and model build."""
    out = Path(args.out).resolve()
    from ultralytics import YOLO

    model = YOLO(args.model)  # a .yaml: built from scratch, no weights
    left = args.budget - (time.monotonic() - T0) - args.reserve
    t_train = time.monotonic()
    model.train(
        data=args.data, imgsz=args.imgsz, epochs=args.epochs, time=max(left, 30) / 3600,
        batch=args.batch, workers=args.workers, device="cpu", pretrained=False, amp=False,
        plots=False, project=str(out.parent), name=out.name, exist_ok=True, seed=args.seed,
        deterministic=False, verbose=False, val=True, cache=args.cache,
    )
    train_s = time.monotonic() - t_train
    weights = out / "weights" / "best.pt"
    if not weights.is_file():
        weights = out / "weights" / "last.pt"
    return {"weights": str(weights), "train_s": train_s,
            "params": sum(p.numel() for p in YOLO(str(weights)).model.parameters())}


def _images(folder: str) -> list[Path]:
    exts = {".png", ".jpg", ".jpeg", ".bmp"}
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in exts)


def predict(args: argparse.Namespace) -> dict[str, Any]:
    """Predictions on every image of ``--images`` (boxes xyxy in the image's pixels) as
    ``{file name: [[x0, y0, x1, y1, score, class], ...]}``, plus ultralytics' own test
    mAP, its params and FLOPs and an ONNX export."""
    from ultralytics import YOLO

    model = YOLO(args.weights)
    preds: dict[str, list[list[float]]] = {}
    for p in _images(args.images):
        r = model.predict(str(p), imgsz=args.imgsz, conf=args.conf, iou=0.7, max_det=100,
                          device="cpu", verbose=False)[0]
        b = r.boxes
        rows = torch.cat([b.xyxy, b.conf[:, None], b.cls[:, None]], 1).tolist()
        preds[p.name] = rows
    Path(args.json).write_text(json.dumps(preds))
    res: dict[str, Any] = {"predictions": args.json, "images": len(preds)}
    try:
        m = model.val(data=args.data, split="test", imgsz=args.imgsz, batch=16, device="cpu",
                      plots=False, verbose=False, workers=0,
                      project=str(Path(args.json).parent), name="ul_val", exist_ok=True)
        res["ul_map50_95"] = float(m.box.map)
        res["ul_map50"] = float(m.box.map50)
    except Exception as e:  # noqa: BLE001  (its own numbers are secondary)
        res["ul_val_error"] = f"{type(e).__name__}: {e}"
    try:
        from ultralytics.utils.torch_utils import get_flops

        res["gflops_ul"] = float(get_flops(model.model, args.imgsz))
    except Exception as e:  # noqa: BLE001
        res["flops_error"] = f"{type(e).__name__}: {e}"
    res["flops"] = torch_flops(model.model, args.imgsz)
    res["params"] = sum(p.numel() for p in model.model.parameters())
    try:
        onnx = model.export(format="onnx", imgsz=args.imgsz, dynamic=False, simplify=False,
                            opset=17, device="cpu")
        res["onnx"] = str(onnx)
    except Exception as e:  # noqa: BLE001
        res["onnx_error"] = f"{type(e).__name__}: {e}"
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--data", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--budget", type=float, required=True, help="seconds, from process start")
    t.add_argument("--reserve", type=float, default=20.0,
                   help="seconds kept for ultralytics' final validation")
    t.add_argument("--model", default="yolov8n.yaml")
    t.add_argument("--imgsz", type=int, default=128)
    t.add_argument("--epochs", type=int, default=1000, help="upper bound; time= stops it")
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--workers", type=int, default=0)
    t.add_argument("--cache", default="ram")
    t.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("predict")
    p.add_argument("--weights", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--json", required=True)
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--conf", type=float, default=0.001)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.cmd == "train":
        _offline_env(Path(args.out))
    else:
        _offline_env(Path(args.json).parent / "x")
    shim_torchvision()
    _quiet_integrations()
    res = train(args) if args.cmd == "train" else predict(args)
    print("RESULT " + json.dumps(res), flush=True)


T0 = time.monotonic()
if __name__ == "__main__":
    sys.exit(main())
