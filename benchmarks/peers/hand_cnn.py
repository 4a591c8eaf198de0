"""Peer: the hand-designed CNN, trained for the whole wall-clock budget.

    2 x [(conv3x3-BN-ReLU) x 2, maxpool 2x2, dropout 0.1 / 0.2] with 32 and 64 channels,
    flatten -> FC-128 -> ReLU -> dropout 0.3 -> linear(10)          (468,010 parameters)

Trained on all 60k training images (train + validation) with the shared recipe
(``_recipe.py``: AdamW 2e-3, wd 5e-4, batch 128, label smoothing 0.1, flips,
channels_last) and a cosine schedule over the wall-clock training time, which is the
budget counted from process start less the time kept for the test (10 s, or the timed
estimate when longer). Then one evaluation on the official 10k test set. Writes ``--out`` (JSON):

    taskset -c 1 python3 benchmarks/peers/hand_cnn.py --budget 900 --seed 0 --out r.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import _recipe as R  # noqa: E402

PARAMS = 468_010
#: seconds kept back for the test at least (more when the timed probe says so)
TEST_RESERVE_S = 10.0


class HandCNN(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 side: tuple[int, int] = (28, 28)) -> None:
        super().__init__()

        def unit(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *unit(in_channels, 32), *unit(32, 32), nn.MaxPool2d(2), nn.Dropout(0.1),
            *unit(32, 64), *unit(64, 64), nn.MaxPool2d(2), nn.Dropout(0.2),
        )
        flat = 64 * (side[0] // 4) * (side[1] // 4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, 128), nn.ReLU(inplace=True),
                                  nn.Dropout(0.3), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, required=True, help="wall-clock seconds, all in")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="result JSON")
    ap.add_argument("--dataset", default="fashion-mnist",
                    help="any nasforge data set (digits, an image folder); flips only on "
                    "Fashion-MNIST, as nasforge's default")
    ap.add_argument("--flip", choices=("auto", "on", "off"), default="auto",
                    help="random horizontal flips: auto = what nasforge's default_augment "
                    "says for this data set; on / off: the designer's own call")
    args = ap.parse_args(argv)
    clock = R.Clock(args.budget)
    R.setup(args.seed)
    data = R.load(args.seed, args.dataset)
    from nasforge.data import default_augment

    R.RECIPE["flip"] = (default_augment(data) == "flip" if args.flip == "auto"
                        else args.flip == "on")
    x, y = R.all_train(data)
    model = HandCNN(data.input_shape[0], data.num_classes, tuple(data.input_shape[1:]))
    params = R.count_params(model)
    if args.dataset == "fashion-mnist":
        assert params == PARAMS, f"hand CNN has {params:,} parameters, expected {PARAMS:,}"
    reserve = max(TEST_RESERVE_S, R.test_seconds(model, data))
    secs = clock.left() - reserve
    start = clock.elapsed()
    print(f"training {params:,} params on {len(y)} images for {secs:.0f} s", flush=True)
    hist = R.train(model, x, y, seconds=max(1.0, secs), seed=args.seed)
    print(f"trained {hist['epochs']:.2f} epochs in {hist['seconds']:.0f} s", flush=True)
    res = R.test(model, data)
    wall = clock.elapsed()
    print(f"test accuracy {res['test_accuracy']:.4f}, {wall:.1f} s of {args.budget:.0f}",
          flush=True)
    R.write(args.out, {
        "system": "hand", "seed": args.seed, "dataset": args.dataset,
        "test_accuracy": res["test_accuracy"],
        "params": params, "trials": 1,
        "wall_s": wall,
        "notes": (f"{hist['epochs']:.2f} epochs on all {len(y)} images in "
                  f"{hist['seconds']:.0f} s (setup {start:.1f} s, test {res['test_s']:.1f} s of "
                  f"{reserve:.1f} s kept)"),
        "epochs": hist["epochs"], "train_s": hist["seconds"], "recipe": R.RECIPE,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    })
    return 0


if __name__ == "__main__":
    R.exit_now(main())
