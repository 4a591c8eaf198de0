"""``nasforge oneshot``: SPOS, DARTS or GDAS from the command line (see :mod:`nasforge.oneshot`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer  # the options below are evaluated by typer from this module's globals


def register_cli(app: typer.Typer) -> None:
    """Add ``nasforge oneshot`` to ``app``."""

    @app.command("oneshot")
    def oneshot_cmd(
        method: Annotated[str, typer.Option(help="spos, darts or gdas.")] = "spos",
        dataset: Annotated[
            str, typer.Option(help="fashion-mnist, digits, auto or a folder.")
        ] = "auto",
        out: Annotated[Path | None, typer.Option(help="Run directory (default runs/...).")] = None,
        C: Annotated[int, typer.Option("--C", help="nb201 channels of the first stage.")] = 8,
        N: Annotated[int, typer.Option("--N", help="nb201 cells per stage.")] = 1,
        epochs: Annotated[
            int, typer.Option(help="Supernet (SPOS) or search (DARTS/GDAS) epochs.")
        ] = 10,
        candidates: Annotated[int, typer.Option(help="SPOS: sub-networks to score.")] = 50,
        strategy: Annotated[str, typer.Option(help="SPOS: evolution or random.")] = "evolution",
        sampling: Annotated[str, typer.Option(
            help="SPOS supernet paths: uniform (one per step) or fair (FairNAS: every op "
                 "of every edge once per step).")] = "uniform",
        order: Annotated[int, typer.Option(help="DARTS: 1 or 2 (second order).")] = 1,
        mitigation: Annotated[
            str, typer.Option(help="DARTS/GDAS collapse mitigation: none, early-stop, darts-minus, "
                             "beta-decay.")
        ] = "none",
        alpha_lr: Annotated[float, typer.Option(help="DARTS/GDAS: Adam lr of alpha.")] = 3e-4,
        final_epochs: Annotated[int, typer.Option(help="Epochs to retrain the winner.")] = 10,
        image_size: Annotated[int | None, typer.Option(help="Resize images to this side.")] = None,
        max_train: Annotated[int | None, typer.Option(help="Cap the training pool.")] = None,
        batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
        data_dir: Annotated[str | None, typer.Option(help="Where the data set lives.")] = None,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        onnx: Annotated[bool, typer.Option(help="Also export model.onnx.")] = True,
        device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
        resume: Annotated[
            bool, typer.Option(help="Continue the (killed) run in --out; same options.")
        ] = False,
        checkpoint_every: Annotated[
            int | None, typer.Option(help="SPOS: also checkpoint the supernet every N steps.")
        ] = None,
    ) -> None:
        """Weight-sharing search on nb201: SPOS, DARTS or GDAS; exports RUN_DIR/best."""
        import sys

        from nasforge.oneshot import run_oneshot

        res = run_oneshot(
            method, dataset, out=out, C=C, N=N, epochs=epochs, candidates=candidates,
            strategy=strategy, order=order, sampling=sampling.lower(),
            mitigation=None if mitigation.lower() == "none" else mitigation,
            alpha_lr=alpha_lr, final_epochs=final_epochs, image_size=image_size,
            max_train=max_train, batch_size=batch_size, data_dir=data_dir, seed=seed,
            onnx=onnx, device=device, log=lambda m: print(m, file=sys.stderr, flush=True),
            resume=resume, checkpoint_every=checkpoint_every,
        )  # fmt: skip
        print(f"best architecture: {res.arch}")
        if res.final:
            print(f"test accuracy: {res.final['test_accuracy']:.4f}")
        if res.model_dir is not None:
            print(f"model: {res.model_dir}  (nasforge predict {res.model_dir} IMAGE.png)")
