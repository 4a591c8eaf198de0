"""The ask -> evaluate -> tell loop of one session, every step stored first.

The strategy's state is saved atomically with each trial, so a crash loses at most the
trials in flight, and those are evaluated again (same id) on resume.

:class:`Run` is the one loop of the package: ``nasforge.search`` drives it with a
:class:`~nasforge.store.RunStore`, the table benchmark, the proxy study and SPOS's
candidate search with a :class:`~nasforge.run.stores.MemoryStore` and a
:class:`Callback` that keeps their own bookkeeping and says when to stop.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
import traceback
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from nasforge.errors import NasforgeError
from nasforge.estimators.base import Result
from nasforge.executors import ATTEMPTS_ATTR, Executor
from nasforge.run.display import _Display, _finite
from nasforge.run.setup import _Setup
from nasforge.run.stores import Store
from nasforge.strategies.base import Suggestion

if TYPE_CHECKING:
    from nasforge.data import Dataset
    from nasforge.estimators.base import Estimator
    from nasforge.spaces.base import SearchSpace
    from nasforge.strategies.base import Strategy


class Callback:
    """Hooks into a :class:`Run`; override the ones you need, the others do nothing.

    Declared on a base class, so the loop calls every hook of every callback instead of
    probing for them, and a misspelt override is easy to spot against the base.
    """

    def on_trial_start(self, trial_id: int, suggestion: Suggestion) -> None:
        """A trial was stored as started (right after ``ask``), before it is evaluated."""

    def on_trial_end(self, trial_id: int, suggestion: Suggestion, result: Result) -> bool | None:
        """The strategy was told ``result`` and the trial stored; ``False`` ends the run
        (no new ask; trials in flight still finish)."""
        return None

    def on_session_end(self) -> None:
        """The session's loop returned or raised (called once, in any case)."""

    def on_finalized(self, result: Any) -> None:
        """``nasforge.search``/``resume`` finished the run (final training, test and export
        done): ``result`` is its :class:`~nasforge.run.api.SearchResult` (loggers record the
        final model). Not called by loops without a final step, nor when the run failed."""


