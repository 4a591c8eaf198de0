"""Time series: the UCR/UEA sets that ship inside ``aeon`` (``aeon:GunPoint``), and a user's
``.ts``, ``.npz`` / ``.npy`` or CSV files, as a :class:`Dataset` of input kind ``"sequence"``.

Layout and padding policy (one rule for every loader, :func:`from_series`): ``x`` is float32
``(N, 1 + C, L)``. Channel 0 is the **mask** (1 = a real time step, 0 = padding) and
channels 1..C the series. Series shorter than the longest one of *all* splits (train,
validation and test; known when the files are read) are zero-padded at the end, so nothing
is ever truncated; fixed-length data have an all-ones mask. The networks of the ``seq``
space read the mask (masked pooling, attention key masks, the last real step of a
recurrent block), so padding changes no prediction. Missing values inside a series are an
error (fill them first). Normalization: per channel, with the mean and standard deviation
of the *real* steps of the training split; the mask channel is kept as is (mean 0, std 1).
``predict`` pads new series the same way and refuses one longer than the model's length.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nasforge.data.arrays import TEST_FRACTION, _labels, _numeric_targets, _task_name
from nasforge.data.dataset import Dataset, _limit, _split
from nasforge.errors import DataError

#: the prefix that names a data set bundled with aeon, and the one that marks a user file
#: (a CSV in particular, which tabular data read too) as time series
AEON_PREFIX = "aeon:"
SERIES_PREFIX = "series:"
SEQUENCE_SUFFIXES = (".ts", ".npz", ".npy")
MAX_LENGTH = 100_000
#: what a time-budgeted job on series trains with instead of the image recipe's batch 128:
#: UCR/UEA training splits have tens to hundreds of series, so batch 128 is one step per
#: epoch; 16 is FCN's published recipe (Fawaz et al. 2019) and measured better here
#: (benchmarks/results/timeseries.md: GunPoint 99.3 -> 100 %, ItalyPowerDemand 95.9 -> 96.1 %)
SEQUENCE_RECIPE: dict[str, Any] = {"batch_size": 16}
MAX_CHANNELS = 63  # plus the mask: nasforge's bound on input channels


# ----------------------------------------------------------------------------- naming
def is_sequence_source(name: Any) -> bool:
    """Whether a data set name or path is time series, decided without reading the data:
    ``aeon:``/``series:`` names, ``.ts`` files, and ``.npy``/``.npz`` files whose (``x``)
    array is 3-d (N, C, L), only their headers read; a 2-d array (N, L) of series needs
    the ``series:`` prefix, as 2-d arrays are tables too."""
    if not isinstance(name, str | os.PathLike):
        return False
    s = str(name).strip()
    if s.lower().startswith((AEON_PREFIX, SERIES_PREFIX)):
        return True
    low = s.lower()
    if low.endswith(".ts"):
        return True
    if low.endswith(".npy") and Path(s).is_file():
        return _npy_ndim(Path(s)) == 3
    if low.endswith(".npz") and Path(s).is_file():  # headers only, nothing loaded
        import zipfile

        try:
            with zipfile.ZipFile(s) as z:
                if "y.npy" not in z.namelist():
                    return False
                with z.open("x.npy") as f:
                    return _header_ndim(f) == 3
        except (OSError, KeyError, ValueError, zipfile.BadZipFile):
            return False
    return False


def _header_ndim(f: Any) -> int:
    version = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
            else np.lib.format.read_array_header_2_0)
    return len(read(f)[0])


def _npy_ndim(p: Path) -> int:
    try:
        with p.open("rb") as f:
            return _header_ndim(f)
    except (OSError, ValueError):
        return -1


def _aeon_data_dir() -> Path | None:
    try:
        import aeon
    except ImportError:
        return None
    return Path(aeon.__file__).parent / "datasets" / "data"


def bundled() -> dict[str, dict[str, Any]]:
    """The UCR/UEA data sets shipped inside the installed aeon (read offline), by name:
    ``{"task", "channels", "length" (None: variable), "classes"}`` from the .ts headers."""
    d = _aeon_data_dir()
    out: dict[str, dict[str, Any]] = {}
    if d is None or not d.is_dir():
        return out
    for sub in sorted(d.iterdir()):
        train, test = sub / f"{sub.name}_TRAIN.ts", sub / f"{sub.name}_TEST.ts"
        if not (train.is_file() and test.is_file()):
            continue
        head = _ts_header(train)
        task = "classification" if head.get("classlabel", "").startswith("true") else (
            "regression" if head.get("targetlabel", "").startswith("true") else None)
        if task is None:
            continue
        dims = head.get("dimensions", "1")
        out[sub.name] = {
            "task": task,
            "channels": int(dims) if dims.isdigit() else 1,
            "length": int(head["serieslength"]) if head.get("serieslength", "").isdigit()
            else ("fixed" if head.get("equallength") == "true" else None),
            "classes": len(head.get("classlabel", "").split()) - 1 if task ==
            "classification" else 0,
        }
    return out


def _ts_header(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.lower().startswith("@data"):
                break
            if line.startswith("@"):
                k, _, v = line[1:].partition(" ")
                out[k.lower()] = v.strip().lower() if k.lower() != "classlabel" else v.strip()
    if "classlabel" in out:
        out["classlabel"] = out["classlabel"][:4].lower() + out["classlabel"][4:]
    return out


# ----------------------------------------------------------------------------- readers
def _series_list(x: Any, what: str) -> list[np.ndarray]:
    """(N, L), (N, C, L) or a list of (C, L_i) / (L_i,) arrays -> a list of float64 (C, L_i)."""
    if isinstance(x, np.ndarray) and x.dtype != object:
        if x.ndim == 2:
            x = x[:, None, :]
        if x.ndim != 3:
            raise DataError(f"{what} has shape {x.shape}: expected (N, length) or "
                            "(N, channels, length) series")
        items = list(x)
    else:
        items = list(x)
    out = []
    for i, s in enumerate(items):
        a = np.asarray(s)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2:
            raise DataError(f"{what}[{i}] has shape {a.shape}: a series is (channels, length)")
        if a.dtype.kind not in "biuf":
            raise DataError(f"{what}[{i}] holds {a.dtype} values: series must be numbers")
        a = a.astype(np.float64)
        # trailing NaN is how .ts / wide CSV files pad unequal lengths: drop it
        valid = ~np.isnan(a).all(axis=0)
        n = int(np.flatnonzero(valid)[-1]) + 1 if valid.any() else 0
        a = a[:, :n]
        if n == 0:
            raise DataError(f"{what}[{i}] is an empty series")
        if not np.isfinite(a).all():
            raise DataError(f"{what}[{i}] has missing or infinite values inside the series; "
                            "fill them (e.g. interpolate) before searching")
        out.append(a)
    if not out:
        raise DataError(f"{what}: no series")
    chans = {a.shape[0] for a in out}
    if len(chans) != 1:
        raise DataError(f"{what}: series have different channel counts {sorted(chans)}")
    return out


def read_ts(path: str | os.PathLike[str]) -> tuple[list[np.ndarray], np.ndarray]:
    """A ``.ts`` file (the UCR/UEA format) with aeon's reader: the series and their labels
    or targets."""
    try:
        from aeon.datasets import load_from_ts_file
    except ImportError:
        raise DataError("reading .ts files needs aeon: pip install 'nasforge[timeseries]' "
                        "(see scripts/install.sh)") from None
    try:
        x, y = load_from_ts_file(str(path))
    except (OSError, ValueError, IndexError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a readable .ts file ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]})") from None
    if y is None or len(y) == 0:
        raise DataError(f"{path}: the .ts file has no class labels or targets")
    return _series_list(x, str(path)), np.asarray(y)


def read_npz(path: Path) -> tuple[Any, np.ndarray, Any, Any]:
    """``x`` (N, C, L) or (N, L) and ``y``, optionally ``x_test``/``y_test`` (never pickles)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable .npz of numeric arrays (pickles are never "
                        f"loaded): {e}") from None
    if "x" not in arrays or "y" not in arrays:
        raise DataError(f"{path}: an .npz of series needs arrays 'x' (N, channels, length) "
                        f"and 'y' (N labels); it has {sorted(arrays)}")
    return arrays["x"], arrays["y"], arrays.get("x_test"), arrays.get("y_test")


