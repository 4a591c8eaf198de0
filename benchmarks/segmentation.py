"""Segmentation benchmark (issue 13, part 4): nasforge against a hand-designed U-Net.

One generated data set (``nasforge datasets make segmentation``: Fashion-MNIST and digit
objects on cluttered backgrounds, a class per pixel, 80/10/10 % train/val/test), then the
same wall-clock budget ``--budget`` for each system, one after another on ONE pinned core
(``taskset -c CORE``, OMP/MKL_NUM_THREADS=1, one torch thread), counted from its process
start:

- ``nasforge``: ``nasforge search --dataset DATA/data.yaml --task segmentation
  --time-budget Bs`` (search, final training on train + val, test, export);
- ``unet``: a classic U-Net (Ronneberger et al. 2015) in plain torch, CPU-sized (4 levels,
  widths 16-128, double conv3x3-BN-ReLU, max-pool down, transposed-conv up, skip
  concatenation; ``peers/hand_unet.py``), AdamW + cosine over the wall-clock budget, CE,
  horizontal flips, on train + val;
- ``hand``: the ``cnn`` space's first known-good backbone with nasforge's default U-Net
  decoder, no search, trained for the whole budget (``peers/hand_detector.py --task
  segmentation``).

Every system is then scored by ONE evaluator (:func:`evaluate`): the test split's images
read from disk and letterboxed by nasforge's loader function (the identity here: the
scenes are square at the data's size), normalized with the system's stored mean/std,
its network's per-pixel argmax against the mask PNGs at the data's resolution; mIoU and
Dice by nasforge's ``mask_metrics`` (torchmetrics, macro over the classes present,
background included, all test pixels at once) and the per-class IoU from the same
confusion counts (:func:`per_class_iou`). Params and FLOPs (torch's ``FlopCounterMode``:
2 per multiply-add, batch 1) and ONNX Runtime latency (batch 1, one intra- and inter-op
thread, sequential, median of ``--repeats`` runs after a warm-up, on the same core) come
from the same code for all. Results go to ``--out`` (default ``benchmarks/results``):
``segmentation.md``, ``.json``, ``.png``; a journal in ``--work`` makes the run resumable
(``--resume`` skips the finished steps). ``--quick`` (300 images of 96 px, 60 s each)
writes ``segmentation_quick.*`` and never touches the real report.

    python benchmarks/segmentation.py --core 0 --budget 420 --images 2500
    python benchmarks/segmentation.py --core 0 --resume      # after a stop
    python benchmarks/segmentation.py --quick --core 0       # smoke test, ~5 min
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
PEERS = HERE / "peers"
for _p in (str(ROOT / "src"), str(HERE)):  # this checkout's nasforge; the sibling scripts
    if _p not in sys.path:
        sys.path.insert(0, _p)
from _common import cpu_name, write_report  # noqa: E402
from detection import (  # noqa: E402 - the detection benchmark's plumbing, shared
    _done,
    _f,
    _stop,
    _tail,
    load_journal,
    nasforge_env,
    onnx_latency,
    run_job,
    save_journal,
)

SYSTEMS = ("nasforge", "unet", "hand")
LABELS = {"nasforge": "nasforge search (--task segmentation)",
          "unet": "hand-designed classic U-Net (plain torch)",
          "hand": "known-good cnn backbone + nasforge's U-Net decoder, no search"}
SHORT = {"nasforge": "nasforge", "unet": "hand U-Net", "hand": "no-search nasforge"}


# ----------------------------------------------------------------------------- metrics
def confusion(pred: Any, target: Any, n_classes: int, ignore: int = 255) -> Any:
    """``(K, K)`` counts, rows the target class, columns the predicted one, over the
    pixels whose target is not ``ignore``."""
    import torch

    p, t = torch.as_tensor(pred).reshape(-1).long(), torch.as_tensor(target).reshape(-1).long()
    keep = t != ignore
    p, t = p[keep], t[keep]
    return torch.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(
        n_classes, n_classes)


def per_class_iou(cm: Any) -> list[float | None]:
    """IoU per class of a confusion matrix; None for a class absent from both the target
    and the prediction (it does not count in the mean, as in ``mask_metrics``)."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return [None if float(u) == 0 else float(a / u) for a, u in zip(tp, union, strict=True)]


