# ruff: noqa: F401 - this module only re-exports, private helpers included
"""Once-for-All (Cai et al., ICLR 2020) on the ``mobile`` space: train once, specialize many times.

One elastic supernet holds every sub-network of :class:`~nasforge.spaces.mobile.MobileSpace`:

- **elastic kernel**: a block stores only its largest depthwise kernel; a smaller kernel is
  the *centre crop* of the next larger one passed through a learned *kernel transformation
  matrix* (one ``k^2 x k^2`` matrix per block and size step, shared by all channels,
  identity at init), as in OFA. ``kernel_transform=False`` gives plain centre crops.
- **elastic expansion**: a block stores the largest expansion; a smaller one uses the
  *first* ``in_channels * e`` hidden channels. Before the expansion phase the channels are
  sorted by importance (L1 norm of their projection weights, OFA's rule), so "first k"
  means "the k most important" (:meth:`OFASupernet.sort_channels`, function-preserving).
- **elastic depth**: a stage runs its first ``d`` blocks and skips the rest (they are
  residual blocks, so skipping is the identity).

:func:`train_progressive` trains it once with *progressive shrinking*: the largest network
first, then elastic kernel, then depth, then expansion, one (or ``subnets_per_step``)
sampled sub-network(s) per step, optionally distilled from the largest network
(``kd_ratio``), optionally with the sandwich rule (``sandwich``: the largest and the
smallest sub-network every step too) and in-place distillation (``inplace_kd``: the
others learn from the largest's soft labels of the same step). :func:`specialize` then
picks a sub-network for a parameter or latency budget *without retraining*: constrained
evolution (or random search) over sub-networks
whose cost is measured on the extracted stand-alone network (params counted, CPU latency
batch 1 median via :func:`nasforge.metrics.measure_latency`, cached in a
:class:`CostModel`) and whose accuracy is the inherited-weight accuracy on the validation
split after per-sub-network BN recalibration. :meth:`OFASupernet.extract` returns the
stand-alone ``mobile`` network with the supernet's weights (bit-for-bit the same function).

:func:`run_ofa` does all of it the way :func:`~nasforge.oneshot.run_oneshot` does SPOS:
every evaluated sub-network is a trial in ``RUN_DIR/nasforge.db`` and the chosen one
(optionally fine-tuned briefly) is exported to ``RUN_DIR/best`` with
:func:`~nasforge.export.save_best`. The trained supernet is saved beside it
(``RUN_DIR/supernet``) so later runs specialize for other budgets without training
(``supernet=RUN_DIR/supernet``). ``register_cli`` adds ``nasforge ofa``.

The code lives in submodules: :mod:`.supernet` (the elastic supernet, save/load),
:mod:`.shrink` (progressive shrinking), :mod:`.specialize` (inherited-weight scores, costs,
the search) and :mod:`.run` (:func:`run_ofa` and the CLI). Every name is re-exported here,
private helpers included; patch a name where it is looked up.
"""

from __future__ import annotations

from nasforge.oneshot.ofa.run import OFAResult, _parse_phase_epochs, register_cli, run_ofa
from nasforge.oneshot.ofa.shrink import (
    _phase_epochs,
    _soft_ce,
    smallest_config,
    train_progressive,
)
from nasforge.oneshot.ofa.specialize import (
    Constraint,
    CostModel,
    Specialization,
    SubnetEvaluator,
    specialize,
)
from nasforge.oneshot.ofa.supernet import (
    PHASES,
    SUPERNET_META,
    SUPERNET_WEIGHTS,
    DynamicBN,
    ElasticBlock,
    OFASupernet,
    StageConfig,
    _copy_bn,
    load_supernet,
    save_supernet,
)

__all__ = [
    "PHASES",
    "Constraint",
    "CostModel",
    "DynamicBN",
    "ElasticBlock",
    "OFAResult",
    "OFASupernet",
    "Specialization",
    "SubnetEvaluator",
    "load_supernet",
    "register_cli",
    "run_ofa",
    "save_supernet",
    "specialize",
    "smallest_config",
    "train_progressive",
]
