"""Peer: AutoKeras 3 ``ImageClassifier`` (Keras 3 on the torch backend).

``ImageClassifier(max_trials=1)``: AutoKeras's first candidate for images (its task
tuner tries a known-good vanilla CNN first: conv 32 - conv 64 - max-pool - dropout -
flatten - dropout - dense, Adam 1e-3, input normalization), fitted on all 60k training
images as (N, 28, 28, 1) floats in [0, 1], batch 128, with a Keras callback that stops
training when the wall-clock budget (from process start), less the time kept for saving
and the test, is spent; then ``evaluate`` on the official 10k test set.

AutoKeras holds out a validation split and, after the search, retrains the winner from
scratch on all data -- with one trial that would spend half the budget on a training it
throws away. So it gets ``validation_data`` (a fixed 2,000 of the training images, only
used for keras-tuner's per-epoch checkpoint; there is nothing to select with one trial)
and an ``EarlyStopping`` with a patience it never reaches, which makes the trial's model
the final one, trained on all 60k for the whole budget.

Install next to torch 2.13.0 without replacing it: ``pip install autokeras==3.0.0
torch==2.13.0``. If AutoKeras cannot be imported or run, the JSON says why
(``test_accuracy`` null). Writes ``--out``:

    taskset -c 1 python3 benchmarks/peers/autokeras_peer.py --budget 900 --seed 0 --out r.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported, by anyone
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
import _recipe as R  # noqa: E402

BATCH = 128
#: seconds kept back at least for saving the best model, reloading it and the test
MIN_RESERVE_S = 15.0
#: training images also given as validation_data (keras-tuner's checkpoint needs one)
N_VAL = 2000


def _python_int_shapes(ak: Any) -> None:
    """AutoKeras 3.0.0 gives its layers numpy-int shapes, which keras >= 3.1x refuses
    ("units=10, expected a positive integer"): make them Python ints."""
    import tree

    def set_io_shapes(self: Any, shapes: Any) -> None:
        for node, shape in zip(self.inputs, tree.flatten(shapes[0]), strict=False):
            node.shape = tuple(int(d) for d in shape[1:])
        for node, shape in zip(self.outputs, tree.flatten(shapes[1]), strict=False):
            node.in_blocks[0].shape = tuple(int(d) for d in shape[1:])

    ak.graph.Graph.set_io_shapes = set_io_shapes


def reserve_s(batch_s: float | None, n_test: int = 10_000, n_val: int = N_VAL) -> float:
    """Time to keep for the end: the last validation pass, keras-tuner's checkpoint and
    model save, reloading the best model, the test. An image in a forward pass costs about
    half of a training image (measured with keras 3.15 on torch, one thread: 3 vs 6 ms);
    saving, loading and the export took ~5 s."""
    if batch_s is None:
        return MIN_RESERVE_S
    return max(MIN_RESERVE_S, 0.52 * batch_s * (n_test + n_val) / BATCH + 6.0)


def run(args: argparse.Namespace, clock: R.Clock, doc: dict[str, Any]) -> None:
    import numpy as np

    R.setup(args.seed)
    import autokeras as ak
    import keras

    _python_int_shapes(ak)

    data = R.load(args.seed)
    mean, std = float(data.mean[0]), float(data.std[0])

    def images(a: np.ndarray) -> np.ndarray:  # back to [0, 1], channels last
        return np.clip(a * std + mean, 0.0, 1.0).transpose(0, 2, 3, 1).astype(np.float32)

    xa, ya = R.all_train(data)
    x, y = images(xa), ya.astype(np.int64)
    xt, yt = images(data.x_test), data.y_test.astype(np.int64)
    vi = np.random.default_rng(args.seed).choice(len(y), N_VAL, replace=False)

    class Budget(keras.callbacks.Callback):
        """Stop training when the budget less the reserve is spent; the reserve follows
        the measured batch time (the first batch, with its warm-up, is left out)."""

        def __init__(self) -> None:
            super().__init__()
            self.t_batch = 0.0
            self.batch_s: float | None = None
            self.batches = 0

        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            doc["epochs_begun"] = epoch + 1

        def on_train_batch_begin(self, batch: int, logs: object = None) -> None:
            self.t_batch = time.monotonic()

        def on_train_batch_end(self, batch: int, logs: object = None) -> None:
            dt = time.monotonic() - self.t_batch
            self.batches += 1
            if self.batches == 2:
                self.batch_s = dt
            elif self.batches > 2:
                self.batch_s = 0.95 * self.batch_s + 0.05 * dt
            doc["batches"], doc["reserve_s"] = self.batches, reserve_s(self.batch_s)
            if clock.left() <= doc["reserve_s"] and not self.model.stop_training:
                self.model.stop_training = True
                doc["stopped_at_s"] = clock.elapsed()

    keras.utils.set_random_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="ak-") as tmp:
        clf = ak.ImageClassifier(max_trials=1, overwrite=True, directory=tmp, seed=args.seed)
        t = time.monotonic()
        clf.fit(x, y, epochs=1000, batch_size=BATCH, validation_data=(x[vi], y[vi]),
                callbacks=[Budget(), keras.callbacks.EarlyStopping(patience=10**6)],
                verbose=2)
        doc["train_s"] = time.monotonic() - t
        doc["fit_end_s"] = clock.elapsed()
        t = time.monotonic()
        _, acc = clf.evaluate(xt, yt, batch_size=500, verbose=0)[:2]
        doc["test_s"] = time.monotonic() - t
        doc["params"] = int(clf.export_model().count_params())
    doc["test_accuracy"] = float(acc)
    doc["notes"] = (f"keras {keras.__version__} (torch backend), autokeras {ak.__version__}; "
                    f"{doc.get('batches', 0)} batches of {BATCH} "
                    f"({doc.get('batches', 0) * BATCH / len(y):.2f} epochs) in "
                    f"{doc['train_s']:.0f} s, test {doc['test_s']:.1f} s of "
                    f"{doc.get('reserve_s', 0):.1f} s kept")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--budget", type=float, required=True, help="wall-clock seconds, all in")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="result JSON")
    args = ap.parse_args(argv)
    clock = R.Clock(args.budget)
    doc: dict[str, Any] = {"system": "autokeras", "seed": args.seed, "test_accuracy": None,
                           "params": None, "trials": 1}
    try:
        run(args, clock, doc)
    except Exception as e:  # noqa: BLE001 - the runner reports why this peer has no number
        doc["test_accuracy"] = None
        doc["notes"] = f"failed: {type(e).__name__}: {e}"
        doc["error"] = traceback.format_exc(limit=8)
        print(doc["error"], file=sys.stderr)
    doc["wall_s"] = clock.elapsed()
    doc["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    R.write(args.out, doc)
    print(f"autokeras: test {doc['test_accuracy']} in {doc['wall_s']:.0f} s "
          f"({doc.get('notes')})", flush=True)
    return 0


if __name__ == "__main__":
    R.exit_now(main())
