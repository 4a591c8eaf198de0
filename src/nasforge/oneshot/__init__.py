"""Weight-sharing NAS on the ``nb201`` cell: SPOS, DARTS (1st/2nd order) and GDAS.

:func:`run_oneshot` runs one of them end to end the way ``nasforge.search`` runs the
other strategies: every evaluated sub-network (SPOS) or every epoch's derived
architecture (DARTS/GDAS) is a trial in the run store (``RUN_DIR/nasforge.db``, so
``nasforge show RUN_DIR`` works), and the winner is retrained from scratch and exported
to ``RUN_DIR/best`` (so ``nasforge.load(RUN_DIR / "best").predict(...)`` works).
``register_cli`` adds ``nasforge oneshot``.

Resuming: SPOS writes ``RUN_DIR/supernet.ckpt`` (:mod:`~nasforge.oneshot.checkpoint`) at
every supernet epoch end (and every ``checkpoint_every`` steps), and the search stores
every trial with the strategy's and the calibration sampler's state. DARTS and GDAS
write it at every search epoch end (weights, ``alpha``, both optimizers, the schedule's
step, the torch/Gumbel/numpy generator states, the collapse detector, the per-epoch
history). After a crash, Ctrl-C or ``kill -9``, ``run_oneshot(..., out=RUN_DIR,
resume=True)`` (``nasforge oneshot ... --out RUN_DIR --resume``) with the options the run
was started with continues from the last checkpoint, skips the trials already stored
(an epoch checkpointed but not yet stored is stored then, in order), and picks the same
architecture as an uninterrupted run would have (same seed, same machine).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nasforge.errors import NasforgeError, RunDirError
from nasforge.oneshot.checkpoint import CHECKPOINT_NAME
from nasforge.oneshot.darts import (
    CollapseDetector,
    DartsSupernet,
    GradientSearch,
    darts_search,
    derive_arch,
    gumbel_path,
    skip_dominance,
)
from nasforge.oneshot.spos import (
    InheritedWeightsEstimator,
    SposSearch,
    spos_search,
    train_supernet,
)
from nasforge.oneshot.supernet import (
    GumbelPath,
    MixedCell,
    Supernet,
    path_indices,
    path_to_arch,
    recalibrate_bn,
)

if TYPE_CHECKING:
    from nasforge.data import Dataset
    from nasforge.spaces.nb201 import NB201Space
    from nasforge.store import RunStore

METHODS = ("spos", "darts", "gdas")


@dataclass
class OneShotResult:
    """What :func:`run_oneshot` did: the winner, the search, the final model's metrics."""

    method: str
    arch: str
    run_dir: Path
    model_dir: Path | None
    final: dict[str, Any] = field(default_factory=dict)
    search: SposSearch | GradientSearch | None = None
    supernet_history: dict[str, Any] | None = None
    search_time_s: float = 0.0
    total_time_s: float = 0.0
    #: SPOS: the trained supernet and its inherited-weights scorer (in memory only)
    supernet: Supernet | None = field(default=None, repr=False)
    estimator: InheritedWeightsEstimator | None = field(default=None, repr=False)


def _load_data(
    dataset: str | Dataset,
    *,
    data_dir: str | None,
    image_size: int | None,
    max_train: int | None,
    val_fraction: float,
    seed: int,
) -> tuple[Dataset, dict[str, Any]]:
    """The data set of a one-shot run (SPOS/DARTS/GDAS, OFA) and its run-config entry.

    Weight-sharing search is classification-only (its supernets take ``num_classes``):
    any other task is refused here, before a run directory is made or anything trained.
    """
    from nasforge.data import Dataset, load_dataset

    if isinstance(dataset, Dataset):
        data = dataset
        entry = {"name": dataset.name, "in_memory": True, "data_dir": None, "options": {}}
    else:
        opts = {"image_size": image_size, "max_train": max_train, "val_fraction": val_fraction}
        data = load_dataset(str(dataset), data_dir=data_dir, seed=seed, **opts)
        entry = {"name": str(dataset), "resolved": data.name, "in_memory": False,
                 "data_dir": data_dir, "options": opts}  # fmt: skip
    if data.task != "classification":
        raise NasforgeError(
            f"weight-sharing search (SPOS, DARTS, GDAS, OFA) is classification-only (its "
            f"supernets take num_classes), but {data.name!r} is a {data.task} data set; "
            "search it with nasforge.search instead"
        )
    return data, entry


