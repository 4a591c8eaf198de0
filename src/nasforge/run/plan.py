"""Hooking a time budget's job plan (:mod:`nasforge.run.budget`) into a search.

The plan is made again from speeds probed on these data, sets the recipe and the
successive-halving strategy of a time-budgeted job, and sizes the reserve for testing
and exporting the chosen network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nasforge import estimators
from nasforge.estimators.base import Estimator
from nasforge.run.setup import _Setup
from nasforge.store import TrialRecord
from nasforge.strategies.base import Strategy

if TYPE_CHECKING:
    from nasforge.data import Dataset


def _probed_plan(plan: Any, setup: _Setup, data: Dataset) -> Any:
    """``plan`` made again with a probe: the speed of the space's first known-good design
    (else a seeded draw) on these data; ``plan`` unchanged if the network cannot be built
    or timed (the first trial then says why)."""
    import numpy as np
    import torch

    from nasforge.run.budget import measure_probe, plan_job

    space = setup.space
    known = space.known_good_for(_n_examples(data))
    try:
        arch = known[0] if known else space.sample(np.random.default_rng(0))
        torch.manual_seed(0)
        net = data.build_network(space, arch)
        bs = int(setup.estimator.config().get("batch_size") or 128)
        probe = measure_probe(net, data, batch_size=bs)
    except Exception:  # noqa: BLE001 - planning falls back to the fixed guesses
        return plan
    # (the probe's own time, like the loading's, comes off the search's share when the
    # search starts: nasforge.run.api._session)
    return plan_job(plan.total_s, plan.spent_s, probe=probe, tta=_flips(setup),
                    min_ranking_epochs=data.make_task().min_ranking_epochs)


def _n_examples(data: Dataset) -> int:
    """Training + validation examples: what the final training sees."""
    return len(data.y_train) + len(data.y_val)


def _flips(setup: _Setup) -> bool:
    """Whether the estimator trains with flips (the final model is then served with TTA)."""
    return str(setup.estimator.config().get("augment") or "none").startswith("flip")


#: examples through the network when the final model's ``summary.json`` latencies are
#: timed (``finish_model``'s 50 repeats: torch at batch 1 twice and ONNX Runtime once,
#: 5 warm-ups each; torch and ONNX Runtime at batch 32, 12 repeats + 2 warm-ups each)
LATENCY_FORWARDS = 3 * (50 + 5) + 2 * (12 + 2) * 32


def _winner_reserve(setup: _Setup, data: Dataset, rec: TrialRecord, planned: float) -> float:
    """Seconds to keep for testing and exporting the chosen network: its own inference
    time on the test split (timed on the untrained network, which is as fast) plus the
    task's scoring of it (timed on a sample and scaled: a detector's box decoding, NMS
    and COCO evaluation cost more than its forward passes) plus the summary's latency
    timings (:data:`LATENCY_FORWARDS` examples' forward passes), with a 1.5x margin;
    ``planned`` if it cannot be timed. The probe runs at the estimator's batch size, as
    the plan's own does (at its default of 128 it timed two training steps of 128 and
    512-example inference passes for a segmenter that trains at 32)."""
    import time

    import numpy as np
    import torch

    from nasforge.run.budget import MIN_PROBED_RESERVE_S, measure_probe

    try:
        torch.manual_seed(0)
        net = data.build_network(setup.space, rec.arch)
        bs = int(setup.estimator.config().get("batch_size") or 128)
        probe = measure_probe(net, data, batch_size=bs, steps=1)
    except Exception:  # noqa: BLE001 - keep the plan's figure
        return planned
    score_s = 0.0
    try:
        k = min(len(data.y_test), 64)
        if k:
            task = data.make_task()
            with torch.no_grad():
                out = net.eval()(torch.as_tensor(np.asarray(data.x_test[:k]),
                                                 dtype=torch.float32))
            y = task.encode(np.asarray(data.y_test[:k]))
            t0 = time.perf_counter()
            task.metrics(out, y)
            score_s = (time.perf_counter() - t0) * len(data.y_test) / k
    except Exception:  # noqa: BLE001 - the forward-pass estimate alone
        score_s = 0.0
    latency_s = LATENCY_FORWARDS * probe.infer_s
    return max(MIN_PROBED_RESERVE_S, 1.5 * (probe.post_s(_flips(setup)) + score_s + latency_s))


def _planned(plan: Any, dataset: Any, strategy: str | Strategy | None,
             strategy_options: Mapping[str, Any] | None, estimator: str | Estimator,
             estimator_options: Mapping[str, Any] | None, objectives: Any
             ) -> tuple[str | Strategy | None, dict[str, Any], dict[str, Any]]:
    """The strategy and estimator options a time-budgeted job runs with.

    An estimator with a time fidelity (``Estimator.time_fidelity``) gets the planned
    recipe (options the user gave win); with no strategy chosen and one objective, the
    search is the plan's successive halving over that fidelity.
    """
    from nasforge.data import default_augment, input_kind_of
    from nasforge.data.sequences import SEQUENCE_RECIPE
    from nasforge.run.budget import RECIPE

    s_opts, e_opts = dict(strategy_options or {}), dict(estimator_options or {})
    factory = estimators.registry.factory(estimator) if isinstance(estimator, str) else None
    time_key = (factory if factory is not None else estimator).time_fidelity
    if time_key is None or not isinstance(estimator, str):
        return strategy, s_opts, e_opts
    names, var_kw = estimators.registry.accepted_options(estimator)
    recipe = {**RECIPE, "augment": default_augment(dataset),
              **(SEQUENCE_RECIPE if input_kind_of(dataset) == "sequence" else {})}
    for k, v in recipe.items():
        if (k in names or var_kw) and k not in e_opts:
            e_opts[k] = v
    single = objectives is None or isinstance(objectives, str) or len(list(objectives)) < 2
    if strategy is None and single and not {"epochs", "data_fraction", time_key} & set(e_opts):
        strategy = "successive-halving"
        opts = plan.strategy_options()
        opts["resource"] = time_key
        s_opts = {**opts, **s_opts}
    return strategy, s_opts, e_opts
