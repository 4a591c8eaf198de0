"""Planning a whole job inside one wall-clock budget: search, final training and export.

A user with "15 minutes" means the answer in 15 minutes, not a 15-minute search followed
by a final training whose length depends on the winner. :func:`plan_job` splits the
budget up front: a reserve for testing and exporting, a share for the final training,
and the rest for the search, where successive halving grows each trial's *training
time* (the ``seconds`` fidelity) as the field narrows. Trials budgeted in seconds rank
networks by what they reach in a fixed time, which is what the final training is too:
a bigger network sees fewer examples, and the trade-off is measured, not guessed from
FLOPs (which predict CPU time poorly).

The final training does not get a fixed epoch count: it starts when the search ends and
trains for whatever is left minus the reserve, with its learning-rate schedule over that
time (:func:`nasforge.estimators.training.train_model` with ``seconds``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from nasforge.errors import NasforgeError

#: share of the budget (after the reserve) that the final training gets
FINAL_SHARE = 0.6
#: seconds kept for the test evaluation, the export and its ONNX check
MIN_RESERVE_S = 15.0
RESERVE_SHARE = 0.06
#: what a trial costs besides its training seconds (validation pass, cost metrics)
TRIAL_OVERHEAD_S = 3.0
#: shortest training time worth a trial (unless the probe shows epochs far shorter)
MIN_TRIAL_S = 3.0
#: with a probe: the smallest reserve, and what an export costs besides the test passes
#: (ONNX export and its check, latencies, the model card; measured on small CNNs here:
#: a 120-s folder job planned 15 s for test and export and used 4-5 s with 6.0 here)
MIN_PROBED_RESERVE_S = 4.0
EXPORT_FIXED_S = 3.0
#: with a probe: a trial's fixed cost besides its validation pass (build, cost metrics)
TRIAL_FIXED_S = 0.7
#: a bracket wider than 6 only when every rung-0 trial still gets this many epochs
WIDE_BRACKET_EPOCHS = 3.0
#: with a probe: no search when the longest planned trial would see fewer epochs than
#: the task's ``min_ranking_epochs``. Measured (benchmarks/results/detection.md): 13-38-s
#: detection trials of a 40-s epoch all scored val mAP 0.003-0.009, the search picked by
#: noise and its pick got 5.3 final epochs (test mAP 0.25) where the first known-good
#: design trained the whole budget got 10.2 (0.46); classification trials of about an
#: epoch do rank (0 by default: the rule is off)
MIN_RANKING_EPOCHS = 0.0
#: with a probe: no search when the bracket is one rung (nothing promoted: the trials
#: alone choose) whose trials are under this share of the final training, and that
#: training runs at least ``MANY_FINAL_EPOCHS`` epochs of the probed design. Measured on
#: the 5-class image folder at 120 s (benchmarks/results/hand_design_small.md): 6.6-s
#: trials of the known-good designs ranked the fast design first (val 0.84, 5 epochs),
#: yet trained by the same code for 106 s the classic design beat it by 2-4.5 points;
#: such short trials rank by how fast a network starts, not by where it ends
SHORT_TRIAL_SHARE = 0.1
MANY_FINAL_EPOCHS = 10.0
#: the recipe used by trials and the final training alike, chosen by measurement
#: (benchmarks/results/fashion_mnist.md): AdamW beat SGD-Nesterov on the same network
#: and budget, label smoothing and a short warm-up help short schedules
RECIPE: dict[str, Any] = {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 5e-4,
                          "label_smoothing": 0.1, "warmup": 0.03, "batch_size": 128}


@dataclass
class Probe:
    """Speeds measured on this machine and data before planning (:func:`measure_probe`):
    one training step and the inference time per example of a representative network.

    They replace guesses where a guess is costly: on 1,800 tiny digits an epoch takes a
    tenth of a second and a trial's validation pass is instant, on Fashion-MNIST an
    epoch is a minute and scoring 6,000 validation images takes seconds.
    """

    step_s: float
    infer_s: float  # per example, in eval mode
    n_train: int
    n_val: int
    n_test: int
    batch_size: int = 128

    @property
    def epoch_s(self) -> float:
        return self.step_s * math.ceil(max(1, self.n_train) / self.batch_size)

    @property
    def trial_overhead_s(self) -> float:
        return TRIAL_FIXED_S + self.infer_s * self.n_val

    def post_s(self, tta: bool = True) -> float:
        """Test (with flip TTA: two passes, the plain score from the first) and export."""
        return EXPORT_FIXED_S + (2 if tta else 1) * self.infer_s * self.n_test


def measure_probe(net: Any, data: Any, batch_size: int = 128, steps: int = 3) -> Probe:
    """Time ``steps`` AdamW training steps and two inference batches of ``net`` on real
    examples of ``data`` (after one warm-up each), in the layout training uses; ~1-3 s."""
    import time

    import numpy as np
    import torch

    n = len(data.y_train)
    bs = max(2, min(batch_size, n))
    x = torch.as_tensor(np.asarray(data.x_train[:bs]), dtype=torch.float32)
    task = data.make_task()  # the task's own loss: regression targets are not classes
    y = task.encode(np.asarray(data.y_train[:bs]))
    loss_fn = task.loss()
    fmt = torch.channels_last if x.dim() == 4 else torch.contiguous_format
    net = net.to(memory_format=fmt)
    x = x.contiguous(memory_format=fmt)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net.train()
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    step_s = float(np.median(times[1:]))
    net.eval()
    # at most 4 training batches' worth: 512 examples at the default batch of 128, fewer
    # for a task that trains in small batches of large inputs (detection)
    xe = torch.as_tensor(np.asarray(data.x_train[: min(n, 512, 4 * bs)]), dtype=torch.float32)
    xe = xe.contiguous(memory_format=fmt)
    with torch.no_grad():
        net(xe)
        t0 = time.perf_counter()
        net(xe)
        net(xe)
        infer_s = (time.perf_counter() - t0) / (2 * len(xe))
    return Probe(step_s=step_s, infer_s=infer_s, n_train=n, n_val=len(data.y_val),
                 n_test=len(data.y_test), batch_size=bs)


@dataclass
class JobPlan:
    """How a job spends its wall-clock budget (all in seconds)."""

    total_s: float
    spent_s: float  # before the plan: process start-up and data loading
    search_s: float
    final_s: float  # planned; the final training really gets what is left when it starts
    reserve_s: float
    n_configs: int = 0
    eta: int = 3
    min_trial_s: float = 0.0
    max_trial_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    probe: dict[str, Any] | None = None  # the measured speeds it was planned from

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> JobPlan:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def strategy_options(self) -> dict[str, Any]:
        """Successive halving over training seconds, rung 0 seeded with known-good
        designs and then mutations of the best (an evolution sampler, small population)."""
        return {"resource": "seconds", "min_resource": self.min_trial_s,
                "max_resource": self.max_trial_s, "eta": self.eta,
                "n_configs": self.n_configs, "sampler": "evolution",
                "sampler_options": {"population_size": 4, "sample_size": 2}}

    def describe(self) -> list[str]:
        """The plan in lines a person reads before the job starts."""
        lines = [f"plan for {_secs(self.total_s)}: search {_secs(self.search_s)}, final "
                 f"training ~{_secs(self.final_s)}, test and export {_secs(self.reserve_s)}"
                 + (f" ({_secs(self.spent_s)} already spent loading)" if self.spent_s >= 1
                    else "")]
        if self.n_configs:
            rungs = []
            n, r = self.n_configs, self.min_trial_s
            while n >= 1 and r <= self.max_trial_s + 1e-9:
                rungs.append(f"{n} x {r:.2g} s")
                n, r = n // self.eta, r * self.eta
            lines.append("search: successive halving over training time, "
                         + " -> ".join(rungs) + "; known-good designs first")
        if self.probe:
            pr = Probe(**self.probe)
            lines.append(f"measured here: an epoch of a known-good design ~{_secs(pr.epoch_s)}"
                         f", a trial's validation ~{pr.trial_overhead_s:.1f} s")
        lines += self.notes
        return lines


def _secs(s: float) -> str:
    return f"{s / 60:.1f} min" if s >= 120 else f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def process_age() -> float:
    """Seconds since this process started (Linux ``/proc``), else 0: the budget is the
    user's wall clock, so start-up and imports count too."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = float(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def _single_rung(plan: JobPlan, n: int, overhead_s: float) -> None:
    """A bracket that would promote one network: drop its second rung.

    Training the single best of rung 0 longer cannot change which network the final
    training gets (the same one wins either way), so that rung's time goes to the final
    training instead. Measured on the 5-minute Fashion-MNIST job, the promoted trial also
    never fitted: the rung ended a second past the search time.
    """
    # a trial costs more than its training seconds (build, cost metrics, validation):
    # keep the unprobed estimate as slack so the last network of the rung still fits
    search = n * (plan.min_trial_s + max(overhead_s, TRIAL_OVERHEAD_S)) + TRIAL_OVERHEAD_S
    if search >= plan.search_s:
        return
    plan.final_s += plan.search_s - search
    plan.search_s = search
    plan.max_trial_s = plan.min_trial_s
    plan.notes.append(f"one rung of {n}: promoting one network of {n} cannot change the "
                      "choice, so that time goes to the final training")