def evaluate(predict: Any, images: Sequence[Path], masks: Sequence[Path], size: int,
             mean: Sequence[float], std: Sequence[float], n_classes: int,
             batch: int = 32) -> dict[str, Any]:
    """The one evaluator: ``predict`` (a torch module: normalized ``(N, 3, S, S)`` ->
    ``(N, K, S, S)`` logits or probabilities) on the test images; mIoU and Dice from
    nasforge's ``mask_metrics`` over all test pixels, per-class IoU from the same pixels."""
    import numpy as np
    import torch
    from PIL import Image

    from nasforge.data.detection import letterbox
    from nasforge.tasks.segmentation import mask_metrics

    mu = torch.tensor(list(mean), dtype=torch.float32)[None, :, None, None]
    sd = torch.tensor(list(std), dtype=torch.float32)[None, :, None, None]
    preds, targets = [], []
    predict.eval()
    with torch.no_grad():
        for i in range(0, len(images), batch):
            xs, ys = [], []
            for ip, mp in zip(images[i:i + batch], masks[i:i + batch], strict=True):
                with Image.open(ip) as im:
                    im = im.convert("RGB")
                    if im.size != (size, size):
                        raise SystemExit(f"{ip} is {im.size}, not {size} x {size}: the "
                                         "evaluator scores at the data's resolution")
                    xs.append(letterbox(im, size).transpose(2, 0, 1))
                with Image.open(mp) as m:
                    ys.append(np.asarray(m, dtype=np.int64))
            x = (torch.from_numpy(np.stack(xs)) - mu) / sd
            preds.append(predict(x).argmax(1))
            targets.append(torch.from_numpy(np.stack(ys)))
    pred, target = torch.cat(preds), torch.cat(targets)
    m = mask_metrics(pred, target, n_classes)
    ious = per_class_iou(confusion(pred, target, n_classes))
    present = [v for v in ious if v is not None]
    return {"miou": m["miou"], "dice": m["dice"], "per_class_iou": ious,
            "miou_check": sum(present) / max(len(present), 1),
            "pixel_accuracy": float((pred == target).double().mean()),
            "test_images": len(images)}


