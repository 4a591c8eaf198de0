"""NAS-Bench-201 table lookup: an estimator that trains nothing.

Benchmarking a search strategy on real training costs GPU-days; the NAS-Bench-201
table holds the accuracies recorded for all 15,625 cells, so a "query" becomes a
dictionary lookup and strategies can be compared over 100 seeds in minutes. The CSV
has columns ``index``, ``arch`` and, for any dataset ``D``, the pair ``D_valid`` /
``D_test`` (percent). Strategies see only the validation accuracy (``metrics``);
the test accuracy goes to ``Result.report`` for the benchmark protocol.
"""

from __future__ import annotations

import csv
import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nasforge.errors import DataError, NasforgeError
from nasforge.estimators import register
from nasforge.estimators.base import Estimator, Result

if TYPE_CHECKING:
    from nasforge.data import Dataset
    from nasforge.spaces.base import Arch, SearchSpace

#: environment variable naming the table when no ``table`` option is given
TABLE_ENV = "NASFORGE_NB201_TABLE"
_REQUIRED = ("index", "arch")


@dataclass
class NB201Table:
    """A loaded table: arch string -> row, and per-dataset valid/test accuracies in percent."""

    path: Path
    archs: list[str]
    index: np.ndarray
    valid: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    row_of: dict[str, int] = field(repr=False, default_factory=dict)

    @property
    def datasets(self) -> list[str]:
        return sorted(self.valid)

    def __len__(self) -> int:
        return len(self.archs)

    def check_dataset(self, dataset: str) -> str:
        """``dataset`` if the table has it, else a NasforgeError listing the ones it has."""
        if dataset not in self.valid:
            raise NasforgeError(
                f"nb201-table: dataset {dataset!r} is not in {self.path} "
                f"(it has: {', '.join(self.datasets) or 'none'}); pass --estimator-opt dataset=NAME"
            )
        return dataset

    def lookup(self, arch: str, dataset: str) -> tuple[float, float] | None:
        """(valid %, test %) of ``arch``, or None when the table does not have it."""
        row = self.row_of.get(arch.strip())
        if row is None:
            return None
        return float(self.valid[dataset][row]), float(self.test[dataset][row])

    def ranking(self, dataset: str) -> np.ndarray:
        """Rows by validation accuracy, best first; ties broken by the lower row (stable)."""
        self.check_dataset(dataset)
        return np.argsort(-self.valid[dataset], kind="stable")

    def best(self, dataset: str) -> tuple[str, float, float]:
        """(arch, valid %, test %) of the arch with the best validation accuracy (first on ties)."""
        row = int(self.ranking(dataset)[0])
        return self.archs[row], float(self.valid[dataset][row]), float(self.test[dataset][row])

    def best_test_of_best_valid(self, dataset: str) -> float:
        """The ceiling of the NB201 protocol: test % of the best-validation arch."""
        return self.best(dataset)[2]

    def top_k(self, dataset: str, k: int = 10) -> set[str]:
        """The archs among the ``k`` best by validation accuracy, plus any tied with the k-th."""
        if k < 1:
            raise NasforgeError("top_k: k must be at least 1")
        order = self.ranking(dataset)
        v = self.valid[dataset]
        kth = v[order[min(k, len(order)) - 1]]
        return {self.archs[int(r)] for r in order if v[r] >= kth}


_cache: dict[tuple[str, int, int], NB201Table] = {}
_lock = threading.Lock()


def resolve_table_path(table: str | os.PathLike[str] | None) -> Path:
    """The table's path from the option, else the environment, else a hint on what to do."""
    raw = table if table not in (None, "") else os.environ.get(TABLE_ENV)
    if not raw:
        raise NasforgeError(
            "nb201-table needs the NAS-Bench-201 CSV: pass --estimator-opt table=PATH "
            f"(or table=... in Python) or set the environment variable {TABLE_ENV}"
        )
    path = Path(raw).expanduser()
    if not path.is_file():
        raise DataError(
            f"nb201-table: table file {str(path)!r} does not exist; "
            f"pass --estimator-opt table=PATH or set {TABLE_ENV} to the NAS-Bench-201 CSV"
        )
    return path


def load_table(table: str | os.PathLike[str] | None = None) -> NB201Table:
    """Load (or fetch from the in-process cache, keyed by path and mtime) a NB201 CSV table."""
    path = resolve_table_path(table)
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    with _lock:
        hit = _cache.get(key)
        if hit is None:
            hit = _read(path)
            _cache[key] = hit
    return hit