def plan_job(total_s: float, spent_s: float = 0.0, *, final_share: float = FINAL_SHARE,
             trial_overhead_s: float = TRIAL_OVERHEAD_S, eta: int = 3,
             search_only: bool = False, probe: Probe | None = None,
             tta: bool = False, min_ranking_epochs: float = MIN_RANKING_EPOCHS) -> JobPlan:
    """Split ``total_s`` (of which ``spent_s`` are gone) into search, final and reserve.

    The search is one successive-halving bracket whose size fits its share: ``n``
    configurations at ``r`` seconds, ``n / eta`` at ``eta * r`` (two rungs), so
    ``2 n r + (n + n / eta) * overhead`` fills the search time; ``n`` is 6 when that
    leaves at least 10 s per rung-0 trial and shrinks for tighter budgets.
    ``search_only`` (no final training): the search gets the whole budget.

    With a ``probe`` (measured speeds) the reserve is the measured test-and-export
    estimate (``tta``: the test takes two passes) with a safety factor instead of a
    fixed 15 s or 6 %, a trial's overhead is its measured validation pass, and when an
    epoch is short the bracket may be wider (9 or 12 networks), its shortest trial
    ``WIDE_BRACKET_EPOCHS`` epochs and at least half a second instead of 3 s.
    """
    if not (math.isfinite(total_s) and total_s > 0):
        raise NasforgeError(f"the time budget must be positive, got {total_s!r}")
    if not 0 < final_share < 1:
        raise NasforgeError(f"final_share must be in (0, 1), got {final_share!r}")
    if search_only:  # no final training (or nothing to train): the search is the job
        return JobPlan(total_s=total_s, spent_s=spent_s, search_s=max(0.0, total_s - spent_s),
                       final_s=0.0, reserve_s=0.0, eta=eta)
    if probe is not None:
        reserve = max(MIN_PROBED_RESERVE_S, 2.0 * probe.post_s(tta))
        trial_overhead_s = probe.trial_overhead_s
    else:
        reserve = max(MIN_RESERVE_S, RESERVE_SHARE * total_s)
    left = total_s - spent_s - reserve
    if left < 2 * MIN_TRIAL_S:
        raise NasforgeError(
            f"a time budget of {total_s:.0f} s leaves {max(left, 0):.0f} s after loading "
            f"({spent_s:.0f} s) and the {reserve:.0f} s kept for testing and export; give "
            f"at least {math.ceil(spent_s + reserve + 30)} s (e.g. --time-budget 2m)"
        )
    final = final_share * left
    search = left - final
    plan = JobPlan(total_s=total_s, spent_s=spent_s, search_s=search, final_s=final,
                   reserve_s=reserve, eta=eta,
                   probe=None if probe is None else asdict(probe))
    floor = MIN_TRIAL_S
    wide = ()
    if probe is not None:  # short epochs: shorter trials still train for several
        floor = max(0.5, min(MIN_TRIAL_S, WIDE_BRACKET_EPOCHS * probe.epoch_s))
        wide = (12, 9)
    for n in (*wide, 6, 3, 1):
        promoted = max(1, n // eta) if n > 1 else 0
        train = search - (n + promoted) * trial_overhead_s
        r = train / (n + promoted * eta)
        if n > 6:
            need = max(floor, WIDE_BRACKET_EPOCHS * probe.epoch_s) if probe else math.inf
        else:
            need = min(10.0, max(floor, WIDE_BRACKET_EPOCHS * probe.epoch_s)) \
                if (n == 6 and probe is not None) else (10.0 if n == 6 else floor)
        if r >= need or n == 1:
            plan.n_configs = n
            plan.min_trial_s = max(floor, round(r, 1))
            plan.max_trial_s = plan.min_trial_s * (eta if promoted else 1)
            if promoted == 1:
                _single_rung(plan, n, trial_overhead_s)
            break
    if probe is not None and plan.n_configs > 1 and \
            plan.max_trial_s < min_ranking_epochs * probe.epoch_s:
        _prior_only(plan, trial_overhead_s, floor,
                    f"trials of {plan.max_trial_s:.0f} s would see under "
                    f"{min_ranking_epochs:g} epoch{'' if min_ranking_epochs == 1 else 's'} "
                    f"(one ~{probe.epoch_s:.0f} s here), too little to "
                    "rank networks: the first known-good design is checked in a short trial "
                    "and trained with the search's time too (give more time for a search)")
    elif probe is not None and plan.n_configs > 1 and plan.max_trial_s <= plan.min_trial_s \
            and plan.max_trial_s < SHORT_TRIAL_SHARE * plan.final_s and \
            plan.final_s >= MANY_FINAL_EPOCHS * probe.epoch_s:
        _prior_only(plan, trial_overhead_s, floor,
                    f"trials of {plan.max_trial_s:.0f} s are under "
                    f"{SHORT_TRIAL_SHARE:.0%} of the final training "
                    f"(~{plan.final_s / probe.epoch_s:.0f} epochs here) and would rank "
                    "networks by how fast they start: the first known-good design is "
                    "checked in a short trial and trained with the search's time too "
                    "(give more time for a search)")
    elif plan.n_configs == 1:
        _prior_only(plan, trial_overhead_s, floor,
                    "the budget allows a single trial: the first known-good design is "
                    "checked in a short trial and trained (give more time for a real search)")
    return plan


def _prior_only(plan: JobPlan, overhead_s: float, floor: float, note: str) -> None:
    """No search worth its time: one short trial (does the first known-good design train
    on these data?) and the rest of the search's share to the final training, which is
    what a single candidate's choice depends on anyway."""
    trial = max(floor, min(MIN_TRIAL_S, plan.min_trial_s or MIN_TRIAL_S))
    search = trial + max(overhead_s, TRIAL_OVERHEAD_S) + TRIAL_OVERHEAD_S
    if search < plan.search_s:
        plan.final_s += plan.search_s - search
        plan.search_s = search
    plan.n_configs = 1
    plan.min_trial_s = plan.max_trial_s = trial
    plan.notes = [n for n in plan.notes if not n.startswith("one rung of")] + [note]
