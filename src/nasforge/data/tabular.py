"""Tabular data: a CSV / TSV / Parquet file or a pandas DataFrame to a :class:`Dataset`.

Columns are typed once (numeric, categorical, date; id-like and constant columns are
dropped with a message), the table is split (test, then validation, seeded; stratified for
classification) and the preprocessing is fitted on the *training split only*: medians for
missing numbers (plus a missing-indicator feature), categories seen in training (missing is a
category of its own, unseen ones encode as all zeros), then every feature standardized with
the training mean and standard deviation. The fitted preprocessing is plain JSON
(:meth:`TabularPreprocessor.state`), stored in the model directory, so ``predict`` on a new
DataFrame, CSV or dict records applies exactly the same steps without any pickled code.

Written here rather than with scikit-learn's ``ColumnTransformer`` because that one only
round-trips through pickle, which nasforge never loads (see CONTRIBUTING).
"""

from __future__ import annotations

import difflib
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nasforge.data.dataset import Dataset, _limit, _split
from nasforge.errors import DataError, NasforgeError

if TYPE_CHECKING:
    import pandas as pd

#: file suffixes read as tables, and their separators (Parquet needs pyarrow)
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".parquet": None, ".pq": None}
#: an integer column with at most this many distinct values is categorical
MAX_INT_CATEGORIES = 10
#: categories kept per column (the most frequent in training); the rest share one "other"
MAX_CATEGORIES = 50
#: fewest rows a table must have (after dropping rows without a target)
MIN_ROWS = 10
#: refuse tables wider than this (one-hot columns included) before allocating them
MAX_FEATURES = 100_000
STATE_VERSION = 1
_MISSING = "(missing)"
_DATE_PARTS = ("days", "month", "weekday")


def is_table_path(obj: object) -> bool:
    """Whether ``obj`` names a table file by its suffix (it need not exist yet)."""
    return isinstance(obj, str | os.PathLike) and \
        Path(os.fspath(obj)).suffix.lower() in TABLE_SUFFIXES


def is_dataframe(obj: object) -> bool:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        return False
    return isinstance(obj, pd.DataFrame)


# ------------------------------------------------------------------------------ reading
def read_table(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The file as a DataFrame; an empty, unreadable or non-table file is one clear error."""
    import pandas as pd

    p = Path(os.fspath(path)).expanduser()
    suffix = p.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"{p}: not a table file; give a .csv, .tsv or .parquet file")
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise DataError(f"{p} is empty: a table needs a header line and rows")
    if TABLE_SUFFIXES[suffix] is None:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise DataError(f"{p}: reading Parquet needs pyarrow (pip install "
                            "'nasforge[tabular]'), or save the table as CSV") from None
        try:
            return pd.read_parquet(p)
        except Exception as e:  # noqa: BLE001 - pyarrow raises many types
            raise DataError(f"{p} is not a readable Parquet file: {str(e)[:200]}") from None
    with open(p, "rb") as f:
        head = f.read(4096)
    if b"\0" in head:
        raise DataError(f"{p} is not a text table (it holds binary data); give a CSV/TSV file")
    try:
        df = pd.read_csv(p, sep=TABLE_SUFFIXES[suffix], skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise DataError(f"{p} is empty: a table needs a header line and rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{p} is not a readable {suffix[1:].upper()} table: "
                        f"{' '.join(str(e).split())[:200]}") from None
    if df.shape[1] < 1 or len(df) == 0:
        raise DataError(f"{p} has a header but no rows")
    return df


# ------------------------------------------------------------------------------ typing
def _is_missing(s: pd.Series) -> np.ndarray:
    return np.asarray(s.isna(), bool)


def _key(v: Any) -> str:
    """A category's name: ``3``, ``3.0`` and ``"3"`` are the same category (a CSV column of
    small integers with a gap reads as floats), ``True`` is ``"True"``."""
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        f = float(v)
        return str(int(f)) if math.isfinite(f) and f == round(f) and abs(f) < 2**53 else repr(f)
    return str(v).strip()


def _as_numbers(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(float values, which non-missing values are not numbers)``."""
    import pandas as pd

    if s.dtype == bool:
        return s.to_numpy(np.float64), np.zeros(len(s), bool)
    num = pd.to_numeric(s, errors="coerce")
    vals = np.asarray(num, np.float64)
    bad = np.isnan(vals) & ~_is_missing(s)
    return vals, bad


