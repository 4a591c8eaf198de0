"""Text: a CSV with a text column and a label column (``text:reviews.csv``) or a folder
with one sub-folder of ``.txt`` files per class (``text:DIR``), as a :class:`Dataset` of
input kind ``"text"``.

Tokenization: a WordPiece tokenizer (Hugging Face ``tokenizers``: Unicode NFD,
lower-case, accents stripped, split on whitespace and punctuation) is trained on the
*training* split only (never the validation or test texts) with ``vocab_size`` entries;
nothing is downloaded. Id 0 is ``[PAD]``, id 1 ``[UNK]``. Every text becomes
``max_length`` ids: shorter ones padded with 0 at the end, longer ones truncated to their
first ``max_length`` tokens (text is the one kind where nasforge truncates: documents
have no natural bound; the share of truncated training texts is printed and stored).
``max_length`` None takes the 95th percentile of the training texts' token counts
(rounded up to a multiple of 8, from 8 to :data:`MAX_LENGTH`).

``x`` holds the ids as float32 ``(N, max_length)``: the training loop and every probe
(FLOPs, latency, ONNX) hand the network float tensors, and float32 is exact for integers
below 2**24, far above any vocabulary here; the ``text`` space's embedding turns them
back into integer ids (:class:`nasforge.spaces.text_net.TokenEmbedding`). The fitted
tokenizer's own JSON (``Tokenizer.to_str()``) is ``Dataset.preprocessing["tokenizer"]``;
the model directory stores it (``arch.json``) and ``predict`` on raw strings repeats it
(:class:`TextPreprocessor`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nasforge.data.arrays import TEST_FRACTION, _labels
from nasforge.data.dataset import Dataset, _limit, _split
from nasforge.errors import DataError

TEXT_PREFIX = "text:"
#: the default vocabulary size; also the default number of embedding rows of the ``text``
#: space, so the two agree unless one is changed
DEFAULT_VOCAB_SIZE = 8192
MIN_VOCAB_SIZE = 16
MAX_VOCAB_SIZE = 1 << 20
MAX_LENGTH = 1024
PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
MAX_FILE_BYTES = 10 << 20  # one .txt file of a text folder
#: the loader options of text data (``dataset_options`` / ``--dataset-opt``)
TEXT_OPTIONS = ("text_column", "vocab_size", "max_length")


# ----------------------------------------------------------------------------- naming
def is_text_source(name: Any) -> bool:
    """Whether a data set name is text, decided without reading it: the ``text:`` prefix
    (a CSV is a table and a folder is images unless it says so)."""
    return isinstance(name, str | os.PathLike) and \
        str(name).strip().lower().startswith(TEXT_PREFIX)


def _tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError:
        raise DataError("text data need Hugging Face tokenizers: pip install "
                        "'nasforge[text]' (see scripts/install.sh)") from None
    return tokenizers


# ----------------------------------------------------------------------------- readers
def read_text_csv(path: Path, target: str | Sequence[str] | None = None,
                  text_column: str | None = None) -> tuple[list[str], np.ndarray]:
    """The texts and labels of a CSV: ``target`` (default ``label``) names the label
    column, ``text_column`` the text (default ``text``, else the only other column of
    strings)."""
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable CSV ({' '.join(str(e).split())[:200]})") \
            from None
    cols = [str(c) for c in df.columns]
    if isinstance(target, list | tuple):
        if len(target) != 1:
            raise DataError(f"{path}: a text data set has one label column, got {list(target)}")
        target = target[0]
    lab = target if target is not None else "label"
    if lab not in cols:
        raise DataError(f"{path}: no label column {lab!r} (columns: {cols[:10]}); name it "
                        "with --target")
    if text_column is None:
        others = [c for c in cols if c != lab]
        text_column = "text" if "text" in others else (others[0] if len(others) == 1 else None)
        if text_column is None:
            raise DataError(f"{path}: no text column: name it 'text' or give "
                            f"text_column=... (columns: {cols[:10]})")
    if text_column not in cols:
        raise DataError(f"{path}: no text column {text_column!r} (columns: {cols[:10]})")
    if text_column == lab:
        raise DataError(f"{path}: the text and the label are the same column {lab!r}")
    y = df[lab].str.strip().to_numpy(object)
    missing = np.flatnonzero(y == "")
    if missing.size:
        raise DataError(f"{path}: {missing.size} row(s) have no label (rows "
                        f"{', '.join(str(i + 2) for i in missing[:5])} of the file); fill or "
                        "remove them")
    return df[text_column].tolist(), y.astype(str)


def read_text_folder(path: Path) -> tuple[list[str], np.ndarray]:
    """``DIR/<class>/*.txt``: one text per file (UTF-8; undecodable bytes replaced)."""
    texts: list[str] = []
    labels: list[str] = []
    subs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    for d in subs:
        for f in sorted(d.rglob("*.txt")):
            if f.stat().st_size > MAX_FILE_BYTES:
                raise DataError(f"{f}: over {MAX_FILE_BYTES >> 20} MiB; one file is one text")
            texts.append(f.read_text(encoding="utf-8", errors="replace"))
            labels.append(d.name)
    if not texts:
        raise DataError(f"{path}: no .txt files in class sub-folders (expected "
                        f"{path}/<class>/<file>.txt)")
    return texts, np.asarray(labels)


# ----------------------------------------------------------------------------- tokenizer
def train_tokenizer(texts: Sequence[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> Any:
    """A WordPiece tokenizer trained on ``texts`` (the module docstring's recipe)."""
    tk = _tokenizers()
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    tok = tk.Tokenizer(models.WordPiece(unk_token=UNK, max_input_chars_per_word=100))
    tok.normalizer = normalizers.Sequence([normalizers.NFD(), normalizers.Lowercase(),
                                           normalizers.StripAccents()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK],
                                        min_frequency=1, show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    if tok.token_to_id(PAD) != PAD_ID or tok.token_to_id(UNK) != UNK_ID:
        raise RuntimeError("tokenizer: [PAD] and [UNK] must be ids 0 and 1")
    return tok


class TextPreprocessor:
    """Raw strings -> float32 (N, max_length) token ids, exactly as the training data were
    made; its state (:meth:`state`) is JSON: the tokenizer's own ``to_str()`` JSON plus the
    length, and it is what ``arch.json`` stores as ``preprocessing``."""

    kind = "text"

    def __init__(self, tokenizer: Any, max_length: int, truncated: float = 0.0) -> None:
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.truncated = float(truncated)

    @property
    def n_features(self) -> int:
        """The model's input width (ids per text)."""
        return self.max_length

    @property
    def vocab_size(self) -> int:
        return int(self.tokenizer.get_vocab_size())

    def ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (N, max_length) float32, token counts before truncation)``."""
        enc = self.tokenizer.encode_batch(list(texts))
        out = np.full((len(enc), self.max_length), PAD_ID, np.float32)
        counts = np.zeros(len(enc), np.int64)
        for i, e in enumerate(enc):
            row = e.ids
            counts[i] = len(row)
            row = row[: self.max_length]
            out[i, : len(row)] = row
        return out, counts

    def __call__(self, texts: Any) -> np.ndarray:
        """A string, a list of strings, a ``.txt`` file (one text) or a ``.csv`` with a
        ``text`` column (other columns ignored) -> the model's input."""
        return self.ids(as_texts(texts))[0]

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "max_length": self.max_length,
                "truncated": self.truncated, "pad_id": PAD_ID,
                "vocab_size": self.vocab_size,
                "tokenizer": json.loads(self.tokenizer.to_str())}

    @classmethod
    def from_state(cls, state: Any) -> TextPreprocessor:
        if not isinstance(state, dict) or state.get("kind") != cls.kind or \
                not isinstance(state.get("tokenizer"), dict):
            raise DataError("the text preprocessing is not a {'kind': 'text', 'tokenizer': "
                            "{...}} object")
        length = state.get("max_length")
        if isinstance(length, bool) or not isinstance(length, int) or \
                not 1 <= length <= MAX_LENGTH:
            raise DataError(f"the text preprocessing's max_length must be 1-{MAX_LENGTH}, "
                            f"got {length!r:.30}")
        tk = _tokenizers()
        try:
            tok = tk.Tokenizer.from_str(json.dumps(state["tokenizer"]))
        except Exception as e:  # noqa: BLE001 - tokenizers raises its own exception type
            raise DataError(f"the stored tokenizer is not readable: {str(e)[:200]}") from None
        return cls(tok, length, float(state.get("truncated") or 0.0))


def as_texts(texts: Any) -> list[str]:
    """What ``predict`` accepts as text, as a list of non-empty strings."""
    if isinstance(texts, os.PathLike) or (isinstance(texts, str) and Path(texts).suffix.lower()
                                          in (".txt", ".csv") and Path(texts).is_file()):
        p = Path(texts)
        if p.suffix.lower() == ".csv":
            import pandas as pd

            try:
                df = pd.read_csv(p, dtype=str, keep_default_na=False)
            except (OSError, ValueError, UnicodeDecodeError) as e:
                raise DataError(f"{p}: not a readable CSV: {' '.join(str(e).split())[:200]}") \
                    from None
            if "text" not in df.columns:
                raise DataError(f"{p}: a CSV of texts to predict needs a 'text' column "
                                f"(columns: {[str(c) for c in df.columns][:10]})")
            texts = df["text"].tolist()
        elif p.suffix.lower() == ".txt":
            texts = [p.read_text(encoding="utf-8", errors="replace")]
        else:
            raise DataError(f"{p}: give texts as strings, a .txt file or a .csv with a 'text' "
                            "column")
    elif isinstance(texts, str):
        texts = [texts]
    elif isinstance(texts, np.ndarray):
        texts = texts.tolist()
    try:
        items = list(texts)
    except TypeError:
        raise DataError(f"cannot use {type(texts).__name__} as text: give a string or a "
                        "list of strings") from None
    if not items:
        raise DataError("no texts given (empty list)")
    bad = [i for i, t in enumerate(items) if not isinstance(t, str)]
    if bad:
        raise DataError(f"text {bad[0]} is a {type(items[bad[0]]).__name__}, not a string")
    empty = [i for i, t in enumerate(items) if not t.strip()]
    if empty:
        raise DataError(f"{len(empty)} text(s) are empty (first: {empty[0]}); a model "
                        "cannot predict from nothing")
    return items


# ----------------------------------------------------------------------------- assembly
def from_texts(
    name: str,
    texts: Sequence[str],
    labels: Any,
    texts_test: Sequence[str] | None = None,
    labels_test: Any = None,
    *,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    max_length: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    test_fraction: float = TEST_FRACTION,
    max_train: int | None = None,
    task: str | None = None,
    task_options: dict[str, Any] | None = None,
    image_size: int | None = None,
    verbose: bool = False,
) -> Dataset:
    """A text classification :class:`Dataset` from strings and labels: a test split held
    out (stratified, seeded) unless ``texts_test``/``labels_test`` are given (an official
    split), then the validation split; the tokenizer is trained on what is left."""
    if image_size is not None:
        raise DataError(f"{name}: image_size does not apply to text")
    if task not in (None, "classification"):
        raise DataError(f"{name}: text data sets are classification (got task={task!r})")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or \
            not MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE:
        raise DataError(f"vocab_size must be an integer from {MIN_VOCAB_SIZE} to "
                        f"{MAX_VOCAB_SIZE}, got {vocab_size!r:.30}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(
            max_length, int) or not 1 <= max_length <= MAX_LENGTH):
        raise DataError(f"max_length must be an integer from 1 to {MAX_LENGTH}, got "
                        f"{max_length!r:.30}")
    if (texts_test is None) != (labels_test is None):
        raise DataError(f"{name}: give both texts_test and labels_test, or neither")
    n_given = len(texts)
    texts = list(texts) + list(texts_test or [])
    y = np.asarray(labels).astype(str)
    if labels_test is not None:
        yt = np.asarray(labels_test).astype(str)
        y = np.concatenate([y, yt]) if y.ndim == yt.ndim == 1 else yt[None]
    if y.ndim != 1 or len(y) != len(texts):
        raise DataError(f"{name}: {len(texts)} texts but labels of shape {y.shape}")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise DataError(f"{name}: text {bad[0]} is a {type(texts[bad[0]]).__name__}, not a "
                        "string")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise DataError(f"{name}: {len(empty)} empty text(s) (first at index {empty[0]}); "
                        "remove or fill them")
    y_idx, _, classes = _labels(y.astype(str), None, None)
    if len(classes) < 2:
        raise DataError(f"{name}: all texts have a single class ({classes[0] if classes else '-'}"
                        "); classification needs at least 2")
    idx = np.arange(len(texts))
    if texts_test is not None:
        keep, held = idx[:n_given], idx[n_given:]
        if len(np.unique(y_idx[keep])) < 2:
            raise DataError(f"{name}: the training texts have a single class")
    else:
        keep, held = _split(y_idx, test_fraction, np.random.default_rng([seed, 1]), True)
    test_i = idx[held]
    pool_i, pool_y = idx[keep], y_idx[keep]
    if max_train is not None:
        pool_i, pool_y = _limit(pool_i, pool_y, max_train, seed, True)
    keep, held = _split(pool_y, val_fraction, np.random.default_rng([seed, 2]), True)
    if len(held) == 0 or len(test_i) == 0:
        raise DataError(f"{name}: {len(texts)} texts are too few to hold out validation and "
                        "test texts; give at least 3 per class, better hundreds")
    train_i, val_i = pool_i[keep], pool_i[held]
    train_texts = [texts[i] for i in train_i]
    tok = train_tokenizer(train_texts, vocab_size)
    lengths = np.array([len(e.ids) for e in tok.encode_batch(train_texts)])
    if max_length is None:
        p95 = float(np.percentile(lengths, 95)) if len(lengths) else 8.0
        max_length = int(min(MAX_LENGTH, max(8, -(-int(np.ceil(p95)) // 8) * 8)))
    truncated = float(np.mean(lengths > max_length))
    pre = TextPreprocessor(tok, max_length, truncated)
    if verbose:
        print(f"text: {len(train_texts)} training texts, vocabulary {pre.vocab_size}, "
              f"{max_length} tokens per text ({truncated:.1%} of training texts truncated)")

    def enc(ii: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(pre.ids([texts[i] for i in ii])[0])

    return Dataset(
        name=name,
        x_train=enc(train_i), y_train=np.ascontiguousarray(y_idx[train_i], np.int64),
        x_val=enc(val_i), y_val=np.ascontiguousarray(y_idx[val_i], np.int64),
        x_test=enc(test_i), y_test=np.ascontiguousarray(y_idx[test_i], np.int64),
        classes=list(classes),
        # ids are not normalized; one value per input position, as predict checks widths
        mean=(0.0,) * max_length, std=(1.0,) * max_length,
        task="classification",
        task_options=dict(task_options or {}),
        input_kind="text",
        preprocessing={**pre.state(), "onnx_input": (
            f"the ONNX graph takes token ids, not strings: float32 (N, {max_length}), "
            f"padded with {PAD_ID} at the end (tokenization happens before the graph: "
            "the tokenizer in 'preprocessing.tokenizer', loadable with "
            "tokenizers.Tokenizer.from_str; nasforge.load(dir).preprocess(texts) computes "
            "the ids)")},
    )


def load_text(spec: str, target: str | Sequence[str] | None = None, *,
              text_column: str | None = None, **kw: Any) -> Dataset:
    """``text:FILE.csv`` (a text and a label column) or ``text:DIR`` (one sub-folder of
    ``.txt`` files per class). Options as :func:`from_texts`."""
    s = spec.strip()
    if s.lower().startswith(TEXT_PREFIX):
        s = s[len(TEXT_PREFIX):].strip()
    p = Path(s).expanduser()
    if p.is_dir():
        if target is not None or text_column is not None:
            raise DataError(f"{spec}: a folder of texts has its labels in the sub-folder "
                            "names; target and text_column apply to a CSV")
        texts, y = read_text_folder(p)
    elif p.is_file() and p.suffix.lower() == ".csv":
        texts, y = read_text_csv(p, target, text_column)
    elif p.exists():
        raise DataError(f"{spec}: text data are a .csv file (text and label columns) or a "
                        "folder with one sub-folder of .txt files per class")
    else:
        raise DataError(f"{spec}: no such file or folder")
    return from_texts(p.stem if p.is_file() else p.name, texts, y, **kw)
