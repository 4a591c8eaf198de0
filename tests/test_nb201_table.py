"""The nb201-table estimator: lookups, helpers, caching and clear errors on bad tables."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch.nn as nn
from conftest import NB201_TABLE

from nasforge import estimators, spaces
from nasforge.errors import NasforgeError
from nasforge.estimators.nb201_table import TABLE_ENV, load_table
from nasforge.spaces.base import Arch, Choice, SearchSpace

A1 = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
)
A2 = "|none~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|none~2|"
A3 = (
    "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|nor_conv_1x1~1|nor_conv_1x1~2|"
)
MISSING = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write(
        tmp_path,
        "index,arch,cifar10_valid,cifar10_test,svhn_valid,svhn_test\n"
        f"0,{A1},80.5,85.0,90.0,91.0\n"
        f"1,{A2},60.0,61.5,95.5,94.0\n"
        f"2,{A3},80.5,84.0,70.0,71.0\n",
    )


def test_lookup_returns_fractions_and_keeps_test_report_only(tiny: Path) -> None:
    space = spaces.get("nb201")
    est = estimators.get("nb201-table", table=str(tiny))
    assert est.needs_data is False
    res = est.evaluate(space.parse(A1), space)
    assert res.ok
    assert res.metrics == {"val_accuracy": pytest.approx(0.805)}
    assert res.report == {"test_accuracy": pytest.approx(0.85)}
    assert res.cost == 0.0
    assert "test_accuracy" not in res.visible().metrics


def test_any_dataset_pair_and_unknown_dataset(tiny: Path) -> None:
    space = spaces.get("nb201")
    est = estimators.get("nb201-table", table=str(tiny), dataset="svhn")
    assert est.evaluate(space.parse(A2), space).metrics["val_accuracy"] == pytest.approx(0.955)
    with pytest.raises(NasforgeError, match="cifar10, svhn"):
        estimators.get("nb201-table", table=str(tiny), dataset="imagenet16")


def test_missing_arch_is_a_failed_result_not_an_exception(tiny: Path) -> None:
    space = spaces.get("nb201")
    res = estimators.get("nb201-table", table=str(tiny)).evaluate(space.parse(MISSING), space)
    assert not res.ok and "not in the table" in (res.error or "")


def test_helpers_best_ceiling_and_top_k_with_ties(tiny: Path) -> None:
    est = estimators.get("nb201-table", table=str(tiny))
    assert est.best_arch() == A1  # tie at 80.5 with A3: the first row wins
    assert est.ceiling() == pytest.approx(0.85)
    assert est.top_k(1) == {A1, A3}  # ties with the k-th are included
    assert est.top_k(3) == {A1, A2, A3}
    svhn = estimators.get("nb201-table", table=str(tiny), dataset="svhn")
    assert svhn.best_arch() == A2 and svhn.ceiling() == pytest.approx(0.94)


def test_table_path_from_environment_or_a_clear_error(tiny: Path, monkeypatch) -> None:
    monkeypatch.delenv(TABLE_ENV, raising=False)
    with pytest.raises(NasforgeError, match="--estimator-opt table=PATH"):
        estimators.get("nb201-table")
    monkeypatch.setenv(TABLE_ENV, str(tiny))
    assert estimators.get("nb201-table").best_arch() == A1
    with pytest.raises(NasforgeError, match="does not exist"):
        estimators.get("nb201-table", table=str(tiny.parent / "nope.csv"))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "empty"),
        ("index,arch,cifar10_valid\n0,|a|,1\n", "D_valid/D_test"),
        ("arch,cifar10_valid,cifar10_test\n|a|,1,2\n", "index"),
        ("index,arch,cifar10_valid,cifar10_test\n", "no rows"),
        (f"index,arch,cifar10_valid,cifar10_test\n0,{A1},80.1,oops\n", "line 2.*oops"),
        (f"index,arch,cifar10_valid,cifar10_test\n0,{A1},80.1,81\n1,{A2},80\n", "line 3"),
        (f"index,arch,cifar10_valid,cifar10_test\n0,{A1},80.1,81,5,6\n", "line 2 has 6 fields"),
        (f"index,arch,cifar10_valid,cifar10_test\n0,{A1},80.1,81\n1,{A1},70,71\n", "twice"),
        ("index,arch,cifar10_valid,cifar10_test\n0,,80.1,81\n", "empty 'arch'"),
    ],
)
def test_malformed_tables_raise_clear_errors(tmp_path: Path, text: str, match: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(NasforgeError, match=match):
        estimators.get("nb201-table", table=str(p))


def test_cache_is_per_path_and_mtime(tiny: Path) -> None:
    t1 = load_table(tiny)
    assert load_table(tiny) is t1
    text = tiny.read_text().replace("85.0", "86.0")
    tiny.write_text(text)
    st = tiny.stat()
    os.utime(tiny, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a visibly newer file
    t2 = load_table(tiny)
    assert t2 is not t1 and t2.lookup(A1, "cifar10") == (80.5, 86.0)


class OtherSpace(SearchSpace):
    name = "other"

    def choices(self) -> tuple[Choice, ...]:
        return (Choice("a", (1, 2)),)

    def build(self, arch: Arch, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        raise NotImplementedError


def test_other_space_fails_cleanly(tiny: Path) -> None:
    space = OtherSpace()
    res = estimators.get("nb201-table", table=str(tiny)).evaluate(next(space.enumerate()), space)
    assert not res.ok and "nb201" in (res.error or "")


@pytest.mark.skipif(not NB201_TABLE.is_file(), reason="NAS-Bench-201 table not available")
def test_real_table_loads_fast_and_covers_the_space() -> None:
    import pandas  # noqa: F401  (the import is not the load; time only the load)

    from nasforge.estimators import nb201_table

    nb201_table._cache.clear()
    t0 = time.perf_counter()
    table = load_table(NB201_TABLE)
    elapsed = time.perf_counter() - t0
    assert elapsed < 1.0, f"loading took {elapsed:.2f}s"
    assert len(table) == 15625 and {"cifar10", "cifar100"} <= set(table.datasets)
    space = spaces.get("nb201")
    est = estimators.get("nb201-table", table=str(NB201_TABLE), dataset="cifar10")
    for a in list(space.enumerate())[::997]:  # the space's strings are the table's keys
        assert est.evaluate(a, space).ok
    best = space.parse(est.best_arch())
    res = est.evaluate(best, space)
    assert res.report["test_accuracy"] == pytest.approx(est.ceiling())
    top = est.top_k(10)
    assert est.best_arch() in top and len(top) >= 10
    vals = sorted((est.lookup(t)[0] for t in top), reverse=True)
    assert vals[0] == pytest.approx(res.metrics["val_accuracy"])