def costs(net: Any, size: int, in_ch: int = 3) -> dict[str, Any]:
    """Params and FLOPs (torch's counter, batch 1) of a torch module."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(1, in_ch, size, size))
    return {"params": sum(p.numel() for p in net.parameters()),
            "flops": int(counter.get_total_flops())}


def interleaved_latency(paths: Mapping[str, str | Path], repeats: int = 200,
                        block: int = 10) -> dict[str, dict[str, float]]:
    """ONNX Runtime batch-1 latency (ms, one thread) of several graphs measured in turns
    (``block`` runs of each, round after round, after 20 warm-ups each), so a load that
    comes and goes on the core slows them all alike: median and p90 per graph."""
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    runs: dict[str, Any] = {}
    for name, path in paths.items():
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        shape = [1 if not isinstance(d, int) else d for d in inp.shape]
        shape[0] = 1
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        for _ in range(20):
            sess.run(None, {inp.name: x})
        runs[name] = (sess, {inp.name: x}, [])
    for _ in range(max(1, repeats // block)):
        for sess, feed, ts in runs.values():
            for _ in range(block):
                t = time.perf_counter()
                sess.run(None, feed)
                ts.append(1000 * (time.perf_counter() - t))
    out = {}
    for name, (_, _, ts) in runs.items():
        ts.sort()
        out[name] = {"onnx_ms": statistics.median(ts), "onnx_ms_p90": ts[int(0.9 * (len(ts) - 1))]}
    return out


# ----------------------------------------------------------------------------- data
def make_data(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    data = work / "data"
    if not (data / "data.yaml").is_file():
        run_job([sys.executable, "-m", "nasforge.cli", "datasets", "make", "segmentation",
                 str(data), "--images", str(args.images), "--seed", str(args.seed),
                 "--size", str(args.size)], args.core, work / "data.log", 900, nasforge_env())
        if not (data / "data.yaml").is_file():
            raise SystemExit(f"could not make the data set:\n{_tail(work / 'data.log')}")
    stats = json.loads((data / "stats.json").read_text()) if (data / "stats.json").is_file() \
        else {}
    return {"status": "ok", "dir": str(data), "stats": stats}


def _test_files(data: Path) -> tuple[list[Path], list[Path]]:
    images = sorted(q for q in (data / "images" / "test").iterdir()
                    if q.suffix.lower() in {".png", ".jpg", ".jpeg"})
    return images, [data / "masks" / "test" / (q.stem + ".png") for q in images]


def _class_names(data: Path) -> list[str]:
    import yaml

    doc = yaml.safe_load((data / "data.yaml").read_text())
    names = doc.get("names") or {}
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)
    return ["background", *map(str, names)]


# ----------------------------------------------------------------------------- systems
def run_system(system: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Train one system for the budget (timed); scoring comes after, untimed."""
    data = work / "data"
    budget = args.budget
    kill = 1.5 * budget + 240
    sdir = work / system
    sdir.mkdir(parents=True, exist_ok=True)
    if (sdir / "run").exists():
        import shutil

        shutil.rmtree(sdir / "run")
    if system == "nasforge":
        cmd = [sys.executable, "-m", "nasforge.cli", "search", "--dataset",
               str(data / "data.yaml"), "--task", "segmentation", "--time-budget",
               f"{budget:g}s", "--seed", str(args.seed), "--out", str(sdir / "run"),
               "--no-progress"]
    elif system == "hand":
        cmd = [sys.executable, str(PEERS / "hand_detector.py"), "--task", "segmentation",
               "--data", str(data / "data.yaml"), "--budget", f"{budget:g}", "--seed",
               str(args.seed), "--out", str(sdir / "run"), "--reserve",
               f"{args.hand_reserve:g}"]
    else:
        cmd = [sys.executable, str(PEERS / "hand_unet.py"), "--data", str(data / "data.yaml"),
               "--budget", f"{budget:g}", "--seed", str(args.seed), "--out",
               str(sdir / "run"), "--base", str(args.unet_base), "--reserve",
               f"{args.unet_reserve:g}"]
    r = run_job(cmd, args.core, sdir / "train.log", kill, nasforge_env())
    if system == "unet":
        ok = (sdir / "run" / "model.pt").is_file()
        r["model_dir"] = str(sdir / "run") if ok else None
    else:
        model_dir = sdir / "run" / "best"
        r["model_dir"] = str(model_dir) if (model_dir / "summary.json").is_file() else None
    r["status"] = "ok" if r["rc"] == 0 and r["model_dir"] else "failed"
    if r["status"] != "ok":
        r["error_tail"] = _tail(r["log"])
    return r


def score_system(system: str, step: Mapping[str, Any], work: Path,
                 args: argparse.Namespace) -> dict[str, Any]:
    """The one evaluator on the test split; params, FLOPs, ONNX latency."""
    data = work / "data"
    images, masks = _test_files(data)
    n_classes = len(_class_names(data))
    model_dir = Path(step["model_dir"])
    res: dict[str, Any] = {}
    if system == "unet":
        sys.path.insert(0, str(PEERS))
        from hand_unet import load

        net, ck = load(model_dir / "model.pt")
        mean, std = ck["mean"], ck["std"]
        res.update({k: (step.get("result") or {}).get(k) for k in
                    ("epochs", "steps", "train_time_s", "config", "onnx_error")})
        res["arch"] = "UNet(" + ", ".join(f"{k}={v}" for k, v in ck["config"].items()) + ")"
        onnx = model_dir / "model.onnx"
    else:
        import nasforge

        model = nasforge.load(model_dir)
        net, mean, std = model.module, model.mean, model.std
        summ = json.loads((model_dir / "summary.json").read_text())
        m = summ.get("metrics", {})
        res.update({"nf_test_miou": m.get("test_miou"), "nf_test_dice": m.get("test_dice"),
                    "arch": summ.get("arch"), "epochs": m.get("epochs"),
                    "train_time_s": m.get("train_time_s")})
        if system == "nasforge":
            res["search"] = _search_summary(model_dir.parent)
        onnx = model_dir / "model.onnx"
    res.update(evaluate(net, images, masks, args.size, mean, std, n_classes))
    res.update(costs(net, args.size))
    if onnx.is_file():
        res.update(onnx_latency(onnx, args.repeats))
    res["status"] = "ok"
    return res