_IDENTITY = ("kind", "dataset", "space", "strategy", "estimator", "seed", "oneshot")


def _config_diff(stored: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """What differs between a stored one-shot run's configuration and the one given now."""
    import json

    out = []
    for k in _IDENTITY:
        a, b = stored.get(k), json.loads(json.dumps(fresh.get(k)))  # as the store has it
        if k == "dataset" and isinstance(a, dict) and isinstance(b, dict):
            a = {kk: v for kk, v in a.items() if kk != "resolved"}
            b = {kk: v for kk, v in b.items() if kk != "resolved"}
        if a != b:
            out.append(f"{k}: stored {json.dumps(a, sort_keys=True)} != given "
                       f"{json.dumps(b, sort_keys=True)}")
    return out


@contextmanager
def _run_store(
    run_dir: Path,
    *,
    dataset: dict[str, Any],
    space: Any,
    strategy: str,
    estimator: str,
    seed: int,
    settings: dict[str, Any],
    resume: bool = False,
) -> Iterator[RunStore]:
    """Create a one-shot run's store, or reopen it to resume (the configuration must
    match); status ``running`` while it works, how it ended afterwards; close it."""
    from nasforge.store import RunStore

    config = {
        "kind": "oneshot",
        "dataset": dataset,
        "space": {"name": space.name, "options": space.config()},
        "strategy": {"name": strategy, "options": {"metric": "val_accuracy", "mode": "max"}},
        "estimator": {"name": estimator, "options": {}},
        "seed": seed,
        "oneshot": settings,
    }
    again = (f"`nasforge oneshot --out {run_dir} --resume` with the options it was started "
             "with (resume=True in Python)")
    if not RunStore.exists(run_dir):
        store = RunStore.create(run_dir, config)
    elif not resume:
        raise RunDirError(f"a run already exists in {run_dir}. Continue it with {again}, or "
                          "choose another --out directory.")
    else:
        store = RunStore.open(run_dir, write=True)
        try:
            stored = store.config
            if stored.get("kind") != "oneshot":
                raise RunDirError(f"{run_dir} is a {stored.get('kind', 'search')!r} run, not a "
                                  f"one-shot one: continue it with `nasforge resume {run_dir}`")
            diff = _config_diff(stored, config)
            if diff:
                raise RunDirError(
                    f"cannot resume {run_dir} with a different configuration:\n  "
                    + "\n  ".join(diff)
                    + f"\nContinue it as it was with {again}, or choose another --out "
                    "directory."
                )
        except BaseException:
            store.close()
            raise
    try:
        if store.get_meta("status") != "finished":
            store.set_meta(status="running")
        yield store
    except BaseException as e:
        try:
            store.set_meta(status="interrupted" if isinstance(e, KeyboardInterrupt) else "error")
        except Exception:  # noqa: BLE001 - keep the original error
            pass
        raise
    finally:
        store.close()


def run_oneshot(
    method: str = "spos",
    dataset: str | Dataset = "auto",
    *,
    out: str | os.PathLike[str] | None = None,
    space: NB201Space | None = None,
    C: int = 8,
    N: int = 1,
    data_dir: str | None = None,
    image_size: int | None = None,
    max_train: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    epochs: int = 10,
    batch_size: int = 64,
    data_fraction: float = 1.0,
    lr: float | None = None,
    # SPOS
    candidates: int = 50,
    strategy: str = "evolution",
    calib_batches: int = 8,
    max_val: int | None = None,
    sampling: str = "uniform",
    # DARTS / GDAS
    order: int = 1,
    mitigation: str | None = None,
    skip_threshold: float = 0.5,
    alpha_lr: float = 3e-4,
    exclude_none: bool = False,
    # final model
    final_train: bool = True,
    final_epochs: int = 10,
    final_init: str = "scratch",
    onnx: bool = True,
    device: str = "cpu",
    log: Callable[[str], Any] | None = None,
    resume: bool = False,
    checkpoint_every: int | None = None,
) -> OneShotResult:
    """Run SPOS, DARTS or GDAS on the nb201 space, store the trials, export the winner.

    ``epochs`` is the supernet training (SPOS) or search (DARTS/GDAS) length; ``lr`` the
    weights' learning rate (default 0.05 for SPOS, 0.025 for DARTS/GDAS). SPOS then
    tries ``candidates`` sub-networks with ``strategy`` (``evolution`` or ``random``),
    each scored with inherited weights after BN recalibration on ``calib_batches``
    training batches; ``sampling="fair"`` trains the supernet with FairNAS's strict
    fairness (every op of every edge once per step) instead of one uniform path. The
    winner is trained for ``final_epochs`` from scratch
    (``final_init="scratch"``) or, for SPOS, fine-tuned from its inherited weights
    (``"inherited"``), tested once on the test split, and exported to ``out/best``
    (with ``model.onnx`` unless ``onnx=False``).

    ``resume=True`` continues the run in ``out`` (killed, interrupted or failed) with the
    same options; a finished run is returned as stored. SPOS checkpoints its supernet at
    every epoch end and, with ``checkpoint_every``, every that many steps too; DARTS and
    GDAS checkpoint their search at every epoch end.
    """
    from nasforge.run.api import default_run_dir
    from nasforge.spaces.nb201 import NB201Space

    say = log or (lambda _msg: None)
    method = method.lower().strip()
    if method not in METHODS:
        raise NasforgeError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    if final_init not in ("scratch", "inherited"):
        raise NasforgeError(f"final_init must be 'scratch' or 'inherited', not {final_init!r}")
    if final_init == "inherited" and method != "spos":
        raise NasforgeError("final_init='inherited' needs SPOS (a DARTS supernet has no affine BN)")
    for name, v in (("epochs", epochs), ("final_epochs", final_epochs), ("candidates", candidates)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise NasforgeError(f"{name} must be an integer >= 1, got {v!r}")
    if resume and out is None:
        raise NasforgeError("resume=True needs out= (the run directory to continue)")
    if space is None:
        space = NB201Space(C=C, N=N)
    elif not isinstance(space, NB201Space):
        raise NasforgeError("one-shot methods search the nb201 space; pass an NB201Space")
    t_start = time.perf_counter()
    data, ds_cfg = _load_data(dataset, data_dir=data_dir, image_size=image_size,
                              max_train=max_train, val_fraction=val_fraction,
                              seed=seed)  # fmt: skip
    w_lr = lr if lr is not None else (0.05 if method == "spos" else 0.025)
    settings: dict[str, Any] = {
        "method": method, "epochs": epochs, "batch_size": batch_size, "lr": w_lr,
        "data_fraction": data_fraction, "final_train": final_train,
        "final_epochs": final_epochs, "final_init": final_init, "onnx": onnx, "device": device,
    }  # fmt: skip
    if method == "spos":
        settings.update(candidates=candidates, strategy=strategy, calib_batches=calib_batches,
                        max_val=max_val)  # fmt: skip
        if sampling not in ("uniform", "fair"):
            raise NasforgeError(f"sampling must be 'uniform' or 'fair', not {sampling!r}")
        if sampling != "uniform":  # only then: runs stored before keep resuming
            settings["sampling"] = sampling
    else:
        settings.update(order=order, mitigation=mitigation, skip_threshold=skip_threshold,
                        alpha_lr=alpha_lr, exclude_none=exclude_none)  # fmt: skip
    est_name = "inherited" if method == "spos" else "supernet-derived"
    run_dir = Path(out) if out is not None else default_run_dir(f"nb201-{method}")
    with _run_store(run_dir, dataset=ds_cfg, space=space,
                    strategy=method if method != "spos" else f"spos-{strategy}",
                    estimator=est_name, seed=seed, settings=settings,
                    resume=resume) as store:  # fmt: skip
        res = OneShotResult(method, "", run_dir, None)
        if store.get_meta("status") == "finished":
            return _finished(store, res, say)
        inherited: tuple[Any, Any] | None = None
        if method == "spos":
            arch, inherited = _run_spos(store, space, data, res, settings, seed, say,
                                        checkpoint_every=checkpoint_every)  # fmt: skip
            res.supernet, res.estimator = inherited
        else:
            arch = _run_gradient(store, space, data, res, settings, seed, say)
        res.arch = arch.text
        store.set_meta(oneshot_arch=arch.text)
        res.search_time_s = time.perf_counter() - t_start
        store.set_meta(status="searched", elapsed_s=res.search_time_s)
        if final_train:
            store.set_meta(status="final_training")
            res.final, res.model_dir = _final_model(store, space, data, arch, res, settings,
                                                    seed, say, inherited)  # fmt: skip
        res.total_time_s = time.perf_counter() - t_start
        store.set_meta(status="finished", elapsed_s=res.total_time_s)
        return res


def _finished(store: Any, res: OneShotResult, say: Callable[[str], Any]) -> OneShotResult:
    """A resumed run that had already finished: what it stored, nothing redone."""
    meta = store.meta()
    final = meta.get("final") or {}
    res.arch = str(meta.get("oneshot_arch") or final.get("arch") or "")
    res.final = dict(final.get("metrics") or {})
    res.model_dir = Path(final["model_dir"]) if final.get("model_dir") else None
    res.supernet_history = meta.get("supernet")
    res.search_time_s = res.total_time_s = float(meta.get("elapsed_s") or 0.0)
    say(f"the run in {store.run_dir} has already finished (best {res.arch}); nothing to "
        "resume")
    return res


def _run_spos(
    store: Any,
    space: NB201Space,
    data: Dataset,
    res: OneShotResult,
    s: dict[str, Any],
    seed: int,
    say: Callable[[str], Any],
    checkpoint_every: int | None = None,
) -> tuple[Any, tuple[Supernet, InheritedWeightsEstimator]]:
    """Train the supernet, search it with inherited weights; the winner and what scored it.

    Continues a run's stored work: the supernet from its checkpoint, the search from the
    stored trials and strategy state (a trial that was running is scored again, same id).
    """
    import torch

    torch.manual_seed(seed)
    supernet = Supernet(space, data.input_shape, data.num_classes)
    ckpt = Path(store.run_dir) / CHECKPOINT_NAME
    # a checkpoint is this run's own only once this run began training (not a stale file)
    cont = bool(store.get_meta("spos_training")) and ckpt.exists()
    store.set_meta(spos_training=True)
    verb = "continuing" if cont else "training"
    say(f"SPOS: {verb} the supernet for {s['epochs']} epochs on {len(data.y_train)} examples")
    hist = train_supernet(
        supernet, data, s["epochs"], batch_size=s["batch_size"], lr=s["lr"],
        data_fraction=s["data_fraction"], seed=seed, device=s["device"],
        on_epoch=lambda e, r: say(f"  epoch {e}: train loss {r['train_loss']:.3f}"),
        checkpoint=ckpt, checkpoint_every=checkpoint_every,
        resume=cont, sampling=s.get("sampling", "uniform"),
    )  # fmt: skip
    res.supernet_history = hist
    store.set_meta(supernet={k: v for k, v in hist.items()})
    est = InheritedWeightsEstimator(
        supernet, data, calib_batches=s["calib_batches"], batch_size=s["batch_size"],
        max_val=s["max_val"], seed=seed, device=s["device"],
    )  # fmt: skip
    say(f"SPOS: scoring {s['candidates']} sub-networks ({s['strategy']}) with inherited weights")

    def on_ask(strat: Any, sug: Any) -> int:
        return store.start_trial(sug.arch.text, sug.arch.to_json(), None, strat.state_dict(),
                                 strat.n_told, note=sug.note)  # fmt: skip

    def on_tell(strat: Any, sug: Any, result: Any, trial_id: int) -> None:
        # the calibration sampler's state goes with the trial: a resumed search draws the
        # same calibration batches for the next candidate
        store.finish_trial(trial_id, result, strat.state_dict(), strat.n_told,
                           meta={"spos_calib_rng": est.rng.bit_generator.state})
        acc = result.metrics.get("val_accuracy", float("nan"))
        say(f"  trial {trial_id}: inherited val acc {acc:.3f}  {sug.arch.text}")

    strat, previous = _resumed_search(store, space, est, s, seed, on_tell, say)
    search = spos_search(supernet, est, strategy=strat, num_candidates=s["candidates"],
                         seed=seed, on_ask=on_ask, on_tell=on_tell,
                         previous=previous)  # fmt: skip
    res.search = search
    say(f"SPOS: best {search.best.text} (inherited val acc {search.best_score:.3f})")
    return search.best, (supernet, est)


def _resumed_search(
    store: Any,
    space: NB201Space,
    est: InheritedWeightsEstimator,
    s: dict[str, Any],
    seed: int,
    on_tell: Callable[[Any, Any, Any, int], None],
    say: Callable[[str], Any],
) -> tuple[Any, list[tuple[Any, Any]]]:
    """The SPOS strategy as the stored run left it, and the trials it already has (in ask
    order; one left running by a crash is scored again first, under its id)."""
    from nasforge import strategies
    from nasforge.estimators.base import Result
    from nasforge.strategies.base import Suggestion

    strat = strategies.get(s["strategy"], space=space, seed=seed)
    state, _ = store.strategy_state()
    if state is None:
        return strat, []
    trials = store.trials()
    try:
        strat.load_state_dict(state, trials)
    except RunDirError as e:
        raise RunDirError(f"{store.run_dir}: {e}") from None
    if strat.n_told != store.n_completed():
        raise RunDirError(f"the run in {store.run_dir} is inconsistent: the strategy was told "
                          f"{strat.n_told} results but {store.n_completed()} trials are complete")
    calib = store.get_meta("spos_calib_rng")
    if calib is not None:
        try:
            est.rng.bit_generator.state = calib
        except (TypeError, ValueError, KeyError) as e:
            raise RunDirError(f"the run in {store.run_dir} is damaged: the stored calibration "
                              f"sampler state is invalid ({e})") from None
    previous = [(space.parse(t.arch), Result(dict(t.metrics), float(t.cost or 0.0), t.status,
                                             t.error, dict(t.report)))
                for t in trials if t.done]  # fmt: skip
    if previous:
        say(f"SPOS: {len(previous)} trials already stored, continuing the search")
    for t in store.trials("running"):
        sug = Suggestion(space.parse(t.arch), t.fidelity, t.note)
        store.restart_trial(t.id)
        result = est.evaluate(sug.arch, space, None)
        strat.tell(sug, result.visible())
        on_tell(strat, sug, result, t.id)
        previous.append((sug.arch, result))
    return strat, previous


def _run_gradient(
    store: Any,
    space: NB201Space,
    data: Dataset,
    res: OneShotResult,
    s: dict[str, Any],
    seed: int,
    say: Callable[[str], Any],
) -> Any:
    """DARTS/GDAS search, one stored trial per epoch (its derived arch); the final arch.

    Continues a run's stored work: the search from its checkpoint, and the epochs'
    trials from the store (an epoch already stored is not stored again; one left running
    by a kill is finished under its id).
    """
    from nasforge.estimators.base import Result

    method = s["method"]
    label = f"{method.upper()}" + (f" (order {s['order']})" if method == "darts" else "")
    ckpt = Path(store.run_dir) / CHECKPOINT_NAME
    # a checkpoint is this run's own only once this run began its search (not a stale file)
    cont = bool(store.get_meta("gradient_search")) and ckpt.exists()
    store.set_meta(gradient_search=True)
    stored = {int((t.fidelity or {}).get("epochs", 0)): t for t in store.trials()}
    verb = "continuing the search" if cont else "searching"
    say(f"{label}: {verb} for {s['epochs']} epochs on {len(data.y_train)} examples")
    state = {"strategy": method, "order": s["order"], "epoch": 0}
    last = [time.perf_counter()]

    def on_epoch(epoch: int, rec: dict[str, Any]) -> None:
        st = {**state, "epoch": epoch, "alpha": rec["alpha"]}
        had = stored.get(epoch)
        if had is not None and had.done:
            return  # stored before the kill: the checkpoint's replay of it
        if had is not None:  # killed between its start and its end
            tid = had.id
            store.restart_trial(tid)
        else:
            tid = store.start_trial(rec["arch"], space.parse(rec["arch"]).to_json(),
                                    {"epochs": epoch}, st, epoch - 1)  # fmt: skip
        metrics = {
            "val_accuracy": rec["derived_val_accuracy"],
            "supernet_val_accuracy": rec["supernet_val_accuracy"],
            "skip_fraction": rec["skip_fraction"],
            "skip_weight": rec["skip_weight"],
            "epoch": epoch,
        }
        report = {"train_loss": rec["train_loss"], "arch_val_loss": rec["val_loss"]}
        now = time.perf_counter()
        store.finish_trial(tid, Result(metrics, now - last[0], report=report), st, epoch)
        last[0] = now
        flag = "  (skip dominance!)" if rec["collapsed"] else ""
        say(f"  epoch {epoch}: derived val acc {rec['derived_val_accuracy']:.3f}  "
            f"skip {rec['skip_fraction']:.2f}{flag}  {rec['arch']}")  # fmt: skip

    search = darts_search(
        space, data, method=method, order=s["order"], epochs=s["epochs"],
        batch_size=s["batch_size"], w_lr=s["lr"], alpha_lr=s["alpha_lr"],
        mitigation=s["mitigation"], skip_threshold=s["skip_threshold"],
        exclude_none=s["exclude_none"], data_fraction=s["data_fraction"], seed=seed,
        device=s["device"], on_epoch=on_epoch, checkpoint=ckpt, resume=cont,
    )  # fmt: skip
    res.search = search
    store.set_meta(oneshot_search={
        "arch": search.arch.text, "alpha": search.alpha, "stopped_early": search.stopped_early,
        "collapse_epoch": search.collapse_epoch, "search_time_s": search.search_time_s,
    })  # fmt: skip
    say(f"{label}: derived {search.arch.text}")
    return search.arch


def _final_model(
    store: Any,
    space: NB201Space,
    data: Dataset,
    arch: Any,
    res: OneShotResult,
    s: dict[str, Any],
    seed: int,
    say: Callable[[str], Any],
    inherited: tuple[Supernet, InheritedWeightsEstimator] | None = None,
) -> tuple[dict[str, Any], Path]:
    """Train the winner (from scratch, or from its inherited weights), test once, export
    (:func:`~nasforge.run.finalize.finish_model`, the last step of every path)."""
    import torch

    from nasforge.run.finalize import finish_model

    if s["final_init"] == "inherited" and inherited is not None:
        supernet, est = inherited
        est.recalibrate(arch)
        model = supernet.extract(arch).to("cpu")
    else:
        torch.manual_seed(seed)
        model = space.build(arch, data.input_shape, data.num_classes)
    say(f"final training of {arch.text} ({s['final_init']}) for {s['final_epochs']} epochs")
    extra = {
        "method": s["method"],
        "final_init": s["final_init"],
        "search_time_s": res.search_time_s,
        "run_dir": str(store.run_dir),
    }
    final, model_dir = finish_model(
        model, arch, space, data, store.run_dir / "best",
        train={"epochs": s["final_epochs"], "batch_size": s["batch_size"], "seed": seed,
               "device": s["device"]},
        extra=extra, onnx=s["onnx"], device=s["device"], say=say,
    )  # fmt: skip
    assert model_dir is not None  # no accept hook: always exported
    store.set_meta(final={"arch": arch.text, "trial_id": None, "metrics": final,
                          "model_dir": str(model_dir)})  # fmt: skip
    say(f"final: test accuracy {final['test_accuracy']:.4f}; model in {model_dir}")
    return final, model_dir


from nasforge.oneshot.cli import register_cli  # noqa: E402 - it imports run_oneshot lazily

__all__ = [
    "METHODS",
    "CollapseDetector",
    "DartsSupernet",
    "GumbelPath",
    "InheritedWeightsEstimator",
    "MixedCell",
    "OneShotResult",
    "Supernet",
    "darts_search",
    "derive_arch",
    "gumbel_path",
    "path_indices",
    "path_to_arch",
    "recalibrate_bn",
    "register_cli",
    "run_oneshot",
    "skip_dominance",
    "spos_search",
    "train_supernet",
]