def _looks_like_dates(s: pd.Series) -> bool:
    """Text values that all parse as dates and have date punctuation (2024-01-31, 1/31/24)."""
    import warnings

    import pandas as pd

    vals = s.dropna().astype(str)
    if vals.empty:
        return False
    sample = vals.iloc[:200]
    if not sample.str.contains(r"^\s*\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}", regex=True).all():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(sample, errors="coerce", format="mixed")
    return bool(parsed.notna().all())


def _date_parts(s: pd.Series) -> np.ndarray:
    """(N, 3): days since 1970, month, weekday (NaN where missing or not a date)."""
    import warnings

    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if pd.api.types.is_datetime64_any_dtype(s):
            t = s
        else:
            t = pd.to_datetime(s.astype("string"), errors="coerce", format="mixed")
    if getattr(t.dt, "tz", None) is not None:
        t = t.dt.tz_convert(None)
    ok = t.notna().to_numpy()
    out = np.full((len(s), 3), np.nan)
    tt = t[ok]
    out[ok, 0] = (tt - pd.Timestamp("1970-01-01")).dt.total_seconds().to_numpy() / 86400.0
    out[ok, 1] = tt.dt.month.to_numpy()
    out[ok, 2] = tt.dt.day_of_week.to_numpy()
    return out


def column_kinds(df: pd.DataFrame, name: str = "table") -> tuple[dict[str, str],
                                                                   dict[str, str]]:
    """``(kinds, dropped)``: each feature column's kind (``numeric``, ``categorical``,
    ``date``) and each dropped column's reason. Mixed numbers and text, or a column without
    any value, is the user's to fix (an error naming the column)."""
    import pandas as pd

    kinds: dict[str, str] = {}
    dropped: dict[str, str] = {}
    n = len(df)
    for col in df.columns:
        s = df[col]
        miss = _is_missing(s)
        if miss.all():
            raise DataError(f"{name}: column {col!r} has no values (all {n} rows are "
                            "missing); drop it from the table")
        present = s[~miss]
        nunique = int(present.map(_key).nunique()) if present.dtype == object else \
            int(present.nunique())
        if pd.api.types.is_datetime64_any_dtype(s):
            kinds[str(col)] = "date"
            continue
        if nunique == 1:
            dropped[str(col)] = f"constant ({_key(present.iloc[0])!s:.30} in every row)"
            continue
        if s.dtype == bool or pd.api.types.is_bool_dtype(s):
            kinds[str(col)] = "categorical"
            continue
        if pd.api.types.is_numeric_dtype(s):
            vals = present.to_numpy(np.float64)
            whole = bool(np.all(vals == np.round(vals)))
            if whole and nunique == n and n > MAX_INT_CATEGORIES and _is_id(vals):
                dropped[str(col)] = "id-like (a different whole number in every row)"
            elif whole and nunique <= MAX_INT_CATEGORIES:
                kinds[str(col)] = "categorical"
            else:
                kinds[str(col)] = "numeric"
            continue
        # text (or Python objects): numbers written as text, dates, or categories
        vals, bad = _as_numbers(present)
        n_bad, n_ok = int(bad.sum()), int((~bad).sum())
        if n_bad == 0:
            whole = bool(np.all(vals == np.round(vals)))
            kinds[str(col)] = "categorical" if whole and nunique <= MAX_INT_CATEGORIES \
                else "numeric"
        elif n_ok and n_ok >= n_bad:
            examples = ", ".join(repr(v) for v in present[bad].astype(str).unique()[:3])
            raise DataError(
                f"{name}: column {col!r} mixes numbers and text ({n_ok} numbers, {n_bad} "
                f"text values such as {examples}); fix those cells or leave them empty")
        elif _looks_like_dates(present):
            kinds[str(col)] = "date"
        elif nunique == n and n > MAX_INT_CATEGORIES:
            dropped[str(col)] = "id-like (a different value in every row)"
        else:
            kinds[str(col)] = "categorical"
    return kinds, dropped


def _is_id(vals: np.ndarray) -> bool:
    """Whole numbers, one per row, that count (a row number: consecutive or sorted)."""
    v = np.sort(vals)
    return bool(np.all(np.diff(vals) > 0) or np.all(np.diff(v) == 1))