class Run:
    """One session of a run: fills worker slots by asking, stores every step atomically.

    ``budget``: ``trials`` (trials started, in all sessions) and ``time_budget`` (seconds),
    either None for no limit; ``callbacks`` may end the run earlier. ``display``: the
    progress bar (None: a silent one).
    """

    def __init__(self, store: Store, setup: _Setup, data: Dataset | None,
                 budget: Mapping[str, Any], executor: Executor,
                 display: _Display | None = None,
                 callbacks: Iterable[Callback] = ()) -> None:
        self.store = store
        self.setup = setup
        self.data = data
        self.trials_budget: int | None = budget.get("trials")
        self.time_budget: float | None = budget.get("time_budget")
        self.executor = executor
        self.display = display if display is not None else _Display(False, None, 0, "trials")
        self.callbacks = list(callbacks)
        #: set when a callback's ``on_trial_end`` returned False: no new trial is asked
        self.stopped = False
        #: seconds spent inside the strategy's ``ask`` and ``tell`` (a benchmark reports it)
        self.strategy_s = 0.0
        self.prior = float(store.get_meta("elapsed_s", 0.0) or 0.0)
        self.t0 = time.monotonic()
        self.in_flight: dict[cf.Future, tuple[int, Suggestion]] = {}
        self.n_done = store.n_completed()
        #: the fidelity key of a trial's training seconds: a trial that would not end
        #: within the time budget is not started (set by a job plan)
        self.fit_fidelity: str | None = None
        #: when trials must stop (``time.time()``); handed to the estimator once one trial
        #: succeeded, so a tight budget still yields a candidate for the final training
        self.deadline_at: float | None = None
        from nasforge.reporting import run_constraints

        #: hard bounds the untrained network can be checked against (see _precheck)
        self.static_constraints = ([c for c in run_constraints(setup.config)
                                    if c.metric in ("params", "flops")]
                                   if setup.estimator.needs_data else [])
        strat = setup.strategy
        best = store.best(strat.metric, strat.mode)
        self.best = None if best is None else float(best.metrics[strat.metric])

    def elapsed(self) -> float:
        return self.prior + (time.monotonic() - self.t0)

    def budget_left(self, extra_in_flight: int = 0) -> bool:
        if self.stopped:
            return False
        if self.trials_budget is not None and \
                self.n_done + len(self.in_flight) + extra_in_flight >= self.trials_budget:
            return False
        if self.time_budget is not None and self.n_done == 0 and not self.in_flight \
                and not extra_in_flight:
            return True  # the job needs one candidate, even if loading ate the search's time
        return not (self.time_budget is not None and self.elapsed() >= self.time_budget)

    def progress(self) -> float:
        return self.n_done if self.trials_budget is not None else min(self.elapsed(),
                                                                      self.time_budget or 0.0)

    def best_text(self) -> str:
        if self.best is None:
            return ""
        return f"best {self.setup.strategy.metric} {self.best:.4g}"

    def _fits(self, sugg: Suggestion) -> bool:
        """Whether a trial budgeted in training seconds ends inside the time budget (the
        ask is not stored otherwise: a resumed run asks it again)."""
        from nasforge.run.budget import TRIAL_OVERHEAD_S

        if self.fit_fidelity is None or self.time_budget is None:
            return True
        secs = (sugg.fidelity or {}).get(self.fit_fidelity)
        if secs is None or self.n_done == 0:  # the job needs one candidate in any case
            return True
        # the plan's per-trial overhead is an estimate: allow half of it as slack
        return self.elapsed() + float(secs) + 0.5 * TRIAL_OVERHEAD_S <= self.time_budget

    def _precheck(self, sugg: Suggestion) -> Result | None:
        """A failed result for an architecture that breaks a hard bound on a metric the
        untrained network already shows (params, FLOPs), else None.

        Such a network would be trained only to be dropped at the end; the strategy is
        told it failed (so it steers away) and no training time is spent on it.
        """
        if not self.static_constraints or self.data is None:
            return None
        from nasforge import metrics as M

        t0 = time.perf_counter()
        shape = self.data.input_shape
        try:
            net = self.data.build_network(self.setup.space, sugg.arch, shape)
        except NasforgeError:
            return None  # the estimator reports a network that cannot be built
        have = {"params": float(M.count_params(net)), "flops": float(M.count_flops(net, shape))}
        bad = [f"{c} ({c.metric} = {have[c.metric]:.4g})" for c in self.static_constraints
               if not c.satisfied(have)]
        if not bad:
            return None
        return Result(metrics=have, cost=time.perf_counter() - t0, status="failed",
                      error="infeasible before training, not trained: " + "; ".join(bad))

    def _submit(self, tid: int, sugg: Suggestion) -> None:
        for cb in self.callbacks:
            cb.on_trial_start(tid, sugg)
        # only (arch, fidelity) travels per trial: the context was bound once in run()
        fut = self.executor.submit_trial(sugg.arch, sugg.fidelity)
        self.in_flight[fut] = (tid, sugg)

    def run(self) -> None:
        """Ask, evaluate and tell until the budget is spent or a callback stops the run."""
        try:
            self._run()
        finally:
            for cb in self.callbacks:
                cb.on_session_end()

    def _run(self) -> None:
        strat, store = self.setup.strategy, self.store
        self.executor.bind(self.setup.estimator, self.setup.space, self.data)
        # trials started before a crash never finished: evaluate them again, same id
        for rec in store.trials("running"):
            if not self.budget_left():
                break
            sugg = Suggestion(self.setup.space.parse(rec.arch), rec.fidelity)
            store.restart_trial(rec.id)
            self._submit(rec.id, sugg)
            self._drain_done(block=False)
        while True:
            while len(self.in_flight) < self.executor.max_workers and self.budget_left():
                t0 = time.perf_counter()
                sugg = strat.ask()
                self.strategy_s += time.perf_counter() - t0
                if not self._fits(sugg):
                    self.time_budget = self.elapsed()  # the rest goes to the final training
                    break
                infeasible = self._precheck(sugg)
                tid = store.start_trial(
                    sugg.arch.text, sugg.arch.to_json(), sugg.fidelity, strat.state_dict(),
                    strat.n_told, meta={"elapsed_s": self.elapsed()}, note=sugg.note,
                )
                if infeasible is not None:  # refused before training: costs no trial time
                    for cb in self.callbacks:
                        cb.on_trial_start(tid, sugg)
                    self._finish(tid, sugg, infeasible)
                    continue
                self._submit(tid, sugg)
                self._drain_done(block=False)  # in-process: already done, tell before next ask
            if not self.in_flight:
                break
            self._drain_done(block=True)

    def _drain_done(self, block: bool) -> None:
        if not self.in_flight:
            return
        if block:
            done, _ = cf.wait(list(self.in_flight), return_when=cf.FIRST_COMPLETED)
        else:
            done = {f for f in self.in_flight if f.done()}
        for fut in sorted(done, key=lambda f: self.in_flight[f][0]):
            tid, sugg = self.in_flight.pop(fut)
            # a worker that died under the trial made the executor start it again
            self._finish(tid, sugg, _outcome(fut), int(getattr(fut, ATTEMPTS_ATTR, 1) or 1))

    def _finish(self, tid: int, sugg: Suggestion, result: Result, attempts: int = 1) -> None:
        strat = self.setup.strategy
        t0 = time.perf_counter()
        strat.tell(sugg, result.visible())
        self.strategy_s += time.perf_counter() - t0
        self.store.finish_trial(tid, result, strat.state_dict(), strat.n_told,
                                meta={"elapsed_s": self.elapsed()}, attempts=attempts)
        self.n_done += 1
        if result.ok and self.deadline_at is not None and self.setup.estimator.deadline is None:
            self.setup.estimator.deadline = self.deadline_at
        if result.ok and _finite(result.metrics.get(strat.metric)):
            v = float(result.metrics[strat.metric])
            if self.best is None or (v > self.best if strat.mode == "max" else v < self.best):
                self.best = v
        self.display.update(self.progress(), self.best_text())
        for cb in self.callbacks:
            if cb.on_trial_end(tid, sugg, result) is False:
                self.stopped = True

    def abandon(self) -> None:
        """Forget in-flight work (it stays 'running' in the store and is redone on resume)."""
        for fut in self.in_flight:
            fut.cancel()
        self.in_flight.clear()