def read_npy_series(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``X.npy`` (N, C, L) with its labels in ``X_labels.npy`` beside it (the read_npy rules:
    header checked first, no pickles)."""
    from nasforge.data.folder import read_npy

    labels = path.with_name(f"{path.stem}_labels.npy")
    if not labels.is_file():
        raise DataError(f"{path}: put the labels in {labels.name} next to it (N values), or "
                        "save both in one .npz (np.savez(f, x=x, y=y))")
    x = read_npy(path)
    try:
        y = np.load(labels, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DataError(f"{labels}: not a numeric .npy (pickles are never loaded): {e}") \
            from None
    return x, y


def read_csv_series(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    """A CSV of series. Long format when it has an ``id`` column: one row per time step,
    the rows of one id in time order (sorted by a ``time`` column when there is one), every
    other numeric column but ``label`` a channel. Otherwise wide: one row per series, a
    ``label`` column and the values (empty trailing cells: a shorter series)."""
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable CSV ({' '.join(str(e).split())[:200]})") \
            from None
    cols = {str(c).strip().lower(): c for c in df.columns}
    if "label" not in cols:
        raise DataError(f"{path}: a CSV of series needs a 'label' column (the class or "
                        f"target of each series); its columns are {list(df.columns)[:10]}")
    lab = cols["label"]
    if "id" in cols:
        key = cols["id"]
        if "time" in cols:
            df = df.sort_values([key, cols["time"]], kind="stable")
        value_cols = [c for c in df.columns if c not in (key, lab, cols.get("time"))]
        bad = [c for c in value_cols if df[c].dtype.kind not in "biuf"]
        if bad or not value_cols:
            raise DataError(f"{path}: long format: every column but id, time and label must "
                            f"be numeric values (not {bad[:5]})" if bad else
                            f"{path}: long format needs at least one value column")
        xs, ys = [], []
        for _, g in df.groupby(key, sort=False):
            if g[lab].nunique(dropna=False) != 1:
                raise DataError(f"{path}: id {g[key].iloc[0]!r} has several labels; one "
                                "series has one label")
            xs.append(g[value_cols].to_numpy(np.float64).T)
            ys.append(g[lab].iloc[0])
        return _series_list(xs, str(path)), np.asarray(ys)
    values = df.drop(columns=[lab])
    bad = [c for c in values.columns if values[c].dtype.kind not in "biuf"]
    if bad:
        raise DataError(f"{path}: wide format: every column but label must be a time step's "
                        f"value; {bad[:5]} are not numbers")
    return _series_list(values.to_numpy(np.float64), str(path)), df[lab].to_numpy()


def _load_aeon(name: str) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray], np.ndarray,
                                   str]:
    avail = bundled()
    if not avail:
        raise DataError(f"{AEON_PREFIX}{name} needs aeon: pip install 'nasforge[timeseries]' "
                        "(see scripts/install.sh)")
    match = {k.lower(): k for k in avail}.get(name.lower())
    if match is None:
        raise DataError(f"{AEON_PREFIX}{name} is not bundled with aeon (nothing is "
                        f"downloaded); offline sets: {', '.join(sorted(avail))}")
    d = _aeon_data_dir()
    assert d is not None
    xs, y = read_ts(d / match / f"{match}_TRAIN.ts")
    xt, yt = read_ts(d / match / f"{match}_TEST.ts")
    return xs, y, xt, yt, str(avail[match]["task"])


# ----------------------------------------------------------------------------- assembly
def pad_series(series: Sequence[np.ndarray], length: int) -> np.ndarray:
    """Series (C, L_i) -> float32 (N, 1 + C, length): the mask first, zero padding at the
    end. A series longer than ``length`` is an error (never truncated)."""
    c = series[0].shape[0]
    out = np.zeros((len(series), 1 + c, length), np.float32)
    for i, s in enumerate(series):
        n = s.shape[1]
        if n > length:
            raise DataError(f"series {i} has {n} steps, more than the {length} this model "
                            "takes (nothing is truncated): shorten it or retrain")
        out[i, 0, :n] = 1.0
        out[i, 1:, :n] = s
    return out


def normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Normalize the series channels of a padded (N, 1 + C, L) batch; padding stays 0."""
    m = x[:, :1]
    out = x.copy()
    out[:, 1:] = (x[:, 1:] - mean[None, 1:, None]) / std[None, 1:, None] * m
    return np.ascontiguousarray(out, np.float32)


def from_series(
    name: str,
    x: Any,
    y: Any,
    x_test: Any = None,
    y_test: Any = None,
    *,
    classes: Sequence[str] | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    test_fraction: float = TEST_FRACTION,
    max_train: int | None = None,
    task: str | None = None,
    task_options: dict[str, Any] | None = None,
    image_size: int | None = None,
) -> Dataset:
    """A sequence :class:`Dataset` from series (arrays (N, L) / (N, C, L), or lists of
    (C, L_i) arrays of any lengths) and labels or targets; see the module docstring for
    the padding and normalization policy. Without a test split ``test_fraction`` is held
    out; the validation split is always held out from the training series."""
    if image_size is not None:
        raise DataError(f"{name}: image_size does not apply to time series")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    xs = _series_list(x, f"{name}: x")
    y = np.asarray(y)
    if y.ndim != 1 and not (y.ndim == 2 and task == "regression"):
        raise DataError(f"{name}: labels must be a 1-D array, got shape {y.shape}")
    if len(xs) != len(y):
        raise DataError(f"{name}: {len(xs)} series but {len(y)} labels; they must match")
    if (x_test is None) != (y_test is None):
        raise DataError(f"{name}: give both x_test and y_test, or neither")
    xts = _series_list(x_test, f"{name}: x_test") if x_test is not None else []
    yt_raw = None if y_test is None else np.asarray(y_test)
    if yt_raw is not None and len(xts) != len(yt_raw):
        raise DataError(f"{name}: {len(xts)} test series but {len(yt_raw)} test labels")
    c = xs[0].shape[0]
    if xts and xts[0].shape[0] != c:
        raise DataError(f"{name}: test series have {xts[0].shape[0]} channels, training "
                        f"series {c}")
    if c > MAX_CHANNELS:
        raise DataError(f"{name}: {c} channels; at most {MAX_CHANNELS} are supported")
    length = max(s.shape[1] for s in [*xs, *xts])
    if length > MAX_LENGTH:
        raise DataError(f"{name}: series of {length} steps; at most {MAX_LENGTH} are supported")
    task_name = _task_name(task, y, classes)
    if task_name == "classification":
        y_idx, yt_idx, class_names = _labels(y, yt_raw, classes)
        if len(class_names) < 2:
            raise DataError(f"{name}: all series have a single class; classification needs >= 2")
    else:
        y_idx, yt_idx = _numeric_targets(name, y, yt_raw, classes)
        class_names = []
    strat = task_name == "classification"
    xa = pad_series(xs, length)
    if xts:
        xt, yt = pad_series(xts, length), yt_idx
    else:
        keep, held = _split(y_idx, test_fraction, np.random.default_rng([seed, 1]), strat)
        xa, xt, y_idx, yt = xa[keep], xa[held], y_idx[keep], y_idx[held]
    if max_train is not None:
        xa, y_idx = _limit(xa, y_idx, max_train, seed, strat)
    keep, held = _split(y_idx, val_fraction, np.random.default_rng([seed, 2]), strat)
    if len(held) == 0 or len(yt) == 0:
        raise DataError(f"{name}: {len(y_idx)} series are too few to hold out validation and "
                        "test series; give at least 3 per class, better dozens")
    x_train, x_val = xa[keep], xa[held]
    m = x_train[:, :1]
    cnt = np.maximum(m.sum(axis=(0, 2)), 1.0)
    mean = np.concatenate([[0.0], (x_train[:, 1:] * m).sum(axis=(0, 2), dtype=np.float64)
                           / cnt])
    var = ((x_train[:, 1:] - mean[None, 1:, None]) ** 2 * m).sum(axis=(0, 2),
                                                                 dtype=np.float64) / cnt
    std = np.concatenate([[1.0], np.sqrt(var)])
    std = np.where(std < 1e-6, 1.0, std)
    ydt = np.int64 if strat else np.float32
    k = 1 if y_idx.ndim == 1 else y_idx.shape[1]
    return Dataset(
        name=name,
        x_train=normalize(x_train, mean, std), y_train=np.ascontiguousarray(y_idx[keep], ydt),
        x_val=normalize(x_val, mean, std), y_val=np.ascontiguousarray(y_idx[held], ydt),
        x_test=normalize(xt, mean, std), y_test=np.ascontiguousarray(yt, ydt),
        classes=class_names,
        mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std),
        task=task_name,
        target_names=[] if strat else (["y"] if k == 1 else [f"y{i}" for i in range(k)]),
        task_options=dict(task_options or {}),
        input_kind="sequence",
    )