# ------------------------------------------------------------------------------ the fit
@dataclass
class TabularPreprocessor:
    """The fitted column-to-feature steps, as data: ``columns`` in order, each
    ``{"name", "kind", ...}`` with its imputation value / categories; ``mean``/``std``
    standardize the resulting features. :meth:`state` is JSON, :meth:`from_state` checks it."""

    columns: list[dict[str, Any]]
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)
    targets: list[str] = field(default_factory=list)

    @classmethod
    def fit(cls, df: pd.DataFrame, kinds: Mapping[str, str], dropped: Mapping[str, str],
            targets: Sequence[str]) -> TabularPreprocessor:
        """Learn imputation values, categories and scaling from ``df`` (the training split)."""
        cols: list[dict[str, Any]] = []
        for name, kind in kinds.items():
            s = df[name]
            miss = _is_missing(s)
            if kind == "numeric":
                vals, _ = _as_numbers(s)
                ok = vals[~np.isnan(vals)]
                fill = float(np.median(ok)) if ok.size else 0.0
                cols.append({"name": name, "kind": kind, "fill": fill,
                             "flag": bool(np.isnan(vals).any())})
            elif kind == "date":
                parts = _date_parts(s)
                fill = [float(np.nanmedian(parts[:, j])) if (~np.isnan(parts[:, j])).any()
                        else 0.0 for j in range(3)]
                cols.append({"name": name, "kind": kind, "fill": fill,
                             "flag": bool(np.isnan(parts[:, 0]).any())})
            else:
                keys = s[~miss].map(_key)
                counts = keys.value_counts()
                cats = sorted(str(k) for k in counts.index[:MAX_CATEGORIES])
                cols.append({"name": name, "kind": "categorical", "categories": cats,
                             "missing": bool(miss.any()),
                             "other": bool(len(counts) > MAX_CATEGORIES)})
        pre = cls(cols, dropped=dict(dropped), targets=list(targets))
        if pre.n_features > MAX_FEATURES:
            raise DataError(f"the table encodes to {pre.n_features:,} features, over the "
                            f"{MAX_FEATURES:,} nasforge takes; drop wide text columns")
        raw = pre.encode(df)
        mean = raw.mean(0, dtype=np.float64)
        std = raw.std(0, dtype=np.float64)
        pre.mean = [float(v) for v in mean]
        pre.std = [float(s) if s > 1e-6 else 1.0 for s in std]
        return pre

    # -- features ------------------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        out: list[str] = []
        for c in self.columns:
            n = c["name"]
            if c["kind"] == "numeric":
                out.append(n)
            elif c["kind"] == "date":
                out += [f"{n}.{p}" for p in _DATE_PARTS]
            else:
                out += [f"{n}={k}" for k in c["categories"]]
                if c["missing"]:
                    out.append(f"{n}={_MISSING}")
                if c["other"]:
                    out.append(f"{n}=(other)")
            if c["kind"] != "categorical" and c["flag"]:
                out.append(f"{n}.missing")
        return out

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def input_columns(self) -> list[str]:
        return [c["name"] for c in self.columns]

    def encode(self, df: pd.DataFrame) -> np.ndarray:
        """Columns -> unscaled float64 features (imputed, one-hot, date parts, flags)."""
        parts: list[np.ndarray] = []
        n = len(df)
        for c in self.columns:
            s = df[c["name"]]
            if c["kind"] == "numeric":
                vals, bad = _as_numbers(s)
                if bad.any():
                    ex = s[bad].astype(str).iloc[0]
                    raise DataError(f"column {c['name']!r} is numeric, but row "
                                    f"{int(np.flatnonzero(bad)[0])} holds {ex!r:.40}")
                miss = np.isnan(vals)
                parts.append(np.where(miss, c["fill"], vals)[:, None])
                if c["flag"]:
                    parts.append(miss.astype(np.float64)[:, None])
            elif c["kind"] == "date":
                d = _date_parts(s)
                miss = np.isnan(d[:, 0])
                parts.append(np.where(np.isnan(d), np.asarray(c["fill"])[None, :], d))
                if c["flag"]:
                    parts.append(miss.astype(np.float64)[:, None])
            else:
                cats = c["categories"]
                index = {k: i for i, k in enumerate(cats)}
                width = len(cats) + int(c["missing"]) + int(c["other"])
                oh = np.zeros((n, width))
                miss = _is_missing(s)
                keys = [None if m else _key(v) for v, m in zip(s.tolist(), miss, strict=True)]
                for i, k in enumerate(keys):
                    if k is None:
                        if c["missing"]:
                            oh[i, len(cats)] = 1.0
                    elif k in index:
                        oh[i, index[k]] = 1.0
                    elif c["other"]:
                        oh[i, width - 1] = 1.0  # rare in training: the shared column
                    # else: a category never seen in training: all zeros
                parts.append(oh)
        return np.concatenate(parts, axis=1) if parts else np.zeros((n, 0))

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """The model's input: encoded, standardized float32 (N, F)."""
        raw = self.encode(df)
        x = (raw - np.asarray(self.mean)[None, :]) / np.asarray(self.std)[None, :]
        return np.ascontiguousarray(x, np.float32)

    def check_columns(self, df: pd.DataFrame) -> None:
        """Missing or unexpected columns, in one line naming them (targets and columns
        dropped at training may be present; they are ignored)."""
        have = [str(c) for c in df.columns]
        missing = [c for c in self.input_columns if c not in have]
        extra = [c for c in have if c not in self.input_columns and c not in self.dropped
                 and c not in self.targets]
        msg = []
        if missing:
            msg.append(f"missing column(s) {', '.join(map(repr, missing[:10]))}")
        if extra:
            msg.append(f"unexpected column(s) {', '.join(map(repr, extra[:10]))}")
        if msg:
            raise DataError("; ".join(msg) + f" (the model takes "
                            f"{', '.join(self.input_columns[:20])})")

    def __call__(self, rows: Any) -> np.ndarray:
        """Any accepted input (DataFrame, table path, dict, list of dicts) -> features."""
        df = as_frame(rows)
        self.check_columns(df)
        return self.transform(df)

    # -- persistence -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "columns": self.columns, "mean": self.mean,
                "std": self.std, "dropped": self.dropped, "targets": self.targets,
                "features": self.feature_names}

    @classmethod
    def from_state(cls, state: Any) -> TabularPreprocessor:
        """From :meth:`state` (untrusted: an ``arch.json`` may be edited)."""
        try:
            if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
                raise ValueError("unknown preprocessing version")
            cols = []
            for c in state["columns"]:
                kind = str(c["kind"])
                d: dict[str, Any] = {"name": str(c["name"]), "kind": kind}
                if kind == "numeric":
                    d.update(fill=float(c["fill"]), flag=bool(c["flag"]))
                elif kind == "date":
                    d.update(fill=[float(v) for v in c["fill"]][:3], flag=bool(c["flag"]))
                    if len(d["fill"]) != 3:
                        raise ValueError("a date column needs 3 fill values")
                elif kind == "categorical":
                    d.update(categories=[str(k) for k in c["categories"]],
                             missing=bool(c["missing"]), other=bool(c["other"]))
                else:
                    raise ValueError(f"unknown column kind {kind!r}")
                cols.append(d)
            pre = cls(cols, [float(v) for v in state["mean"]],
                      [float(v) for v in state["std"]],
                      {str(k): str(v) for k, v in dict(state.get("dropped") or {}).items()},
                      [str(t) for t in state.get("targets") or []])
        except (KeyError, TypeError, ValueError) as e:
            raise NasforgeError(f"the stored tabular preprocessing is corrupt: {e}") from None
        f = pre.n_features
        if len(pre.mean) != f or len(pre.std) != f or not all(
                math.isfinite(m) for m in pre.mean) or not all(
                math.isfinite(s) and s > 0 for s in pre.std):
            raise NasforgeError(f"the stored tabular preprocessing is corrupt: {f} features "
                                "need as many finite means and positive stds")
        return pre

    def describe(self) -> list[str]:
        """What the user is shown: the columns per kind, what was dropped and why."""
        by: dict[str, list[str]] = {}
        for c in self.columns:
            by.setdefault(c["kind"], []).append(c["name"])
        lines = []
        for kind in ("numeric", "categorical", "date"):
            if kind in by:
                names = by[kind]
                shown = ", ".join(names[:8]) + (f", ... ({len(names) - 8} more)"
                                                if len(names) > 8 else "")
                lines.append(f"  {kind:<11} {len(names):>3}: {shown}")
        for col, why in self.dropped.items():
            lines.append(f"  dropped     {col}: {why}")
        flags = [c["name"] for c in self.columns if c.get("flag") or c.get("missing")]
        if flags:
            lines.append(f"  missing values filled from the training split (and flagged) in: "
                         f"{', '.join(flags[:8])}")
        lines.append(f"  -> {self.n_features} features, standardized with training statistics")
        return lines


