"""Zero-cost proxies: definitions, determinism, estimators, votes, validation report, warm start."""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import NB201_TABLE

from nasforge import estimators, spaces, strategies
from nasforge.data import Dataset
from nasforge.errors import NasforgeError
from nasforge.estimators import proxies as P
from nasforge.estimators.base import Result
from nasforge.spaces.base import Arch, Choice, SearchSpace
from nasforge.strategies.base import History

SHAPE = (3, 16, 16)
ALL_CONV = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|"
    "+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"
)
#: every path from the input to the output is cut by a 'none' op
CUT = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


class TinyCNN(nn.Module):
    """A hand-made CNN with the layer kinds the proxies care about (conv, BN, ReLU, linear)."""

    def __init__(self, width: int = 4, num_classes: int = 10, in_ch: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class TinySpace(SearchSpace):
    """One-choice space building :class:`TinyCNN`, to drive the estimators without nb201."""

    name = "tiny"

    def choices(self) -> tuple[Choice, ...]:
        return (Choice("width", (2, 4, 8)),)

    def build(self, arch: Arch, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        return TinyCNN(int(arch["width"]), num_classes, int(input_shape[0]))


def nb201_tiny() -> SearchSpace:
    return spaces.get("nb201", C=4, N=1)


def batch(seed: int = 0, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *SHAPE), generator=g), torch.randint(0, 10, (n,), generator=g)


def tiny_dataset(n: int = 40) -> Dataset:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, *SHAPE)).astype(np.float32)
    y = np.arange(n) % 10
    return Dataset("toy", x, y, x[:8], y[:8], x[:8], y[:8], classes=[str(i) for i in range(10)])


def nets() -> list[tuple[str, nn.Module]]:
    torch.manual_seed(0)
    sp = nb201_tiny()
    return [("nb201", sp.build(sp.parse(ALL_CONV), SHAPE, 10)), ("cnn", TinyCNN())]


# -- every proxy ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", P.PROXY_NAMES)
def test_proxies_finite_and_seed_deterministic(name: str) -> None:
    for kind, space, arch in [
        ("nb201", nb201_tiny(), nb201_tiny().parse(ALL_CONV)),
        ("cnn", TinySpace(), TinySpace().make([4])),
    ]:
        est = estimators.get(name, batch_size=16, input_shape=SHAPE, seed=3)
        a, b = est.evaluate(arch, space), est.evaluate(arch, space)
        assert a.ok, (kind, a.error)
        assert math.isfinite(a.metrics[name]), kind
        assert a.metrics == b.metrics, kind  # same seed, same number
        assert a.metrics["params"] > 0


@pytest.mark.parametrize("name", ["synflow", "naswot", "snip", "grad_norm", "fisher", "jacob_cov"])
def test_seed_changes_init_dependent_proxies(name: str) -> None:
    sp = nb201_tiny()
    arch = sp.parse(ALL_CONV)
    v = [
        estimators.get(name, batch_size=16, input_shape=SHAPE, seed=s).evaluate(arch, sp)
        for s in (0, 1)
    ]
    assert v[0].metrics[name] != v[1].metrics[name]


def test_synflow_ignores_data_and_is_positive() -> None:
    sp = nb201_tiny()
    arch = sp.parse(ALL_CONV)
    est = estimators.get("synflow", input_shape=SHAPE, seed=0)
    without = est.evaluate(arch, sp)
    data = tiny_dataset()
    with_data = est.evaluate(arch, sp, data)
    assert without.ok and with_data.ok
    assert without.metrics["synflow"] > 0
    assert without.metrics["synflow"] == with_data.metrics["synflow"]
    # and the caller's network keeps its weights and batch-norm (the proxy works on a copy)
    torch.manual_seed(0)
    net = sp.build(arch, SHAPE, 10)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    P.synflow(net, SHAPE)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


def test_synflow_of_a_linear_chain_is_layers_times_output() -> None:
    # bias-free linear chain with positive weights: sum(theta * dR/dtheta) = R per layer
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 5, bias=False), nn.Linear(5, 3, bias=False))
    w1, w2 = (m.weight.detach().double().abs() for m in (net[1], net[2]))
    r = float((w2 @ w1 @ torch.ones(12, dtype=torch.float64)).sum())
    assert P.synflow(net, (3, 2, 2)) == pytest.approx(2 * r, rel=1e-9)