def _search_summary(run_dir: Path) -> dict[str, Any]:
    """How many trials the search ran and what it planned (from the run's files)."""
    out: dict[str, Any] = {}
    for name in ("plan.json", "budget_plan.json"):
        p = run_dir / name
        if p.is_file():
            try:
                out["plan"] = json.loads(p.read_text())
            except ValueError:
                pass
    trials = run_dir / "trials"
    if trials.is_dir():
        out["trials"] = len([q for q in trials.iterdir() if q.is_dir()])
    return out


# ----------------------------------------------------------------------------- report
def render(journal: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    s = journal["settings"]
    steps = journal["steps"]
    title = "Segmentation: nasforge against a hand-designed U-Net at equal CPU time"
    if s.get("quick"):
        title += " (--quick smoke test, not a result)"
    stats = steps.get("data", {}).get("stats", {})
    split = ", ".join(f"{k} {v.get('images', '?')} images / {v.get('objects', '?')} objects"
                      for k, v in stats.items() if isinstance(v, Mapping)) or "80/10/10 %"
    lines = [f"# {title}", "",
             f"Data: `nasforge datasets make segmentation --images {s['images']} --seed "
             f"{s['seed']} --size {s['size']}` ({split}; 21 classes: background + 10 "
             "Fashion-MNIST + 10 digits). Budget "
             f"{s['budget']:g} s ({s['budget'] / 60:.3g} min) of wall time per system, counted "
             f"from its process start, one after another on core {s['core']} (`taskset`), "
             "one thread. Scores: one evaluator for all (the test split's images from disk, "
             f"argmax per pixel at {s['size']} px against the mask PNGs; mIoU and Dice by "
             "nasforge's `mask_metrics`, torchmetrics `MeanIoU` / `DiceScore`, macro over "
             "the classes present, background included, over all test pixels at once). "
             "FLOPs: torch's `FlopCounterMode` at batch 1 (2 per multiply-add). Latency: "
             f"ONNX Runtime, batch 1, one thread, median of {s['repeats']} runs (softmax "
             "probabilities out, no argmax)"
             + (", the graphs measured in turns (10 runs of each, round after round) "
                "after all were trained, so a passing load slows all alike"
                if steps.get("latency") else "") + ".", "",
             "| system | mIoU | Dice | pixel acc. | params | GFLOPs | ONNX ms (p90) | wall s "
             "| epochs | notes |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    turns = steps.get("latency", {})
    for name in SYSTEMS:
        tr, sc = steps.get(f"train_{name}", {}), steps.get(f"score_{name}", {})
        if not tr:
            continue
        sc = {**sc, **turns.get(name, {})}
        notes = []
        if tr.get("status") == "failed":
            notes.append("training FAILED (see below)")
        if sc.get("status") == "failed":
            notes.append("scoring FAILED")
        if sc.get("nf_test_miou") is not None:
            notes.append(f"nasforge's own test mIoU: {sc['nf_test_miou']:.4f}")
        if tr.get("wall_s") is not None and tr["wall_s"] > s["budget"] * 1.02:
            notes.append(f"**over budget by {tr['wall_s'] - s['budget']:.0f} s**")
        if sc.get("onnx_error"):
            notes.append(f"ONNX export failed: {sc['onnx_error']}")
        lines.append(
            f"| {LABELS[name]} | {_f(sc.get('miou'), '.4f')} | {_f(sc.get('dice'), '.4f')} | "
            f"{_f(sc.get('pixel_accuracy'), '.4f')} | {_f(sc.get('params'), ',')} | "
            f"{_f(None if sc.get('flops') is None else sc['flops'] / 1e9, '.3f')} | "
            f"{_f(sc.get('onnx_ms'), '.2f')} ({_f(sc.get('onnx_ms_p90'), '.2f')}) | "
            f"{_f(tr.get('wall_s'), '.0f')} | {_f(sc.get('epochs'), '.3g')} | "
            f"{'; '.join(notes)} |")
    lines += ["", "## Reading", "", verdict(steps), ""]
    lines += earlier_runs(journal)
    lines += per_class_table(steps, s)
    for name in SYSTEMS:
        tr, sc = steps.get(f"train_{name}", {}), steps.get(f"score_{name}", {})
        if tr.get("status") == "failed" or sc.get("status") == "failed":
            tail = tr.get("error_tail") or sc.get("error_tail")
            lines += [f"### {name} failed", "", "```", str(tail), "```", ""]
    lines += ["## Set-up", "", f"- driver: `{meta.get('command', '')}`"]
    for name in SYSTEMS:
        tr = steps.get(f"train_{name}", {})
        if tr.get("cmd"):
            lines.append(f"- {name}: `{tr['cmd']}`")
    for name in SYSTEMS:
        sc = steps.get(f"score_{name}", {})
        if sc.get("arch"):
            lines.append(f"- {SHORT[name]}'s network: `{sc['arch']}`")
    lines += [f"- machine: {meta['cpu']}, Python {meta['python']}, torch {meta['torch']}, "
              f"onnxruntime {meta.get('onnxruntime', '?')}; written {meta['written']}",
              "- hand U-Net recipe (`peers/hand_unet.py`): AdamW lr 3e-3, wd 1e-4, batch 16, "
              "3 % warm-up then cosine over the wall-clock training time, per-pixel CE "
              "(255 ignored), random horizontal flips; trained on train + val (as "
              "nasforge's and the no-search model's final trainings are), last weights "
              f"kept; {s.get('unet_reserve', 20):g} s of the budget reserved for saving and "
              "the ONNX export.",
              "- nasforge's time-budgeted recipe (and the no-search model's): AdamW 2e-3, "
              "wd 5e-4, batch 32, 3 % warm-up, cosine over the time, no augmentation (the "
              "default for a YOLO-layout data set).",
              "- All are scored on the test split only; the test scenes' objects come from "
              "the sources' held-out images.", ""]
    return "\n".join(lines)


def earlier_runs(journal: Mapping[str, Any]) -> list[str]:
    """The replaced runs of systems that were run again (``journal["earlier"]``: a list
    of ``{"note", "steps": {"train_X", "score_X"}}``, set by hand when a run is redone)."""
    out: list[str] = []
    for e in journal.get("earlier") or []:
        st = e.get("steps", {})
        out += ["## Replaced runs (kept for the record)", "", str(e.get("note", "")), "",
                "| system | mIoU | Dice | wall s | epochs | ONNX ms (p90), timed right after "
                "its training |",
                "|---|---:|---:|---:|---:|---:|"]
        for n in SYSTEMS:
            tr, sc = st.get(f"train_{n}"), st.get(f"score_{n}")
            if tr is None or sc is None:
                continue
            out.append(f"| {LABELS[n]} | {_f(sc.get('miou'), '.4f')} | "
                       f"{_f(sc.get('dice'), '.4f')} | {_f(tr.get('wall_s'), '.0f')} | "
                       f"{_f(sc.get('epochs'), '.3g')} | {_f(sc.get('onnx_ms'), '.2f')} "
                       f"({_f(sc.get('onnx_ms_p90'), '.2f')}) |")
        out.append("")
    return out


def per_class_table(steps: Mapping[str, Any], settings: Mapping[str, Any]) -> list[str]:
    names = [n for n in SYSTEMS if steps.get(f"score_{n}", {}).get("per_class_iou")]
    if not names:
        return []
    classes = settings.get("classes") or []
    k = len(steps[f"score_{names[0]}"]["per_class_iou"])
    classes = classes if len(classes) == k else [str(i) for i in range(k)]
    out = ["## Per-class IoU (test split)", "",
           "| class | " + " | ".join(SHORT[n] for n in names) + " |",
           "|---|" + "---:|" * len(names)]
    for i in range(k):
        cells = [steps[f"score_{n}"]["per_class_iou"][i] for n in names]
        out.append(f"| {classes[i]} | " + " | ".join(_f(c, ".3f") for c in cells) + " |")
    return [*out, ""]


def verdict(steps: Mapping[str, Any]) -> str:
    turns = steps.get("latency", {})
    nf, un, hd = ({**steps.get(f"score_{n}", {}), **turns.get(n, {})}
                  for n in ("nasforge", "unet", "hand"))
    if nf.get("miou") is None or un.get("miou") is None:
        return "Not all systems were scored, so the goal cannot be judged (see above)."
    d = nf["miou"] - un["miou"]
    met = d >= 0
    out = [f"Goal (issue 13): nasforge's segmenter at least matches the hand-designed U-Net's "
           f"test mIoU at the same CPU time. **{'Met' if met else 'Not met'}"
           + (" only as a tie within noise" if met and abs(d) < 0.01 else
              ", by less than noise" if abs(d) < 0.01 else "") + "** on this data "
           f"and seed: nasforge {nf['miou']:.4f} vs U-Net {un['miou']:.4f} mIoU "
           f"({'+' if d >= 0 else '-'}{abs(d):.4f}); Dice {nf['dice']:.4f} vs "
           f"{un['dice']:.4f}."]
    if nf.get("onnx_ms") is not None and un.get("onnx_ms") is not None:
        out.append(f"ONNX latency {nf['onnx_ms']:.2f} ms vs {un['onnx_ms']:.2f} ms, "
                   f"{_f(nf.get('flops', 0) / 1e9, '.3f')} vs "
                   f"{_f(un.get('flops', 0) / 1e9, '.3f')} GFLOPs.")
    if hd.get("miou") is not None:
        dh = nf["miou"] - hd["miou"]
        same = nf.get("arch") and nf.get("arch") == hd.get("arch")
        out.append(f"Against its own first known-good backbone trained without search for "
                   f"the whole budget ({hd['miou']:.4f}), nasforge is "
                   f"{'ahead' if dh > 0 else 'behind'} by {abs(dh):.4f} mIoU"
                   + (" (the same network: nasforge did not search here)." if same else "."))
    out.append("One seed and one generated data set: differences of a few thousandths are "
               "within seed noise.")
    return " ".join(out)


def plot(journal: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = dict(zip(SYSTEMS, ("tab:blue", "tab:red", "tab:green"), strict=True))
    done = [n for n in SYSTEMS if journal["steps"].get(f"score_{n}", {}).get("miou")
            is not None]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    turns = journal["steps"].get("latency", {})
    for i, n in enumerate(done):
        sc = {**journal["steps"][f"score_{n}"], **turns.get(n, {})}
        a1.bar(i - 0.2, sc["miou"], 0.4, color=colours[n], label="mIoU" if not i else None)
        a1.bar(i + 0.2, sc["dice"], 0.4, color=colours[n], alpha=0.5,
               label="Dice" if not i else None)
        if sc.get("onnx_ms") is not None:
            a2.scatter(sc["onnx_ms"], sc["miou"], s=60, color=colours[n], label=SHORT[n])
    a1.set_xticks(range(len(done)), [SHORT[n] for n in done])
    a1.set_ylabel("test score")
    a1.set_title("mIoU (solid) and Dice (light)")
    a1.set_ylim(0, 1)
    a2.set_xlabel("ONNX Runtime latency, batch 1, 1 thread (ms)")
    a2.set_ylabel("test mIoU")
    a2.set_title(f"segmentation, {journal['settings']['budget']:g} s per system")
    a2.grid(alpha=0.3)
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    import signal

    signal.signal(signal.SIGTERM, _stop)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, default=420.0, help="seconds per system")
    ap.add_argument("--images", type=int, default=2500)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--core", type=int, default=0)
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--work", default=None, help="work folder (default runs/bench-segmentation)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--unet-base", type=int, default=16)
    ap.add_argument("--unet-reserve", type=float, default=20.0)
    ap.add_argument("--hand-reserve", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--quick", action="store_true", help="300 images of 96 px, 60 s each")
    ap.add_argument("--tag", default="", help="write segmentation_TAG.* (another setting "
                    "beside the main report)")
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.size, args.budget, args.repeats = 300, 96, 60.0, 50
        args.hand_reserve, args.unet_reserve = 20.0, 10.0
    name = "segmentation_quick" if args.quick else "segmentation"
    if args.tag:
        name += f"_{args.tag}"
    work = Path(args.work or ROOT / "runs" / f"bench-{name}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        ap.error(f"unknown systems {sorted(unknown)}: give some of {', '.join(SYSTEMS)}")
    settings = {"budget": args.budget, "images": args.images, "size": args.size,
                "seed": args.seed, "core": args.core, "quick": args.quick,
                "unet_base": args.unet_base, "unet_reserve": args.unet_reserve,
                "hand_reserve": args.hand_reserve, "repeats": args.repeats}
    jpath = work / "journal.json"
    journal = load_journal(jpath, settings, args.resume)
    os.sched_setaffinity(0, {args.core})  # the scoring runs on the same core
    import torch

    torch.set_num_threads(1)
    if not _done(journal, "data"):
        journal["steps"]["data"] = make_data(work, args)
        save_journal(jpath, journal)
    journal["settings_classes"] = _class_names(work / "data")
    for s in systems:
        key = f"train_{s}"
        if not _done(journal, key):
            print(f"[{time.strftime('%H:%M:%S')}] {s}: training for {args.budget:g} s",
                  flush=True)
            journal["steps"][key] = run_system(s, work, args)
            journal["steps"].pop(f"score_{s}", None)
            save_journal(jpath, journal)
            print(f"[{time.strftime('%H:%M:%S')}] {s}: {journal['steps'][key]['status']} in "
                  f"{journal['steps'][key]['wall_s']:.0f} s", flush=True)
        if _done(journal, key) and not _done(journal, f"score_{s}"):
            try:
                sc = score_system(s, journal["steps"][key], work, args)
            except Exception as e:  # noqa: BLE001 - recorded, the others still run
                sc = {"status": "failed", "error_tail": f"{type(e).__name__}: {e}"}
            journal["steps"][f"score_{s}"] = sc
            save_journal(jpath, journal)
            print(f"[{time.strftime('%H:%M:%S')}] {s}: scored mIoU {sc.get('miou')}",
                  flush=True)
    onnx = {n: str(Path(journal["steps"][f"train_{n}"]["model_dir"]) / "model.onnx")
            for n in SYSTEMS if _done(journal, f"score_{n}")
            and (Path(journal["steps"][f"train_{n}"]["model_dir"]) / "model.onnx").is_file()}
    if len(onnx) > 1 and journal["steps"].get("latency", {}).get("systems") != sorted(onnx):
        print(f"[{time.strftime('%H:%M:%S')}] ONNX latencies of {', '.join(onnx)} in turns",
              flush=True)
        journal["steps"]["latency"] = {"status": "ok", "systems": sorted(onnx),
                                       **interleaved_latency(onnx, args.repeats)}
        save_journal(jpath, journal)
    import onnxruntime

    meta = {"cpu": cpu_name(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "written": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": "python benchmarks/segmentation.py " + " ".join(
                sys.argv[1:] if argv is None else argv)}
    view = {**journal, "settings": {**journal["settings"],
                                    "classes": journal.get("settings_classes")}}
    write_report(args.out, name, render(view, meta), journal, meta, plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
