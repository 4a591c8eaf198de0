"""Peer: a hand-designed classic U-Net (Ronneberger et al. 2015), plain torch, CPU-sized.

Four levels (``--base`` 16: widths 16, 32, 64, 128; the coarsest is the bottleneck at
1/8 of the input), each a double 3x3 conv-BN-ReLU; 2x2 max-pool down; 2x2 transposed
conv up, concatenation with the encoder's skip, double 3x3 conv-BN-ReLU; a 1x1 conv
gives the class logits at the input size. Same padding throughout (no cropping), so
the output is the input's size.

Recipe: AdamW (lr ``--lr`` 3e-3, wd 1e-4), batch 16, linear warm-up over the first 3 %
of the training time then cosine to 0 over the *wall-clock* time left (the budget
counted from process start, less ``--reserve`` for the export), per-pixel
cross-entropy (255 ignored), random horizontal flips (p 0.5) of image and mask. Data:
the YOLO-layout set read by nasforge's loader (``nasforge.load_dataset``, the same
letterboxed, normalized arrays and splits every system gets); it trains on train + val,
as nasforge's and the hand design's final trainings do, and keeps the last weights.

Writes ``OUT/model.pt`` (state dict, config, mean/std, classes) and ``OUT/model.onnx``
(input: the normalized ``(1, 3, S, S)`` image; output: per-pixel class probabilities),
and prints one ``RESULT {json}`` line.

    PYTHONPATH=src taskset -c 0 python benchmarks/peers/hand_unet.py \
        --data DATA/data.yaml --budget 420 --out RUN
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

T0 = time.monotonic()

import torch  # noqa: E402 - T0 first: the budget counts the imports too
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class UNet(nn.Module):
    """The classic U-Net, ``levels`` deep with widths ``base * 2**i``."""

    def __init__(self, in_ch: int = 3, n_classes: int = 2, base: int = 16, levels: int = 4
                 ) -> None:
        super().__init__()
        widths = [base * 2 ** i for i in range(levels)]
        self.config = {"in_ch": in_ch, "n_classes": n_classes, "base": base, "levels": levels}
        self.down = nn.ModuleList()
        c = in_ch
        for w in widths:
            self.down.append(double_conv(c, w))
            c = w
        self.upconv = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                    for i in reversed(range(levels - 1)))
        self.updec = nn.ModuleList(double_conv(2 * widths[i], widths[i])
                                   for i in reversed(range(levels - 1)))
        self.classify = nn.Conv2d(widths[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.upconv, self.updec, strict=True):
            x = up(x)
            s = skips.pop()
            if x.shape[-2:] != s.shape[-2:]:  # odd sizes: pad to the skip
                x = F.pad(x, (0, s.shape[-1] - x.shape[-1], 0, s.shape[-2] - x.shape[-2]))
            x = dec(torch.cat([s, x], 1))
        return self.classify(x)


def load(path: str | Path) -> tuple[UNet, dict]:
    """``(network in eval mode, the saved checkpoint dict)`` of ``OUT/model.pt``."""
    ck = torch.load(Path(path), map_location="cpu", weights_only=False)
    net = UNet(**ck["config"])
    net.load_state_dict(ck["state_dict"])
    return net.eval(), ck


def lr_factor(t: float, total: float, warmup: float = 0.03) -> float:
    """Warm-up then cosine over the wall-clock training time: the factor at ``t`` s."""
    if total <= 0:
        return 0.0
    f = min(max(t / total, 0.0), 1.0)
    if f < warmup:
        return max(f / warmup, 0.01)
    return 0.5 * (1 + math.cos(math.pi * (f - warmup) / (1 - warmup)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="a YOLO-layout data.yaml with masks")
    ap.add_argument("--budget", type=float, required=True, help="wall-clock seconds, all in")
    ap.add_argument("--out", required=True)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--levels", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--reserve", type=float, default=20.0,
                    help="seconds kept for saving and the ONNX export")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    import numpy as np

    import nasforge

    data = nasforge.load_dataset(args.data, task="segmentation", seed=args.seed)
    x = torch.from_numpy(np.concatenate([data.x_train, data.x_val]))
    y = torch.from_numpy(np.concatenate([data.y_train, data.y_val])).long()
    n_classes = len(data.classes)
    net = UNet(int(x.shape[1]), n_classes, args.base, args.levels)
    n_params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    loss_fn = nn.CrossEntropyLoss(ignore_index=255)
    total = args.budget - (time.monotonic() - T0) - args.reserve
    print(f"hand U-Net base {args.base}, {args.levels} levels: {n_params:,} params, "
          f"{len(x)} train + val images at {x.shape[-1]} px, {n_classes} classes; training "
          f"{total:.0f} s", flush=True)
    g = torch.Generator().manual_seed(args.seed)
    t_start = time.monotonic()
    steps = 0
    seen = 0
    net.train()
    done = False
    epoch = 0
    while not done:
        order = torch.randperm(len(x), generator=g)
        run_loss, nb = 0.0, 0
        for i in range(0, len(x) - args.batch_size + 1, args.batch_size):
            t = time.monotonic() - t_start
            if t >= total:
                done = True
                break
            for grp in opt.param_groups:
                grp["lr"] = args.lr * lr_factor(t, total)
            idx = order[i:i + args.batch_size]
            xb, yb = x[idx], y[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            yb = torch.where(flip[:, None, None], yb.flip(-1), yb)
            loss = loss_fn(net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            seen += len(idx)
            run_loss += float(loss.detach())
            nb += 1
        epoch += 1
        print(f"epoch {epoch} ({seen / len(x):.2f} epochs seen): loss {run_loss / max(nb, 1):.4f}"
              f", {time.monotonic() - t_start:.0f} s", flush=True)
    train_s = time.monotonic() - t_start
    net.eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": net.state_dict(), "config": net.config, "mean": data.mean,
                "std": data.std, "classes": list(data.classes)}, out / "model.pt")
    onnx_path = out / "model.onnx"
    onnx_error = None
    try:
        from nasforge.tasks.segmentation import Probabilities  # softmax, as nasforge serves

        torch.onnx.export(Probabilities(net), torch.zeros(1, int(x.shape[1]), x.shape[-2],
                                                          x.shape[-1]),
                          str(onnx_path), input_names=["input"],
                          output_names=["probabilities"], opset_version=17, dynamo=False)
    except Exception as e:  # noqa: BLE001 - the scores still count without a latency
        onnx_error = f"{type(e).__name__}: {e}"
    print("RESULT " + json.dumps({
        "model": str(out / "model.pt"), "onnx": str(onnx_path) if onnx_error is None else None,
        "onnx_error": onnx_error, "params": n_params, "steps": steps,
        "epochs": seen / len(x), "train_time_s": train_s,
        "wall_s": time.monotonic() - T0, "config": net.config}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