def test_naswot_identical_inputs_score_lower() -> None:
    for kind, net in nets():
        x, _ = batch(0)
        same = x[:1].expand_as(x).clone()
        distinct, dup = P.naswot(net, x), P.naswot(net, same)
        assert math.isfinite(distinct), kind
        assert dup < distinct, kind  # identical rows make the kernel singular
        half = torch.cat([x[:8], x[:8]])
        assert P.naswot(net, half) < distinct, kind


def test_naswot_matches_reference_kernel() -> None:
    """The one-product Hamming kernel equals the reference's x x^T + (1-x)(1-x)^T."""
    torch.manual_seed(0)
    net = TinyCNN()
    x, _ = batch(1)
    k = np.zeros((len(x), len(x)))

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        c = (inp[0].reshape(len(x), -1) > 0).double()
        k[:] += (c @ c.t() + (1 - c) @ (1 - c).t()).numpy()

    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad():
        net.train()(x)
    for h in hs:
        h.remove()
    assert P.naswot(net, x) == pytest.approx(np.linalg.slogdet(k)[1], rel=1e-9)


def test_snip_and_grad_norm_match_their_definitions() -> None:
    torch.manual_seed(0)
    net = TinyCNN()
    x, y = batch(2)
    layers = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    # the reference's snip: gradient of the loss w.r.t. a multiplicative mask of ones
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    masks = {
        f"{n}.weight": torch.ones_like(m.weight, requires_grad=True)
        for n, m in zip(names, layers, strict=True)
    }
    params = {k: v.detach() * masks[k] if k in masks else v for k, v in net.named_parameters()}
    out = torch.func.functional_call(net, {**dict(net.named_buffers()), **params}, (x,))
    F.cross_entropy(out, y).backward()
    ref_snip = sum(float(m.grad.abs().sum()) for m in masks.values())  # type: ignore[union-attr]
    assert P.snip(net, x, y) == pytest.approx(ref_snip, rel=1e-5)
    net.zero_grad()
    F.cross_entropy(net(x), y).backward()
    ref_gn = sum(float(m.weight.grad.norm()) for m in layers)
    assert P.grad_norm(net, x, y) == pytest.approx(ref_gn, rel=1e-5)
    assert all(p.grad is None for p in net.parameters())  # proxies clean up after themselves


def test_shared_backward_gives_the_same_values() -> None:
    for kind, net in nets():
        x, y = batch(3)
        alone = {n: P.compute_proxy(n, net, x, y, SHAPE) for n in P.LOSS_BASED}
        shared = P.compute_proxies(list(P.LOSS_BASED), net, x, y, SHAPE)
        for n in P.LOSS_BASED:
            assert shared[n] == pytest.approx(alone[n], rel=1e-6), (kind, n)


def test_degenerate_network_fails_clearly() -> None:
    sp = nb201_tiny()
    res = estimators.get("jacob_cov", batch_size=8, input_shape=SHAPE).evaluate(sp.parse(CUT), sp)
    assert not res.ok and "does not depend on its input" in (res.error or "")
    # synflow of the same network is a finite 0: no flow from input to output
    syn = estimators.get("synflow", input_shape=SHAPE).evaluate(sp.parse(CUT), sp)
    assert syn.ok and syn.metrics["synflow"] == 0.0


def test_data_or_noise_is_reported() -> None:
    sp = TinySpace()
    arch = sp.make([4])
    est = estimators.get("naswot", batch_size=8, input_shape=SHAPE)
    noise = est.evaluate(arch, sp)
    real = est.evaluate(arch, sp, tiny_dataset())
    assert noise.report["proxy_input_noise"] == 1.0 and real.report["proxy_input_noise"] == 0.0
    assert noise.metrics["naswot"] != real.metrics["naswot"]
    res = estimators.get("naswot", inputs="data").evaluate(arch, sp)
    assert not res.ok and "needs a dataset" in (res.error or "")


def test_bad_options_are_user_errors() -> None:
    with pytest.raises(NasforgeError):
        estimators.get("snip", batch_size=1)
    with pytest.raises(NasforgeError):
        estimators.get("snip", inputs="cifar")
    with pytest.raises(NasforgeError):
        estimators.get("zc-vote", proxies="synflow,bogus")