def load_sequences(spec: str, **kw: Any) -> Dataset:
    """``aeon:NAME`` (bundled UCR/UEA, official splits) or a file: ``.ts``, ``.npz``
    (``x``, ``y``, optional ``x_test``/``y_test``), ``.npy`` with ``<stem>_labels.npy``, or
    ``series:FILE.csv`` (see :func:`read_csv_series`). Options as :func:`from_series`."""
    s = spec.strip()
    if s.lower().startswith(AEON_PREFIX):
        name = s[len(AEON_PREFIX):].strip()
        xs, y, xt, yt, task = _load_aeon(name)
        if kw.get("task") is None:
            kw["task"] = task
        return from_series(f"{AEON_PREFIX}{name}", xs, y, xt, yt, **kw)
    if s.lower().startswith(SERIES_PREFIX):
        s = s[len(SERIES_PREFIX):].strip()
    p = Path(s).expanduser()
    if not p.is_file():
        raise DataError(f"{spec!r}: no such file (time series are aeon:NAME, a .ts, .npz or "
                        ".npy file, or series:FILE.csv)")
    low = p.name.lower()
    if low.endswith(".ts"):
        xs, y = read_ts(p)
        return from_series(p.stem, xs, y, **kw)
    if low.endswith(".npz"):
        x, y, xt, yt = read_npz(p)
        return from_series(p.stem, x, y, xt, yt, **kw)
    if low.endswith(".npy"):
        x, y = read_npy_series(p)
        return from_series(p.stem, x, y, **kw)
    if low.endswith(".csv"):
        xs, y = read_csv_series(p)
        return from_series(p.stem, xs, y, **kw)
    raise DataError(f"{spec!r}: time series files are .ts, .npz, .npy or .csv")


