"""OFA end to end (:func:`run_ofa`: train or load, specialize, export) and ``nasforge ofa``."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import torch
import typer  # the CLI options below are evaluated by typer from this module's globals

from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.oneshot.ofa.shrink import _phase_epochs, check_sandwich, train_progressive
from nasforge.oneshot.ofa.specialize import (
    Constraint,
    CostModel,
    Specialization,
    SubnetEvaluator,
    specialize,
)
from nasforge.oneshot.ofa.supernet import PHASES, OFASupernet, load_supernet, save_supernet
from nasforge.spaces.base import Arch
from nasforge.spaces.mobile import MobileSpace

if TYPE_CHECKING:
    from nasforge.data import Dataset


# --------------------------------------------------------------------------- end to end
@dataclass
class OFAResult:
    """What :func:`run_ofa` did: the chosen sub-network, the search, the exported model."""

    arch: str
    run_dir: Path
    model_dir: Path | None
    constraint: Constraint
    final: dict[str, Any] = field(default_factory=dict)
    search: Specialization | None = None
    supernet_history: dict[str, Any] | None = None
    supernet_dir: Path | None = None
    search_time_s: float = 0.0
    total_time_s: float = 0.0


def run_ofa(
    dataset: str | Dataset = "auto",
    *,
    max_latency_ms: float | None = None,
    max_params: int | None = None,
    out: str | os.PathLike[str] | None = None,
    space: MobileSpace | None = None,
    width_mult: float = 0.5,
    supernet: OFASupernet | str | os.PathLike[str] | None = None,
    data_dir: str | None = None,
    image_size: int | None = None,
    max_train: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    phase_epochs: Mapping[str, int] | Sequence[int] | int = (2, 1, 1, 1),
    batch_size: int = 64,
    lr: float = 0.05,
    shrink_lr: float | None = None,
    subnets_per_step: int = 1,
    kd_ratio: float = 0.0,
    sandwich: bool = False,
    inplace_kd: bool = False,
    kernel_transform: bool = True,
    data_fraction: float = 1.0,
    strategy: str = "evolution",
    candidates: int = 50,
    population_size: int = 16,
    calib_batches: int = 8,
    max_val: int | None = 2000,
    latency_threads: int | None = 1,
    latency_repeats: int = 20,
    finetune_epochs: int = 0,
    finetune_lr: float = 0.01,
    onnx: bool = True,
    device: str = "cpu",
    log: Callable[[str], Any] | None = None,
) -> OFAResult:
    """Train an OFA supernet (or load one), specialize it for a budget, export the winner.

    The constraint is ``max_latency_ms`` (measured CPU latency, batch 1, median, with
    ``latency_threads`` threads) and/or ``max_params``. ``supernet`` reuses a trained one
    (an :class:`OFASupernet` or the ``RUN_DIR/supernet`` folder of an earlier run) instead
    of training with :func:`train_progressive`; a newly trained one is saved to
    ``out/supernet``. Every sub-network evaluated by :func:`specialize` is a trial in
    ``out/nasforge.db``; the best is extracted (BN recalibrated), tested once on the test
    split, optionally fine-tuned for ``finetune_epochs`` at ``finetune_lr`` (and tested
    again), and exported to ``out/best``.
    """
    from nasforge.experiment import default_run_dir
    from nasforge.oneshot import _load_data, _run_store
    from nasforge.run.finalize import _test_metrics, finish_model

    say = log or (lambda _msg: None)
    constraint = Constraint(max_params=max_params, max_latency_ms=max_latency_ms)
    for name, v, lo in (("candidates", candidates, 1), ("finetune_epochs", finetune_epochs, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise NasforgeError(f"{name} must be an integer >= {lo}, got {v!r}")
    if strategy not in ("evolution", "random"):
        raise NasforgeError(f"strategy must be 'evolution' or 'random', not {strategy!r}")
    pe = _phase_epochs(phase_epochs)
    check_sandwich(sandwich, inplace_kd)
    t_start = time.perf_counter()
    data, ds_cfg = _load_data(dataset, data_dir=data_dir, image_size=image_size,
                              max_train=max_train, val_fraction=val_fraction,
                              seed=seed)  # fmt: skip
    sn: OFASupernet | None = None
    if supernet is not None:
        sn = supernet if isinstance(supernet, OFASupernet) else load_supernet(supernet)
        if sn.input_shape != data.input_shape or sn.num_classes != data.num_classes:
            raise NasforgeError(
                f"the supernet takes {sn.input_shape} inputs and {sn.num_classes} classes, "
                f"the data set has {data.input_shape} and {data.num_classes}"
            )
        space = sn.space
    elif space is None:
        space = MobileSpace(width_mult=width_mult)
    elif not isinstance(space, MobileSpace):
        raise NasforgeError("Once-for-All searches the mobile space; pass a MobileSpace")
    settings: dict[str, Any] = {
        "method": "ofa", "phase_epochs": pe, "batch_size": batch_size, "lr": lr,
        "shrink_lr": lr / 2 if shrink_lr is None else shrink_lr,
        "subnets_per_step": subnets_per_step, "kd_ratio": kd_ratio,
        "sandwich": sandwich, "inplace_kd": inplace_kd,
        "kernel_transform": kernel_transform if sn is None else sn.kernel_transform,
        "data_fraction": data_fraction, "pretrained_supernet": sn is not None,
        "strategy": strategy, "candidates": candidates, "population_size": population_size,
        "calib_batches": calib_batches, "max_val": max_val, "latency_threads": latency_threads,
        "latency_repeats": latency_repeats, "finetune_epochs": finetune_epochs,
        "finetune_lr": finetune_lr, "onnx": onnx, "device": device,
        "constraint": constraint.to_json(),
    }  # fmt: skip
    run_dir = Path(out) if out is not None else default_run_dir("mobile-ofa")
    with _run_store(run_dir, dataset=ds_cfg, space=space, strategy=f"ofa-{strategy}",
                    estimator=SubnetEvaluator.name, seed=seed,
                    settings=settings) as store:  # fmt: skip
        res = OFAResult("", run_dir, None, constraint)
        if sn is None:
            torch.manual_seed(seed)
            sn = OFASupernet(space, data.input_shape, data.num_classes, kernel_transform)
            say(f"OFA: progressive shrinking {pe} epochs on {len(data.y_train)} examples")
            hist = train_progressive(
                sn, data, pe, batch_size=batch_size, lr=lr, shrink_lr=shrink_lr,
                subnets_per_step=subnets_per_step, kd_ratio=kd_ratio,
                sandwich=sandwich, inplace_kd=inplace_kd,
                data_fraction=data_fraction, seed=seed, device=device,
                on_epoch=lambda p, e, r: say(f"  {p} epoch {e}: train loss {r['train_loss']:.3f}"),
            )  # fmt: skip
            res.supernet_history = hist
            res.supernet_dir = save_supernet(sn, run_dir / "supernet")
            store.set_meta(supernet=hist)
        evaluator = SubnetEvaluator(sn, data, calib_batches=calib_batches, batch_size=batch_size,
                                    max_val=max_val, seed=seed, device=device)  # fmt: skip
        costs = CostModel(space, data.input_shape, data.num_classes, latency=True,
                          threads=latency_threads, repeats=latency_repeats)  # fmt: skip
        say(f"OFA: specializing for {constraint.describe()} ({strategy}, {candidates} candidates)")

        told = [0]

        def on_start(arch: Arch, st: dict[str, Any]) -> int:
            return store.start_trial(arch.text, arch.to_json(), None, st, told[0])

        def on_finish(tid: int, arch: Arch, result: Result, st: dict[str, Any]) -> None:
            told[0] += 1
            store.finish_trial(tid, result, st, told[0])
            m = result.metrics
            say(f"  trial {tid}: inherited val acc {m.get('val_accuracy', float('nan')):.3f}  "
                f"{m.get('latency_ms', float('nan')):.2f} ms  {int(m.get('params', 0)):,} params"
                f"  {arch.text}")  # fmt: skip

        search = specialize(evaluator, costs, constraint, strategy=strategy,
                            num_candidates=candidates, population_size=population_size,
                            seed=seed, on_start=on_start, on_finish=on_finish)  # fmt: skip
        res.search = search
        res.arch = search.best.text
        res.search_time_s = time.perf_counter() - t_start
        store.set_meta(status="searched", elapsed_s=res.search_time_s,
                       latency_table=costs.to_json(), rejected=search.rejected)  # fmt: skip
        say(f"OFA: chose {search.best.text} (inherited val acc "
            f"{search.best_metrics['val_accuracy']:.3f})")  # fmt: skip

        # the chosen sub-network: inherited weights, tested once; optionally fine-tuned
        # (and tested again); exported by the step every path ends with
        store.set_meta(status="final_training")
        model = evaluator.extract(search.best).to("cpu").eval()
        best = search.best_metrics
        known: dict[str, Any] = {
            "inherited_val_accuracy": best["val_accuracy"],
            "finetune_epochs": finetune_epochs,
        }
        if best.get("latency_ms") is not None:  # what the budget was checked on
            known["latency_ms"] = best["latency_ms"]
        train: dict[str, Any] | None = None
        if finetune_epochs > 0:
            inh = _test_metrics(model, data, device)
            known.update({f"inherited_{k}": v for k, v in inh.items()})
            train = {"epochs": finetune_epochs, "batch_size": batch_size, "lr": finetune_lr,
                     "seed": seed, "device": device}
            say(f"fine-tuning {search.best.text} for {finetune_epochs} epoch(s)")
        else:
            known["val_accuracy"] = best["val_accuracy"]

        def review(m: dict[str, Any]) -> bool:
            if train is not None:
                m["finetune_time_s"] = m["train_time_s"]
            return True

        extra = {"method": "ofa", "constraint": constraint.to_json(),
                 "search_time_s": res.search_time_s, "run_dir": str(store.run_dir),
                 "supernet": str(res.supernet_dir) if res.supernet_dir else None}  # fmt: skip
        final, model_dir = finish_model(
            model, search.best, space, data, store.run_dir / "best", train=train,
            metrics=known, alias=None if train else "inherited_", review=review, extra=extra,
            onnx=onnx, device=device, threads=latency_threads, repeats=latency_repeats,
            say=say,
        )  # fmt: skip
        assert model_dir is not None  # the review accepts every model
        res.final, res.model_dir = final, model_dir
        best_tid = next((t.id for t in store.trials() if t.arch == search.best.text), None)
        store.set_meta(final={"arch": search.best.text, "trial_id": best_tid, "metrics": final,
                              "model_dir": str(model_dir)})  # fmt: skip
        say(f"final: test accuracy {final['test_accuracy']:.4f}; model in {model_dir}")
        res.total_time_s = time.perf_counter() - t_start
        store.set_meta(status="finished", elapsed_s=res.total_time_s)
        return res


# ---------------------------------------------------------------------------------- CLI
def _parse_phase_epochs(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        vals = []
    if len(vals) not in (1, len(PHASES)):
        raise NasforgeError(
            f"--phase-epochs must be one number or {len(PHASES)} comma-separated numbers "
            f"({','.join(PHASES)}), e.g. 2,1,1,1; got {text!r}"
        )
    return vals * len(PHASES) if len(vals) == 1 else vals


def register_cli(app: typer.Typer) -> None:
    """Add ``nasforge ofa`` to ``app``."""

    @app.command("ofa")
    def ofa_cmd(
        dataset: Annotated[
            str, typer.Option(help="fashion-mnist, digits, auto or a folder.")
        ] = "auto",
        max_latency_ms: Annotated[
            float | None,
            typer.Option(help="Latency budget: CPU, batch 1, median ms (measured here)."),
        ] = None,
        max_params: Annotated[int | None, typer.Option(help="Parameter budget.")] = None,
        out: Annotated[Path | None, typer.Option(help="Run directory (default runs/...).")] = None,
        supernet: Annotated[
            Path | None,
            typer.Option(help="Reuse the trained supernet of an earlier run (RUN_DIR/supernet)."),
        ] = None,
        width_mult: Annotated[float, typer.Option(help="Width multiplier of the space.")] = 0.5,
        phase_epochs: Annotated[
            str, typer.Option(help="Epochs per phase: largest,kernel,depth,expand.")
        ] = "2,1,1,1",
        kd_ratio: Annotated[float, typer.Option(help="Distillation from the largest net.")] = 0.0,
        sandwich: Annotated[
            bool, typer.Option(help="Sandwich rule: also train the largest and smallest each step.")
        ] = False,
        inplace_kd: Annotated[
            bool, typer.Option(help="In-place distillation from the step's largest (--sandwich).")
        ] = False,
        candidates: Annotated[int, typer.Option(help="Sub-networks to evaluate.")] = 50,
        strategy: Annotated[str, typer.Option(help="evolution or random.")] = "evolution",
        finetune_epochs: Annotated[int, typer.Option(help="Fine-tune the winner (0: no).")] = 0,
        max_val: Annotated[int, typer.Option(help="Validation examples per score.")] = 2000,
        latency_threads: Annotated[int, typer.Option(help="Threads for latency.")] = 1,
        image_size: Annotated[int | None, typer.Option(help="Resize images to this side.")] = None,
        max_train: Annotated[int | None, typer.Option(help="Cap the training pool.")] = None,
        batch_size: Annotated[int, typer.Option(help="Batch size.")] = 64,
        data_dir: Annotated[str | None, typer.Option(help="Where the data set lives.")] = None,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        onnx: Annotated[bool, typer.Option(help="Also export model.onnx.")] = True,
        device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
    ) -> None:
        """Once-for-All on the mobile space: train once, specialize for a budget, export."""
        import sys

        res = run_ofa(
            dataset, max_latency_ms=max_latency_ms, max_params=max_params, out=out,
            supernet=supernet, width_mult=width_mult,
            phase_epochs=_parse_phase_epochs(phase_epochs), kd_ratio=kd_ratio,
            sandwich=sandwich, inplace_kd=inplace_kd,
            candidates=candidates, strategy=strategy, finetune_epochs=finetune_epochs,
            max_val=max_val, latency_threads=latency_threads, image_size=image_size,
            max_train=max_train, batch_size=batch_size, data_dir=data_dir, seed=seed,
            onnx=onnx, device=device, log=lambda m: print(m, file=sys.stderr, flush=True),
        )  # fmt: skip
        f = res.final
        print(f"best architecture: {res.arch}")
        lat = f.get("latency_ms")
        print(f"params: {int(f['params']):,}" + (f"  latency: {lat:.2f} ms" if lat else ""))
        print(f"test accuracy: {f['test_accuracy']:.4f} (inherited weights: "
              f"{f['inherited_test_accuracy']:.4f})")  # fmt: skip
        if res.model_dir is not None:
            print(f"model: {res.model_dir}  (nasforge predict {res.model_dir} IMAGE.png)")
        if res.supernet_dir is not None:
            print(f"supernet: {res.supernet_dir}  (reuse with --supernet)")