# -- combinations -------------------------------------------------------------------------------
def test_rank_vote_is_mean_rank_and_puts_degenerate_last() -> None:
    scores = pd.DataFrame({"a": [1.0, 2.0, 3.0, -math.inf], "b": [10.0, 30.0, 20.0, 5.0]})
    v = P.rank_vote(scores)
    assert list(v) == [2.0, 3.5, 3.5, 1.0]  # a: -inf ranks 1; b: 5 < 10 < 20 < 30
    assert v.idxmin() == 3


def test_zc_vote_calibrates_and_is_monotone() -> None:
    sp = TinySpace()
    est = estimators.get(
        "zc-vote", proxies="synflow,naswot", batch_size=8, input_shape=SHAPE, calibration_size=3
    )
    res = est.evaluate(sp.make([4]), sp)
    assert res.ok and 0.0 <= res.metrics["zc_vote"] <= 1.0, res.error
    assert "calibration" in est.config() and "calibration_seconds" in res.report
    # given statistics: no calibration, and the config round-trips to the same number
    again = estimators.get("zc-vote", **est.config())
    assert again.evaluate(sp.make([4]), sp).metrics["zc_vote"] == pytest.approx(
        res.metrics["zc_vote"]
    )


def test_zc_vote_rank_is_the_percentile_in_the_calibration_pool() -> None:
    cal = {"synflow": [math.log(v) for v in (1e2, 1e4, 1e6, 1e8)], "naswot": [1.0, 2.0, 3.0, 4.0]}
    est = estimators.get("zc-vote", proxies="synflow,naswot", calibration=cal)
    assert est.combine({"synflow": 1e10, "naswot": 5.0}) == 1.0  # above every pool member
    assert est.combine({"synflow": 1.0, "naswot": 0.0}) == 0.0
    assert est.combine({"synflow": 1e5, "naswot": 2.5}) == pytest.approx(0.5)
    assert est.combine({"synflow": 1e4, "naswot": -math.inf}) == pytest.approx(0.375 / 2)
    z = estimators.get("zc-vote", proxies="synflow,naswot", calibration=cal, method="zscore")
    assert z.combine({"synflow": 1e5, "naswot": 2.5}) == pytest.approx(0.0)
    assert z.combine({"synflow": 1e5, "naswot": 3.5}) > 0.0
    with pytest.raises(NasforgeError):
        estimators.get("zc-vote", proxies="synflow,naswot", calibration={"synflow": [1.0, 2.0]})


# -- proxy-warmstart ---------------------------------------------------------------------------
def _pool_scorer(archs: Sequence[Arch]) -> list[float]:
    # a fake proxy: count of 3x3 convs (ties broken by the string for a total order)
    return [
        str(a).count("nor_conv_3x3") + (zlib.crc32(str(a).encode()) % 1000) / 1e4 for a in archs
    ]


def test_warmstart_asks_the_pool_top_k_first_then_evolves() -> None:
    sp = spaces.get("nb201")
    st = strategies.get(
        "proxy-warmstart", space=sp, seed=0, pool_size=50, top_k=4, scorer=_pool_scorer,
        base_options={"population_size": 6, "sample_size": 2},
    )  # fmt: skip
    asked = []
    for i in range(12):
        s = st.ask()
        asked.append(s.arch)
        st.tell(s, Result(metrics={"val_accuracy": 0.5 + 0.01 * i}))
    pool = st._sample_pool()
    best = sorted(pool, key=lambda a: -_pool_scorer([a])[0])[:4]
    assert asked[:4] == best
    assert st.base.n_asked == 12  # the warm start counts as the base's random phase
    assert len(set(asked)) == 12
    # after population_size asks evolution mutates: children differ from a member in one edge
    members = set(asked[:6])
    assert any(
        sum(x != y for x, y in zip(asked[6].values, m.values, strict=True)) == 1 for m in members
    )


def test_warmstart_state_round_trip_continues_identically() -> None:
    sp = spaces.get("nb201")
    kw = dict(space=sp, seed=1, pool_size=30, top_k=3, scorer=_pool_scorer, base="random")
    history = History()
    a = history.watch(strategies.get("proxy-warmstart", **kw))
    for i in range(4):  # past the warm start: the base's asks are resumed too
        s = a.ask()
        a.tell(s, Result(metrics={"val_accuracy": float(i)}))
    b = strategies.get("proxy-warmstart", **kw)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())), history.trials)
    assert b.base.seen == a.base.seen
    assert [a.ask().arch for _ in range(5)] == [b.ask().arch for _ in range(5)]


