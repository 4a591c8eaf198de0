"""The whole-job time budget: the plan, trials in seconds, the final training on the rest."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

import nasforge
from nasforge import spaces, strategies, tasks
from nasforge.budget import EXPORT_FIXED_S, JobPlan, Probe, measure_probe, plan_job
from nasforge.data import from_arrays
from nasforge.errors import NasforgeError
from nasforge.estimators.training import train_model
from nasforge.export import FlipTTA

HAND = ("stem32|conv-k3-w32-relu|maxpool-drop0.1|conv-k3-w64-relu|conv-k3-w64-relu"
        "|maxpool-drop0.2|fc128|drop0.3")


def _tiny(n: int = 120, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.random((n, 12, 12)).astype(np.float32) * 0.3
    x[y == 1, :, :6] += 0.6  # a left/right cue: learnable, not mirror-invariant
    return from_arrays(x, y, classes=["a", "b"], seed=seed)


# -- the plan --------------------------------------------------------------------------------
def test_plan_splits_the_whole_budget():
    p = plan_job(900.0, 5.0)
    assert p.reserve_s >= 15 and p.spent_s == 5.0
    assert p.search_s + p.final_s + p.reserve_s + p.spent_s == pytest.approx(900.0)
    assert p.final_s > p.search_s  # the final model gets the larger share
    # one bracket of two rungs fills the search: 6 x r + 2 x 3r plus overheads
    assert p.n_configs == 6 and p.max_trial_s == pytest.approx(3 * p.min_trial_s)
    assert 12 * p.min_trial_s + 8 * 3.0 == pytest.approx(p.search_s, abs=1.0)
    assert any("successive halving" in line for line in p.describe())
    assert JobPlan.from_json(json.loads(json.dumps(p.to_json()))) == p


def test_small_budgets_shrink_the_bracket_and_tiny_ones_are_refused():
    assert plan_job(60.0).n_configs == 1
    assert plan_job(200.0).n_configs == 3
    with pytest.raises(NasforgeError, match="at least"):
        plan_job(20.0, 5.0)
    assert plan_job(1.0, search_only=True).search_s == 1.0  # no final training: all search


def test_a_probe_replaces_the_guesses_with_measured_speeds():
    # Fashion-MNIST-like: a minute per epoch, 6k validation and 10k test images
    # (an epoch of ~28 s, as measured on one core here)
    fm = Probe(step_s=0.066, infer_s=8e-4, n_train=54_000, n_val=6_000, n_test=10_000)
    p = plan_job(900.0, 5.0, probe=fm, tta=True)
    assert p.n_configs == 6 and p.min_trial_s >= 10  # no wide bracket on long epochs
    assert p.max_trial_s >= fm.epoch_s  # the longest trials see an epoch: a search
    assert p.reserve_s == pytest.approx(2 * (EXPORT_FIXED_S + 2 * 8e-4 * 10_000))  # x2
    assert p.probe["step_s"] == 0.066
    assert any("measured here" in line for line in p.describe())
    assert JobPlan.from_json(json.loads(json.dumps(p.to_json()))) == p
    # digits-like: an epoch in a tenth of a second, an instant validation pass
    fast = Probe(step_s=0.01, infer_s=1e-5, n_train=1_150, n_val=290, n_test=360)
    q = plan_job(60.0, 4.0, probe=fast)
    assert q.n_configs >= 9 and q.min_trial_s < 3.0  # many short trials, each >= 3 epochs
    assert q.min_trial_s >= 3 * fast.epoch_s
    assert q.reserve_s < 15.0 and q.reserve_s < plan_job(60.0, 4.0).reserve_s
    assert plan_job(60.0, 4.0).n_configs == 1  # without a probe: one trial


def test_measure_probe_times_real_steps():
    data = _tiny()
    sp = spaces.get("cnn")
    net = sp.build(sp.parse("stem8|conv-k3-w16-relu-down|drop0.0"), data.input_shape, 2)
    pr = measure_probe(net, data)
    assert pr.step_s > 0 and pr.infer_s > 0 and pr.n_train == len(data.y_train)
    assert pr.epoch_s == pytest.approx(pr.step_s * -(-len(data.y_train) // pr.batch_size))


# -- the space contains the hand design --------------------------------------------------------
def test_the_classic_hand_cnn_is_a_point_of_the_cnn_space():
    sp = spaces.get("cnn")
    arch = sp.parse(HAND)
    assert arch in sp.known_good()
    net = sp.build(arch, (1, 28, 28), 10)
    assert sum(p.numel() for p in net.parameters()) == 468_010  # the 468k
    kinds = [type(m).__name__ for m in net.modules()
             if type(m).__name__ in ("Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Dropout",
                                     "Linear")]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU"] * 2 + ["MaxPool2d", "Dropout"] + \
        ["Conv2d", "BatchNorm2d", "ReLU"] * 2 + ["MaxPool2d", "Dropout", "Linear", "ReLU",
                                                 "Dropout", "Linear"]
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", ["evolution", "local-search", "successive-halving"])
def test_strategies_start_from_the_known_good_designs(name):
    sp = spaces.get("cnn")
    opts = {"resource": "seconds", "min_resource": 1, "max_resource": 3} \
        if name == "successive-halving" else {}
    st = strategies.get(name, space=sp, seed=0, **opts)
    known = sp.known_good()
    asked = [st.ask().arch for _ in range(len(known))]
    assert asked == known
    # the count is part of the state: a resumed strategy does not start over
    again = strategies.get(name, space=sp, seed=0, **opts)
    again.load_state_dict(json.loads(json.dumps(st.state_dict())))
    assert again.next_known() is None
    off = strategies.get(name, space=sp, seed=0, warm_start=False, **opts)
    assert off.ask().arch not in known or len(known) == 0


def test_random_search_stays_uniform_by_default():
    sp = spaces.get("cnn")
    st = strategies.get("random", space=sp, seed=0)
    assert [st.ask().arch for _ in range(4)] != sp.known_good()
    warm = strategies.get("random", space=sp, seed=0, warm_start=True)
    assert warm.ask().arch == sp.known_good()[0]


# -- training for seconds ------------------------------------------------------------------------
def test_train_for_seconds_stops_on_time_and_uses_the_validation_split_when_asked():
    data = _tiny()
    sp = spaces.get("cnn")
    net = sp.build(sp.parse("stem8|conv-k3-w16-relu-down|drop0.0"), data.input_shape, 2)
    t0 = time.monotonic()
    hist = train_model(net, data, epochs=10**6, seconds=1.0, batch_size=16, optimizer="adamw",
                       lr=2e-3, warmup=0.1, augment="flip+shift", include_val=True)
    took = time.monotonic() - t0
    assert 1.0 <= took < 4.0
    assert hist["epochs"] > 1 and hist["steps"] > 5
    assert hist["num_train"] == len(data.y_train) + len(data.y_val)
    assert np.isnan(hist["val_accuracy"])  # it trained on them: not scored
    with pytest.raises(NasforgeError, match="augment"):
        train_model(net, data, epochs=1, augment="rotate")


def test_flip_tta_averages_mirror_images_and_exports(tmp_path):
    data = _tiny()
    sp = spaces.get("cnn")
    arch = sp.parse("stem8|conv-k3-w16-relu-down|drop0.0")
    net = sp.build(arch, data.input_shape, 2).eval()
    tta = FlipTTA(net).eval()
    x = torch.from_numpy(data.x_test[:8])
    with torch.no_grad():
        want = (net(x).softmax(-1) + net(x.flip(3)).softmax(-1)) / 2
        assert torch.allclose(tta(x).exp(), want, atol=1e-6)
        assert torch.allclose(tta(x), tta(x.flip(3)), atol=1e-5)  # mirror-invariant
    from nasforge.export import save_best

    save_best(tmp_path / "m", net, arch, sp, data, {"test_accuracy": 0.5}, tta="flip")
    loaded = nasforge.load(tmp_path / "m")
    assert isinstance(loaded.module, FlipTTA)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"))
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert np.allclose(out, tta(x).detach().numpy(), atol=1e-4)


def test_the_test_scores_with_and_without_tta_come_from_one_pass():
    from nasforge.estimators.training import evaluate_model
    from nasforge.run.finalize import _test_scores

    data = _tiny(300)
    sp = spaces.get("cnn")
    net = sp.build(sp.parse("stem8|conv-k3-w16-relu-down|drop0.0"), data.input_shape, 2)
    train_model(net, data, epochs=3, optimizer="adamw", lr=5e-3, augment="flip")
    tta = FlipTTA(net)
    acc, loss, plain = _test_scores(tta, data, "cpu")
    assert (acc, loss) == pytest.approx(evaluate_model(tta, data.x_test, data.y_test))
    assert plain == pytest.approx(evaluate_model(net, data.x_test, data.y_test)[0])
    w = next(p for p in net.parameters() if p.dim() == 4)
    assert w.is_contiguous()  # left in the default layout (safetensors, ONNX)


# -- the job ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_timed_job_fits_its_budget_and_says_what_it_does(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NASFORGE_NO_PROGRESS", raising=False)
    data = _tiny(200)
    t0 = time.monotonic()
    res = nasforge.search(data, time_budget=40, out=tmp_path / "r", progress="phases",
                          space_options={"max_blocks": 3, "widths": [8, 16],
                                         "stem_widths": [8]})
    wall = time.monotonic() - t0
    err = capsys.readouterr().err
    assert "plan for 40 s" in err and "final training of trial" in err
    assert wall <= 40 * 1.05
    assert res.model_dir is not None and res.test_metrics["test_accuracy"] >= 0.5
    secs = [t.fidelity["seconds"] for t in res.trials]
    assert all(s > 0 for s in secs)
    summary = json.loads((res.model_dir / "summary.json").read_text())
    assert summary["metrics"]["train_time_s"] > 5  # the final training used its share


# -- bounds checked before training -----------------------------------------------------------
def test_bounds_on_params_and_flops_are_checked_before_any_training(tmp_path):
    res = nasforge.search("digits", strategy="evolution", trials=8, out=tmp_path / "r",
                          constraints=["params<=20k"], final_train=False, progress=False,
                          estimator_options={"epochs": 1, "data_fraction": 0.2})
    refused = [t for t in res.trials if t.status == "failed"
               and "infeasible before training" in (t.error or "")]
    # the known-good designs (70k-934k parameters) come first and are all refused
    assert len(refused) >= 4
    assert all(t.metrics["params"] > 20_000 for t in refused)
    costs = sorted(t.cost or 0.0 for t in refused)
    assert costs[len(costs) // 2] < 1.0  # a build and a count, no training (the first call
    # also pays torch's one-time start-up)
    assert all(t.metrics["params"] <= 20_000 for t in res.trials if t.ok)


def test_a_bracket_that_would_promote_one_network_is_one_rung():
    """Promoting the single best of three cannot change the final choice: its time goes
    to the final training, with slack kept so the third trial of the rung still fits."""
    p = plan_job(200.0)
    assert p.n_configs == 3 and p.max_trial_s == p.min_trial_s
    assert p.search_s >= 3 * (p.min_trial_s + 3.0)  # the rung fits with its overheads
    assert p.search_s + p.final_s + p.reserve_s + p.spent_s == pytest.approx(200.0)
    assert any("one rung of 3" in line for line in p.describe())
    assert not any("->" in line for line in p.describe())
    wide = plan_job(900.0, 5.0)  # six networks, two promoted: both rungs stay
    assert wide.max_trial_s == pytest.approx(3 * wide.min_trial_s)


def test_a_job_whose_loading_ate_the_search_still_trains_one_candidate(tmp_path,
                                                                        monkeypatch):
    """Measured on a loaded machine: loading took 17 of 60 s, the search's share came out
    at 0 s and the job ended with no trial and no model. One candidate always runs."""
    from nasforge.run import api

    real = api._probed_plan

    def starved(plan, setup, data):
        p = real(plan, setup, data)
        p.search_s = 0.0
        return p

    monkeypatch.setattr(api, "_probed_plan", starved)
    res = nasforge.search(_tiny(200), time_budget=25, out=tmp_path / "r",
                          space_options={"max_blocks": 3, "widths": [8, 16],
                                         "stem_widths": [8]})
    assert len(res.trials) == 1 and res.trials[0].ok
    assert res.model_dir is not None


def test_no_search_when_trials_would_see_under_an_epoch():
    """Measured on detection (benchmarks/results/detection.md): sub-epoch trials rank by
    noise, and their time is worth more to the final training of the first design."""
    slow = Probe(step_s=0.25, infer_s=8e-4, n_train=54_000, n_val=6_000, n_test=10_000)
    p = plan_job(900.0, 5.0, probe=slow, tta=True, min_ranking_epochs=1.0)
    searched = plan_job(900.0, 5.0, probe=slow, tta=True)  # classification: rule off
    assert searched.n_configs == 6
    assert tasks.get("detection").min_ranking_epochs >= 1.0
    assert tasks.get("classification").min_ranking_epochs == 0.0
    assert p.n_configs == 1 and p.min_trial_s == p.max_trial_s <= 3.0
    assert p.final_s > searched.final_s + 200  # the search's share goes to the final model
    assert p.search_s < 15
    assert any("too little to rank" in line for line in p.describe())
    assert not any(line.startswith("one rung of") for line in p.describe())
    # the plain single-trial plan also keeps its trial short
    q = plan_job(60.0, 4.0)
    assert q.n_configs == 1 and q.min_trial_s <= 3.0 and q.search_s < 10


def test_the_winner_reserve_probes_at_the_job_batch_size_and_counts_the_latency_timing(
        monkeypatch):
    from types import SimpleNamespace

    from nasforge.run import budget as B
    from nasforge.run import plan as P

    seen = {}

    def probe(net, data, batch_size=128, steps=3):
        seen.update(batch_size=batch_size, steps=steps)
        return Probe(step_s=1.0, infer_s=0.01, n_train=100, n_val=10, n_test=20,
                     batch_size=batch_size)

    monkeypatch.setattr(B, "measure_probe", probe)
    est = SimpleNamespace(config=lambda: {"batch_size": 32, "augment": "none"})
    setup = SimpleNamespace(space=None, estimator=est)
    data = SimpleNamespace(build_network=lambda space, arch: torch.nn.Identity(), y_test=[])
    r = P._winner_reserve(setup, data, SimpleNamespace(arch="a"), planned=99.0)
    assert seen == {"batch_size": 32, "steps": 1}
    post = B.EXPORT_FIXED_S + 0.01 * 20
    assert r == pytest.approx(1.5 * (post + P.LATENCY_FORWARDS * 0.01))
    assert P.LATENCY_FORWARDS * 0.01 > 10  # the batch-32 timings dominate a slow network


# -- small data sets: the order of the known-good designs, no ranking by short trials -----------
def test_on_few_examples_the_classic_design_is_tried_first(tmp_path):
    """Measured on the 5-class image folder (2,400 examples; hand_design_small.md): trained
    by the same code for 106 s the classic design beat the first known-good one by 2.3-4.5
    points, so a small data set tries it first; Fashion-MNIST's 60,000 keep the order."""
    sp = spaces.get("cnn")
    small = sp.known_good_for(2_400)
    assert small[0].text == HAND
    assert sorted(a.text for a in small) == sorted(a.text for a in sp.known_good())
    assert sp.known_good_for(60_000) == sp.known_good()
    assert spaces.get("mlp").known_good_for(100) == spaces.get("mlp").known_good()
    # the time-budgeted job's strategy asks its evolution sampler, which has its own list
    sh = strategies.get("successive-halving", space=sp, seed=0, resource="seconds",
                        min_resource=3, max_resource=3, n_configs=3, sampler="evolution",
                        sampler_options={"population_size": 4, "sample_size": 2})
    sh.order_known_for(2_400)
    assert sh.ask().arch.text == HAND
    # a whole search on few examples trains the classic design as its first trial
    res = nasforge.search(_tiny(200), trials=1, out=tmp_path / "r", final_train=False)
    assert [t.arch for t in res.trials] == [HAND]
    # and a resumed one keeps that order (the state holds only how many were used)
    more = nasforge.search(_tiny(200), trials=2, out=tmp_path / "r", final_train=False,
                           resume=True)
    assert [t.arch for t in more.trials] == [HAND, sp.known_good()[0].text]


def test_no_search_when_one_rung_of_short_trials_precedes_a_long_final_training():
    """The 120-s job on the 5-class folder: 6.6-s trials ranked the fast design first, but
    at 106 s the classic design was 2-4 points better. Trials under a tenth of a final
    training of many epochs do not rank for it: the plan trains the first design."""
    folder = Probe(step_s=0.2, infer_s=3e-4, n_train=2_160, n_val=240, n_test=600)
    p = plan_job(120.0, 3.5, probe=folder)
    assert p.n_configs == 1 and p.min_trial_s <= 3.0
    assert any("rank networks by how fast they start" in line for line in p.describe())
    assert p.final_s > 0.8 * (120.0 - 3.5 - p.reserve_s)
    # a Fashion-MNIST job of 5 or 15 minutes (a few epochs in its final training) searches
    fashion = Probe(step_s=0.07, infer_s=2e-4, n_train=54_000, n_val=6_000, n_test=10_000)
    assert plan_job(300.0, 5.0, probe=fashion, tta=True).n_configs == 3
    assert plan_job(900.0, 5.0, probe=fashion, tta=True).n_configs == 6