def run_in_memory(strategy: Strategy, space: SearchSpace, estimator: Estimator, *,
                  trials: int | None, callbacks: Iterable[Callback] = ()) -> Run:
    """Run ``strategy`` to ``trials`` trials (or a callback's stop) in this process, every
    step in a :class:`~nasforge.run.stores.MemoryStore`; returns the finished :class:`Run`.

    What benchmarks and one-shot searches use: the same loop as ``nasforge.search``,
    without files, data or display.
    """
    from nasforge.execution.local import InProcessExecutor
    from nasforge.run.stores import MemoryStore

    run = Run(MemoryStore(), _Setup({}, space, strategy, estimator, None), None,
              {"trials": trials}, InProcessExecutor(), callbacks=callbacks)
    run.run()
    return run


#: the old name of :class:`Run`, kept so that code importing it keeps working
_Loop = Run


def _outcome(fut: cf.Future) -> Result:
    exc = fut.exception()
    if exc is None:
        res = fut.result()
        return res if isinstance(res, Result) else Result.failed(
            f"trial returned {type(res).__name__}, not a Result")
    if isinstance(exc, NasforgeError):
        raise exc  # a set-up mistake (bad fidelity, no data): every trial would fail
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=4))
    return Result.failed(f"{type(exc).__name__}: {exc}\n{tb}")
