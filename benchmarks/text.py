"""Text classification: nasforge (``text`` space) vs a hand-designed bag of embeddings and a
hand-designed BiLSTM vs TF-IDF + logistic regression (scikit-learn), the same CPU time for
each, one after another.

    taskset -c 1 python benchmarks/text.py --budget 60 --seeds 0 1 2

**Corpus** (real, offline): Jane Austen's six novels as packaged by Debian's
``r-cran-janeaustenr`` (the janeaustenr R package, text from Project Gutenberg). The task
is to tell which novel a paragraph comes from (6 classes). Paragraphs are the blank-line
separated blocks of at least 10 words, chapter headings dropped; at most ``--per-class``
paragraphs per novel, drawn once with a fixed seed. No R is needed: the package's data
(an R lazy-load database) is read with the ``rdata`` package from the installed package
(``apt-get install r-cran-janeaustenr``) or from the ``.deb`` (``apt-get download
r-cran-janeaustenr``; pass it with ``--deb``). ``rdata`` is a benchmark-only dependency
(``pip install rdata torch==2.13.0``), not part of nasforge. Where neither is present the
script refuses to run rather than report on something else; ``--synthetic`` runs on a
clearly labelled synthetic corpus instead.

Per seed: a stratified 80/20 train/test split (the seed's), the same for every method.

- **nasforge**: ``nasforge.search(dataset, time_budget=BUDGET)`` on a
  :func:`~nasforge.data.text.from_texts` data set with that test split: the whole job
  (search, final training on train+validation, test, export) in the budget; the tokenizer
  (WordPiece, 8192 entries) is trained on the training split only.
- **bag of embeddings** / **BiLSTM** (the text space's first two known-good designs:
  embedding 64 + mean + linear; embedding 64 + BiLSTM 2x64 + max over time + linear):
  the same tokenized data, trained on train+validation for the whole budget (AdamW, lr
  2e-3, weight decay 0.01, batch 64, cosine over the time), then tested once.
- **TF-IDF + LR**: ``TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)``
  and ``LogisticRegression(C=10)`` on the raw training texts (it needs a few seconds and
  cannot use more; its time is reported).

Writes ``text.md`` and ``text.json`` to ``--results``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

BOOKS = {"emma": "Emma", "mansfieldpark": "Mansfield Park",
         "northangerabbey": "Northanger Abbey", "persuasion": "Persuasion",
         "prideprejudice": "Pride and Prejudice", "sensesensibility": "Sense and Sensibility"}
R_DATA = Path("usr/lib/R/site-library/janeaustenr/data")
_HEADING = re.compile(r"^(chapter|volume|book)\b", re.I)


# ----------------------------------------------------------------------------- corpus
def _austen_lines(deb: Path | None) -> dict[str, list[str]]:
    """The six novels' lines, from the installed R package or the extracted .deb."""
    import warnings

    import rdata

    warnings.filterwarnings("ignore", message="Unknown file type", module="rdata")
    roots = [Path("/") / R_DATA]
    if deb is not None:
        tmp = Path(tempfile.mkdtemp(prefix="austen-"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
        roots.insert(0, tmp / R_DATA)
    d = next((r for r in roots if (r / "Rdata.rdx").is_file()), None)
    if d is None:
        raise SystemExit("janeaustenr's data not found: apt-get install r-cran-janeaustenr, "
                         "or apt-get download r-cran-janeaustenr and pass --deb FILE.deb "
                         "(or --synthetic for a synthetic corpus)")
    index = rdata.conversion.convert(rdata.parser.parse_data(
        gzip.decompress((d / "Rdata.rdx").read_bytes())))
    raw = (d / "Rdata.rdb").read_bytes()
    out = {}
    for name, (off, length) in index["variables"].items():
        off, length = int(off), int(length)  # 4 bytes of length, then zlib
        obj = rdata.conversion.convert(rdata.parser.parse_data(
            zlib.decompress(raw[off + 4: off + length])))
        out[str(name)] = [str(s) for s in obj]
    return out


def austen_corpus(deb: Path | None, per_class: int) -> tuple[list[str], list[str], str]:
    lines = _austen_lines(deb)
    texts, labels = [], []
    rng = np.random.default_rng(12345)  # the subset is fixed; seeds vary the split
    for key, title in BOOKS.items():
        paras, cur = [], []
        for line in [*lines[key], ""]:
            if line.strip():
                cur.append(line.strip())
                continue
            if cur:
                p = " ".join(cur)
                if len(p.split()) >= 10 and not _HEADING.match(p):
                    paras.append(p)
                cur = []
        pick = rng.permutation(len(paras))[:per_class]
        texts += [paras[i] for i in sorted(pick)]
        labels += [title] * len(pick)
    return texts, labels, ("Jane Austen's six novels (Debian r-cran-janeaustenr), paragraphs "
                           "of >= 10 words, which novel (6 classes)")


def synthetic_corpus(per_class: int) -> tuple[list[str], list[str], str]:
    """SYNTHETIC: 4 classes, each with 3 keywords of its own hidden among shared words."""
    rng = np.random.default_rng(12345)
    common = [f"w{i}" for i in range(400)]
    texts, labels = [], []
    for c in range(4):
        own = [f"k{c}_{j}" for j in range(3)]
        for _ in range(per_class):
            w = list(rng.choice(common, int(rng.integers(20, 60)))) + list(rng.choice(own, 2))
            rng.shuffle(w)
            texts.append(" ".join(w))
            labels.append(f"class{c}")
    return texts, labels, "SYNTHETIC corpus (4 classes, 2 keywords each among shared words)"


def split(labels: list[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    from nasforge.data import stratified_split

    y = np.unique(np.asarray(labels), return_inverse=True)[1]
    return stratified_split(y, 0.2, np.random.default_rng([seed, 99]))


# ----------------------------------------------------------------------------- methods
def _nasforge(data: Any, budget: float, out: Path, seed: int) -> dict[str, Any]:
    import nasforge

    t0 = time.monotonic()
    r = nasforge.search(data, time_budget=budget, out=out, seed=seed, progress=False)
    secs = time.monotonic() - t0
    return {"accuracy": float(r.test_metrics.get("test_accuracy", float("nan"))),
            "seconds": secs, "arch": str(r.best_arch),
            "trials": len(r.trials)}


def _hand(data: Any, design: int, budget: float, seed: int) -> dict[str, Any]:
    from nasforge import spaces
    from nasforge.training import score_model, train_model

    sp = spaces.get("text")
    arch = sp.known_good()[design]
    torch.manual_seed(seed)
    net = sp.build(arch, data.input_shape, data.n_outputs)
    t0 = time.monotonic()
    h = train_model(net, data, epochs=10_000, seconds=budget, batch_size=64,
                    optimizer="adamw", lr=2e-3, weight_decay=0.01, seed=seed,
                    include_val=True)
    m = score_model(net, data.x_test, data.y_test, data.make_task())
    return {"accuracy": float(m["accuracy"]), "seconds": time.monotonic() - t0,
            "arch": arch.text, "epochs": float(h["epochs"])}


def _tfidf(texts: list[str], labels: list[str], tr: np.ndarray, te: np.ndarray
           ) -> dict[str, Any]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t0 = time.monotonic()
    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2)
    xtr = vec.fit_transform([texts[i] for i in tr])
    clf = LogisticRegression(C=10.0, max_iter=2000)
    clf.fit(xtr, [labels[i] for i in tr])
    pred = clf.predict(vec.transform([texts[i] for i in te]))
    acc = float(np.mean(pred == np.asarray([labels[i] for i in te])))
    return {"accuracy": acc, "seconds": time.monotonic() - t0}


METHODS = (("nasforge", "nasforge (text space)"), ("bag", "bag of embeddings"),
           ("bilstm", "BiLSTM"), ("tfidf", "TF-IDF + LR"))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--per-class", type=int, default=600)
    ap.add_argument("--deb", type=Path, default=None)
    ap.add_argument("--synthetic", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-text"))
    ap.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from nasforge.data.text import from_texts

    texts, labels, corpus = (synthetic_corpus(args.per_class) if args.synthetic else
                             austen_corpus(args.deb, args.per_class))
    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        tr, te = split(labels, seed)
        data = from_texts("austen" if not args.synthetic else "synthetic",
                          [texts[i] for i in tr], [labels[i] for i in tr],
                          [texts[i] for i in te], [labels[i] for i in te], seed=seed)
        res = {"seed": seed, "n_train": len(tr), "n_test": len(te),
               "max_length": int(data.input_shape[0]),
               "vocab": int(data.preprocessing["vocab_size"])}
        print(f"seed {seed}: {len(tr)} train, {len(te)} test, {res['max_length']} tokens, "
              f"vocabulary {res['vocab']}", flush=True)
        res["nasforge"] = _nasforge(data, args.budget, args.out / f"nasforge-{seed}", seed)
        print(f"  nasforge {res['nasforge']}", flush=True)
        res["bag"] = _hand(data, 0, args.budget, seed)
        print(f"  bag {res['bag']}", flush=True)
        res["bilstm"] = _hand(data, 1, args.budget, seed)
        print(f"  bilstm {res['bilstm']}", flush=True)
        res["tfidf"] = _tfidf(texts, labels, tr, te)
        print(f"  tfidf {res['tfidf']}", flush=True)
        rows.append(res)
    args.results.mkdir(parents=True, exist_ok=True)
    meta = {"corpus": corpus, "budget_s": args.budget, "seeds": args.seeds,
            "per_class": args.per_class, "python": sys.version.split()[0],
            "torch": torch.__version__, "platform": platform.platform(),
            "affinity": sorted(os.sched_getaffinity(0)), "rows": rows}
    name = "text" if not args.synthetic else "text_synthetic"
    (args.results / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    (args.results / f"{name}.md").write_text(report(meta))
    print(report(meta))


def report(meta: dict[str, Any]) -> str:
    rows = meta["rows"]
    med = {k: float(np.median([r[k]["accuracy"] for r in rows])) for k, _ in METHODS}
    lines = [
        "# Text classification: nasforge vs hand-designed models vs TF-IDF + LR", "",
        f"Corpus: **{meta['corpus']}**; {rows[0]['n_train']} training and "
        f"{rows[0]['n_test']} test paragraphs per seed (stratified 80/20 split drawn per "
        f"seed, the same for every method). Budget: {meta['budget_s']:.0f} s of CPU time "
        "per method and seed, one method after another, pinned to one core "
        f"(affinity {meta['affinity']}, one torch thread). The machine was shared with other "
        "jobs (a CI run and other engineers' tests), so times are noisy.", "",
        "Produced by `benchmarks/text.py` (the docstring says how each method is run).", "",
        "| seed | " + " | ".join(label for _, label in METHODS) + " |",
        "|---|" + "---|" * len(METHODS),
    ]
    for r in rows:
        lines.append(f"| {r['seed']} | " + " | ".join(
            f"{100 * r[k]['accuracy']:.1f} % ({r[k]['seconds']:.0f} s)" for k, _ in METHODS)
            + " |")
    lines.append("| **median** | " + " | ".join(f"**{100 * med[k]:.1f} %**"
                                                 for k, _ in METHODS) + " |")
    lines += ["", "nasforge's chosen architectures: " + "; ".join(
        f"seed {r['seed']}: `{r['nasforge']['arch']}`" for r in rows),
        "", "Epochs the hand designs got in the budget: " + "; ".join(
        f"seed {r['seed']}: bag {r['bag']['epochs']:.0f}, BiLSTM {r['bilstm']['epochs']:.1f}"
        for r in rows), ""]
    best = max(med, key=lambda k: med[k])
    names = dict(METHODS)
    lines.append(f"Best median: {names[best]} ({100 * med[best]:.1f} %). nasforge vs "
                 f"bag of embeddings {100 * (med['nasforge'] - med['bag']):+.1f} points, vs "
                 f"BiLSTM {100 * (med['nasforge'] - med['bilstm']):+.1f}, vs TF-IDF + LR "
                 f"{100 * (med['nasforge'] - med['tfidf']):+.1f}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