def test_warmstart_with_a_real_proxy_counts_its_cost() -> None:
    sp = spaces.get("nb201", C=2, N=1)
    st = strategies.get("proxy-warmstart", space=sp, seed=0, proxy="params", pool_size=6, top_k=2)
    first = st.ask()
    assert st.proxy_seconds > 0
    params = dict(st.pool_scores)
    assert params[first.arch.text] == max(params.values())


# -- validation report ----------------------------------------------------------------------------
needs_table = pytest.mark.skipif(not NB201_TABLE.is_file(), reason="NAS-Bench-201 table not found")


@needs_table
def test_validation_report_on_a_tiny_sample(tmp_path: Path) -> None:
    from nasforge.proxy_eval import validate_proxies

    res = validate_proxies(
        table=NB201_TABLE, dataset="cifar10,cifar100", samples=6, proxies="synflow,naswot,params",
        workers=1, data="noise", batch_size=8, space_config={"C": 2, "N": 1}, out=tmp_path,
        timing_samples=3, votes=[("synflow", "naswot")],
    )  # fmt: skip
    assert set(res["dataset"]) == {"cifar10", "cifar100"}
    assert {"synflow", "naswot", "params", "rank-vote(synflow+naswot)"} <= set(res["proxy"])
    row = res[(res["dataset"] == "cifar10") & (res["proxy"] == "synflow")].iloc[0]
    assert -1 <= row["spearman"] <= 1 and row["cpu_s"] > 0 and row["n"] == 6
    md = (tmp_path / "proxies_nb201.md").read_text()
    assert "## cifar10_valid" in md and "## cifar100_valid" in md and "| synflow |" in md
    assert "standard-normal noise" in md
    scores = pd.read_csv(tmp_path / "proxies_nb201_scores.csv")
    assert len(scores) == 6 and "synflow@100" in scores.columns
    # naswot never sees the classifier: computed once, equal for both class counts
    assert (scores["naswot@10"] == scores["naswot@100"]).all()
    assert (scores["synflow@10"] != scores["synflow@100"]).any()


@needs_table
def test_validation_rejects_bad_input() -> None:
    from nasforge.proxy_eval import validate_proxies

    with pytest.raises(NasforgeError):
        validate_proxies(table=NB201_TABLE, dataset="svhn", samples=5, out=None)
    with pytest.raises(NasforgeError):
        validate_proxies(table=NB201_TABLE, proxies="synflow,magic", samples=5, out=None)


@needs_table
def test_cli_command_writes_the_report(tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from nasforge.proxy_eval import register_cli

    app = typer.Typer()
    app.command("noop")(lambda: None)  # two commands, so `proxies` stays a sub-command
    register_cli(app)
    args = ["proxies", "--table", str(NB201_TABLE), "--samples", "3", "--workers", "1"]
    args += ["--proxies", "params,synflow", "--data", "noise", "--out", str(tmp_path)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "synflow" in res.output and (tmp_path / "proxies_nb201.md").is_file()
    bad = CliRunner().invoke(app, [*args[:-6], "--proxies", "synflow,nope"])
    assert isinstance(bad.exception, NasforgeError)


@needs_table
def test_proxy_assisted_search_counts_queries(tmp_path: Path) -> None:
    from nasforge.estimators.nb201_table import load_table
    from nasforge.proxy_eval import proxy_assisted_search

    tab = load_table(NB201_TABLE)
    oracle = dict(zip(tab.archs, tab.valid["cifar10"], strict=True))  # a perfect proxy
    res = proxy_assisted_search(
        {"oracle": (oracle, 0.01)}, table=NB201_TABLE, datasets=["cifar10"], top=2000,
        bases=["random"], seeds=3, pool_sizes=[200], max_queries=50, out=tmp_path,
    )  # fmt: skip
    plain = res[res["proxy"] == "-"].iloc[0]
    warm = res[res["proxy"] == "oracle"].iloc[0]
    # a pool of 200 holds one of the best 2000 (13 %) all but surely; the oracle asks it first
    assert warm["median"] == 1.0 and warm["p75"] == 1.0 and warm["found"] == 1.0
    assert warm["proxy_cpu_s"] == pytest.approx(2.0)
    assert plain["median"] >= warm["median"] and plain["proxy_cpu_s"] == 0.0
    assert "| random | oracle |" in (tmp_path / "proxy_assisted_nb201.md").read_text()