def _read(path: Path) -> NB201Table:
    import pandas as pd  # deferred: only table users pay for the import

    where = f"nb201-table: {path}"
    try:
        with warnings.catch_warnings():  # a row longer than the header only warns in pandas
            warnings.simplefilter("error", pd.errors.ParserWarning)
            df = pd.read_csv(
                path, dtype=str, keep_default_na=False, skipinitialspace=True, index_col=False
            )
    except pd.errors.EmptyDataError:
        raise DataError(
            f"{where} is empty; expected a CSV with columns index, arch, D_valid, D_test"
        ) from None
    except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError) as e:
        raise DataError(f"{where} is not a well-formed CSV: {_bad_line(path) or e}") from None
    cols = [str(c).strip() for c in df.columns]
    df.columns = cols
    missing = [c for c in _REQUIRED if c not in cols]
    pairs = sorted(
        c[: -len("_valid")] for c in cols if c.endswith("_valid") and f"{c[:-6]}_test" in cols
    )
    if missing or not pairs:
        raise DataError(
            f"{where} lacks column(s) {missing or ['D_valid/D_test pair']}; it has {cols}. "
            "Expected index, arch and a D_valid/D_test pair per dataset "
            "(e.g. cifar10_valid, cifar10_test)"
        )
    if len(df) == 0:
        raise DataError(f"{where} has a header but no rows")
    archs = [a.strip() for a in df["arch"].tolist()]
    empty = [i for i, a in enumerate(archs) if not a]
    if empty:
        raise DataError(f"{where}: row {empty[0] + 2} (line of the file) has an empty 'arch'")
    row_of: dict[str, int] = {}
    for i, a in enumerate(archs):
        if a in row_of:
            raise DataError(
                f"{where}: architecture {a!r} appears twice (lines {row_of[a] + 2} and {i + 2})"
            )
        row_of[a] = i
    index = _numeric(df, "index", where).astype(np.int64)
    valid = {d: _numeric(df, f"{d}_valid", where) for d in pairs}
    test = {d: _numeric(df, f"{d}_test", where) for d in pairs}
    return NB201Table(path, archs, index, valid, test, row_of)


def _bad_line(path: Path) -> str | None:
    """The first line whose field count differs from the header's (error path only)."""
    try:
        with path.open(newline="") as f:
            rows = csv.reader(f)
            header = next(rows, [])
            for line, row in enumerate(rows, start=2):
                if row and len(row) != len(header):
                    return f"line {line} has {len(row)} fields, the header {len(header)}"
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    return None


def _numeric(df: Any, col: str, where: str) -> np.ndarray:
    """Column ``col`` as floats; a blank or non-number cell is a DataError naming its line."""
    import pandas as pd

    vals = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(vals))
    if bad.size:
        r = int(bad[0])
        raise DataError(
            f"{where}: line {r + 2}, column {col!r} holds {df[col].iloc[r]!r}, not a number "
            f"({bad.size} bad cell(s) in that column)"
        )
    return vals


@register("nb201-table")
class NB201TableEstimator(Estimator):
    """NAS-Bench-201 lookup: validation accuracy from the table (test accuracy report-only)."""

    needs_data = False
    #: nominal cost of one lookup: nothing is trained
    nominal_cost = 0.0

    def __init__(
        self, table: str | os.PathLike[str] | None = None, dataset: str = "cifar10"
    ) -> None:
        self.table_path = resolve_table_path(table)
        self.dataset = str(dataset)
        self.table.check_dataset(self.dataset)

    @property
    def table(self) -> NB201Table:
        """The loaded table (cached per path and mtime, so re-reads only when the file changes)."""
        return load_table(self.table_path)

    def config(self) -> dict[str, Any]:
        return {"table": str(self.table_path), "dataset": self.dataset}

    def evaluate(
        self,
        arch: Arch,
        space: SearchSpace,
        data: Dataset | None = None,
        fidelity: Mapping[str, Any] | None = None,
    ) -> Result:
        """As :meth:`Estimator.evaluate`, but the cost stays nominal (0): nothing is trained."""
        res = super().evaluate(arch, space, data, fidelity)
        res.cost = self.nominal_cost
        return res

    def _evaluate(
        self, arch: Arch, space: SearchSpace, data: Dataset | None, fidelity: dict[str, Any]
    ) -> Result:
        if arch.space != "nb201":
            raise NasforgeError(f"nb201-table only knows the nb201 space, not {arch.space!r}")
        hit = self.table.lookup(arch.text, self.dataset)
        if hit is None:
            return Result.failed(
                f"architecture {arch.text!r} is not in the table {self.table_path}"
            )
        valid, test = hit
        return Result(
            metrics={"val_accuracy": valid / 100.0},
            cost=self.nominal_cost,
            report={"test_accuracy": test / 100.0},
        )

    # -- helpers for benchmarks ------------------------------------------------------
    def lookup(self, text: str) -> tuple[float, float] | None:
        """(val, test) as fractions for an arch string, or None; the fast path of the harness."""
        hit = self.table.lookup(text, self.dataset)
        return None if hit is None else (hit[0] / 100.0, hit[1] / 100.0)

    def best_arch(self) -> str:
        return self.table.best(self.dataset)[0]

    def ceiling(self) -> float:
        """Test accuracy (fraction) of the best-validation arch: the best a search can report."""
        return self.table.best_test_of_best_valid(self.dataset) / 100.0

    def top_k(self, k: int = 10) -> set[str]:
        return self.table.top_k(self.dataset, k)