def series_rows(path: str | os.PathLike[str], channels: int) -> list[np.ndarray]:
    """The series in a file given to ``predict``: a ``.npy`` ((N, L) or (N, C, L)) or a
    CSV in the wide format (one row per series; a ``label`` column is ignored)."""
    p = Path(path)
    if p.suffix.lower() == ".csv":
        import pandas as pd

        try:
            df = pd.read_csv(p)
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise DataError(f"{p}: not a readable CSV: {' '.join(str(e).split())[:200]}") \
                from None
        df = df.drop(columns=[k for k in df.columns if str(k).strip().lower() == "label"])
        bad = [c for c in df.columns if df[c].dtype.kind not in "biuf"]
        if bad:
            raise DataError(f"{p}: every column but label must be a time step's value; "
                            f"{bad[:5]} are not numbers")
        if channels != 1:
            raise DataError(f"{p}: a CSV row is one univariate series, but the model takes "
                            f"{channels} channels; give a .npy (N, {channels}, length)")
        return _series_list(df.to_numpy(np.float64), str(p))
    if p.suffix.lower() == ".npy":
        from nasforge.data.folder import read_npy

        a = read_npy(p)
        return _series_list(a if a.ndim == 3 or channels == 1 else a[None], str(p))
    raise DataError(f"{p}: give series as a .npy (N, channels, length) or a .csv (one row "
                    "per series)")


def to_model_input(series: Any, input_shape: Sequence[int], mean: Sequence[float],
                   std: Sequence[float]) -> np.ndarray:
    """What ``predict`` feeds a sequence model: one series (L,) / (C, L), a batch (N, L) /
    (N, C, L), a list of (C, L_i) series of any lengths, or a path (see
    :func:`series_rows`) -> padded, masked, normalized (N, 1 + C, L); padding as in
    training, a series longer than the model's length refused."""
    c, length = int(input_shape[0]) - 1, int(input_shape[-1])
    if isinstance(series, str | os.PathLike):
        series = series_rows(series, c)
    elif isinstance(series, np.ndarray) and series.dtype != object:
        a = series
        if a.ndim == 1:
            a = a[None, None, :]
        elif a.ndim == 2:
            a = a[None] if (c > 1 and a.shape[0] == c) else a[:, None, :]
        series = a
    xs = _series_list(series, "series")
    if xs[0].shape[0] != c:
        raise DataError(f"the model takes {c}-channel series, got {xs[0].shape[0]} channel(s)")
    x = pad_series(xs, length)
    return normalize(x, np.asarray(mean, np.float64), np.asarray(std, np.float64))