def as_frame(rows: Any) -> pd.DataFrame:
    """A DataFrame from a DataFrame, a table path, one dict row, a dict of columns or a
    list of dict rows."""
    import pandas as pd

    if isinstance(rows, pd.DataFrame):
        return rows
    if isinstance(rows, str | os.PathLike):
        return read_table(rows)
    if isinstance(rows, Mapping):
        if all(np.ndim(v) == 0 for v in rows.values()):
            return pd.DataFrame([dict(rows)])
        return pd.DataFrame(dict(rows))
    if isinstance(rows, Sequence) and rows and all(isinstance(r, Mapping) for r in rows):
        return pd.DataFrame(list(rows))
    raise DataError(f"cannot read {type(rows).__name__} as table rows: give a DataFrame, a "
                    ".csv/.tsv/.parquet path, a dict or a list of dicts")


# ------------------------------------------------------------------------------ dataset
def _targets(df: pd.DataFrame, target: Any, name: str) -> list[str]:
    if target is None or (not isinstance(target, str) and not len(target)):
        raise DataError(f"{name}: say which column to predict (--target COLUMN, or "
                        f"target='COLUMN'); columns: {', '.join(map(str, df.columns[:20]))}")
    names = [target] if isinstance(target, str) else [str(t) for t in target]
    cols = [str(c) for c in df.columns]
    for t in names:
        if t not in cols:
            close = difflib.get_close_matches(t, cols, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise DataError(f"{name}: no column {t!r}{hint}; columns: "
                            f"{', '.join(cols[:20])}")
    if len(set(names)) != len(names):
        raise DataError(f"{name}: a target column is given twice: {names}")
    return names


def infer_task(y: pd.DataFrame) -> str:
    """Classification for text, booleans and few whole numbers; regression otherwise."""
    import pandas as pd

    if y.shape[1] > 1:
        return "regression"
    s = y.iloc[:, 0]
    if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
        vals, bad = _as_numbers(s)
        if bad.any():
            return "classification"
        s = pd.Series(vals)
    v = s.to_numpy(np.float64)
    whole = bool(np.all(v == np.round(v)))
    few = len(np.unique(v)) <= max(2, min(20, len(v) // 10))
    return "classification" if whole and few else "regression"


def from_dataframe(
    df: pd.DataFrame,
    target: str | Sequence[str] | None,
    *,
    task: str | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    max_train: int | None = None,
    task_options: dict[str, Any] | None = None,
    name: str = "table",
    verbose: bool = True,
) -> Dataset:
    """A tabular :class:`Dataset` from ``df``: ``target`` is the column (or columns, for
    several numeric targets) to predict; ``task`` None infers it from the target.
    ``verbose`` prints the column typing and what was dropped."""
    from nasforge import tasks

    if not is_dataframe(df):
        raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if not 0.0 < val_fraction < 1.0 or not 0.0 < test_fraction < 1.0:
        raise DataError("val_fraction and test_fraction must be in (0, 1)")
    if df.shape[1] == 0 or len(df) == 0:
        raise DataError(f"{name}: the table is empty")
    df = df.copy()
    df.columns = [str(c) for c in df.columns]
    if len(set(df.columns)) != df.shape[1]:
        raise DataError(f"{name}: duplicate column names")
    targets = _targets(df, target, name)
    y_df = df[targets]
    has_y = ~np.asarray(y_df.isna().any(axis=1), bool)
    notes: list[str] = []
    if not has_y.all():
        notes.append(f"  dropped {int((~has_y).sum())} row(s) whose target is missing")
        df, y_df = df[has_y].reset_index(drop=True), y_df[has_y].reset_index(drop=True)
    if len(df) < MIN_ROWS:
        raise DataError(f"{name}: {len(df)} row(s) with a target; nasforge needs at least "
                        f"{MIN_ROWS} (better hundreds) to train, validate and test")
    for t in targets:
        if y_df[t].map(_key).nunique() < 2:
            raise DataError(f"{name}: the target {t!r} has the same value "
                            f"({_key(y_df[t].iloc[0])!s:.30}) in every row: nothing to predict")
    if task is None:
        task = infer_task(y_df)
        notes.append(f"task: {task} (inferred from target {', '.join(targets)}; "
                     "--task overrides)")
    else:
        tasks.registry.factory(task)
    feats = df.drop(columns=targets)
    if feats.shape[1] == 0:
        raise DataError(f"{name}: the table has no columns besides the target")
    kinds, dropped = column_kinds(feats, name)
    if not kinds:
        raise DataError(f"{name}: no usable feature column (dropped: "
                        f"{', '.join(f'{k} ({v})' for k, v in dropped.items())})")
    # targets
    if task == "classification":
        if len(targets) != 1:
            raise DataError(f"{name}: classification takes one target column, got "
                            f"{len(targets)}; several targets need --task regression")
        keys = y_df[targets[0]].map(_key).to_numpy()
        classes = sorted(set(keys.tolist()), key=_class_order)
        index = {k: i for i, k in enumerate(classes)}
        y = np.array([index[k] for k in keys], np.int64)
    else:
        ys = []
        for t in targets:
            vals, bad = _as_numbers(y_df[t])
            if bad.any():
                raise DataError(f"{name}: regression needs numeric targets, but {t!r} holds "
                                f"text such as {y_df[t][bad].astype(str).iloc[0]!r:.40}")
            ys.append(vals)
        y = np.stack(ys, 1).astype(np.float32)
        if y.shape[1] == 1:
            y = y[:, 0]
        classes = []
    strat = bool(tasks.registry.factory(task).stratify)  # type: ignore[attr-defined]
    idx = np.arange(len(y))
    if strat and np.unique(y).size * 3 > len(y):
        raise DataError(f"{name}: {len(y)} rows in {np.unique(y).size} classes are too few "
                        "to hold out validation and test rows; give at least 3 per class")
    keep, test = _split(y, test_fraction, np.random.default_rng([seed, 1]), strat)
    idx_pool, y_pool = idx[keep], y[keep]
    if max_train is not None:
        idx_pool, y_pool = _limit(idx_pool, y_pool, max_train, seed, strat)
    tr, va = _split(y_pool, val_fraction, np.random.default_rng([seed, 2]), strat)
    i_train, i_val, i_test = idx_pool[tr], idx_pool[va], idx[test]
    if not len(i_val) or not len(i_test):
        raise DataError(f"{name}: {len(y)} rows are too few to hold out validation and test "
                        "rows; give more")
    pre = TabularPreprocessor.fit(feats.iloc[i_train], kinds, dropped, targets)
    if verbose:
        print(f"data: {name}: {len(y)} rows, {feats.shape[1]} columns", file=sys.stdout)
        for line in [*notes, *pre.describe()]:
            print(line if line.startswith("  ") else f"  {line}", file=sys.stdout)
    x = pre.transform(feats)
    ydt = np.int64 if task == "classification" else np.float32
    return Dataset(
        name=name,
        x_train=x[i_train], y_train=np.ascontiguousarray(y[i_train], ydt),
        x_val=x[i_val], y_val=np.ascontiguousarray(y[i_val], ydt),
        x_test=x[i_test], y_test=np.ascontiguousarray(y[i_test], ydt),
        classes=classes,
        mean=tuple(pre.mean), std=tuple(pre.std),
        task=task,
        target_names=[] if task == "classification" else targets,
        task_options=dict(task_options or {}),
        input_kind="tabular",
        preprocessing=pre.state(),
    )


def _class_order(k: str) -> tuple[int, float, str]:
    """Numeric class names in numeric order (2 before 10), then text."""
    try:
        return (0, float(k), k)
    except ValueError:
        return (1, 0.0, k)


def load_table(path: str | os.PathLike[str], target: str | Sequence[str] | None = None,
               **kw: Any) -> Dataset:
    """A tabular :class:`Dataset` from a .csv/.tsv/.parquet file (see :func:`from_dataframe`)."""
    p = Path(os.fspath(path)).expanduser()
    return from_dataframe(read_table(p), target, name=p.name, **kw)
