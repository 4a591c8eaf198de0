"""``nasforge predict`` and ``nasforge export``: use a saved model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from nasforge.cli._app import app
from nasforge.errors import NasforgeError


def _expand_images(items: Sequence[Path]) -> list[Any]:
    """Files as given; folders -> their image files (sorted); .npy -> the array's images."""
    from PIL import Image

    exts = {e.lower() for e in Image.registered_extensions()}
    out: list[Any] = []
    for p in items:
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts)
            if not files:
                raise NasforgeError(f"{p} has no image files")
            out += [(str(f), f) for f in files]
        elif p.suffix.lower() == ".npy" and p.is_file():
            from nasforge.data import read_npy

            arr = read_npy(p)  # header and size checked before the data is read
            if arr.dtype == object:
                raise NasforgeError(f"{p}: holds Python objects (a pickle); only numeric "
                                    "arrays are read")
            arr = arr[None] if arr.ndim == 2 else arr
            # the whole array is one batch (predict checks its layout); a name per image
            out += [(f"{p}[{i}]", arr if i == 0 else None) for i in range(len(arr))]
        else:
            out.append((str(p), p))
    return out


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="A model directory (RUN_DIR/best) or run.")],
    images: Annotated[
        list[Path] | None,
        typer.Argument(help="Image files, folders of images, or .npy arrays; for a model "
                       "of tabular data, .csv/.tsv/.parquet tables; for a text model, .txt "
                       "files (one text each) or .csv files with a 'text' column.")
    ] = None,
    text: Annotated[
        list[str] | None,
        typer.Option("--text", help="A raw text to classify (text models); repeatable.")
    ] = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes per image.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    save: Annotated[
        Path | None,
        typer.Option("--save", help="Detection: write every image with its boxes drawn "
                     "into this folder (same file names).")
    ] = None,
    conf: Annotated[
        float | None,
        typer.Option("--conf", min=0.0, max=1.0, help="Detection: the lowest score kept "
                     "(default 0.25).")
    ] = None,
    iou: Annotated[
        float | None,
        typer.Option("--iou", min=0.0, max=1.0, help="Detection: the NMS IoU threshold "
                     "(default 0.6).")
    ] = None,
) -> None:
    """Predict with a saved model: images, table rows, series or texts; a detector prints
    (or --json) its boxes in each image's own pixels and --save draws them."""
    from nasforge.export import load

    model = load(model_dir)
    images = list(images or [])
    if getattr(model.space, "input_kind", "image") == "text":  # raw strings and files
        _predict_texts(model, images, list(text or []), top_k, as_json)
        return
    if text:
        raise NasforgeError(f"--text is for text models; {model_dir} takes "
                            f"{getattr(model.space, 'input_kind', 'image')} inputs")
    if not images:
        raise NasforgeError("give the inputs to predict (files or folders)")
    if model.preprocessing is not None:  # a model of tables: rows in, one line per row
        _predict_rows(model, images, top_k, as_json)
        return
    if getattr(model.space, "input_kind", "image") == "sequence":  # .npy / .csv of series
        from nasforge.data.sequences import series_rows

        named = [(f"{p}[{i}]", s) for p in images
                 for i, s in enumerate(series_rows(p, model.input_shape[0] - 1))]
    else:
        named = _expand_images(images)
    options = {k: v for k, v in (("conf", conf), ("iou", iou)) if v is not None}
    pred = model.predict([v for _, v in named if v is not None], **options)
    if save is not None and not (len(pred) and hasattr(pred[0], "save")):
        raise NasforgeError("--save draws a detector's boxes or a segmenter's masks; this "
                            "model predicts neither")
    if len(pred) != len(named):
        raise NasforgeError(f"{len(named)} images named but {len(pred)} predicted; give "
                            ".npy arrays of shape (N, H, W), (N, H, W, C) or (N, C, H, W)")
    if hasattr(pred, "to_json") and not hasattr(pred, "top_k"):  # boxes per image
        _print_boxes(named, pred, as_json, save)
        return
    if not hasattr(pred, "top_k"):  # a regressor: numbers, one per target
        _print_values(named, pred, as_json)
        return
    rows = pred.top_k(top_k)
    if as_json:
        doc = [
            {
                "image": name,
                "class_id": tops[0].class_id,
                "label": tops[0].label,
                "probability": tops[0].probability,
                "top_k": [t._asdict() for t in tops],
            }
            for (name, _), tops in zip(named, rows, strict=True)
        ]
        typer.echo(json.dumps(doc, indent=2))
        return
    for (name, _), tops in zip(named, rows, strict=True):
        typer.echo(f"{name}: " + ", ".join(f"{t.label} ({t.probability:.3f})" for t in tops))


def _print_boxes(named: Sequence[Any], pred: Any, as_json: bool, save: Path | None) -> None:
    """Per-image results that draw themselves (a detector's boxes, a segmenter's masks):
    one line per image (their ``describe()``) or JSON; ``save`` writes each drawing."""
    saved: list[str | None] = []
    if save is not None:
        used: set[str] = set()
        for (name, _), det in zip(named, pred, strict=True):
            stem = Path(name.split("[")[0]).stem
            base = f"{stem}_{name.split('[')[1].rstrip(']')}" if "[" in name else stem
            fname, k = f"{base}.png", 1
            while fname in used:
                k += 1
                fname = f"{base}_{k}.png"
            used.add(fname)
            saved.append(str(det.save(save / fname)))
    else:
        saved = [None] * len(named)
    if as_json:
        docs = [det.to_json() for det in pred]
        typer.echo(json.dumps([{"image": name, **({"saved": out} if out else {}),
                                **(doc if isinstance(doc, dict) else {"detections": doc})}
                               for (name, _), doc, out in zip(named, docs, saved, strict=True)],
                              indent=2))
        return
    for (name, _), det, out in zip(named, pred, saved, strict=True):
        typer.echo(f"{name}: {det.describe()}" + (f" -> {out}" if out else ""))


def _predict_texts(model: Any, files: Sequence[Path], texts: list[str], top_k: int,
                   as_json: bool) -> None:
    """Predictions for every ``--text`` (named ``text:N``) and every text in the files
    (``FILE`` for a .txt, ``FILE:ROW`` for the rows of a .csv)."""
    from nasforge.data.text import as_texts

    named: list[tuple[str, str]] = [(f"text:{i + 1}", t) for i, t in enumerate(texts)]
    for p in files:
        if p.suffix.lower() not in (".txt", ".csv") or not p.is_file():
            raise NasforgeError(f"{p}: give a text model .txt files, .csv files with a "
                                "'text' column, or --text \"...\"")
        got = as_texts(p)
        named += [(str(p), got[0])] if p.suffix.lower() == ".txt" else \
            [(f"{p}:{i + 1}", t) for i, t in enumerate(got)]
    if not named:
        raise NasforgeError("give texts to predict: --text \"...\" or .txt/.csv files")
    _print_tops(named, model.predict([t for _, t in named]).top_k(top_k), "text", as_json)


def _predict_rows(model: Any, tables: Sequence[Path], top_k: int, as_json: bool) -> None:
    """Predictions for every row of every table, named ``FILE:ROW`` (rows from 1, after
    the header line)."""
    named: list[Any] = []
    preds = []
    for t in tables:
        pred = model.predict(t)
        preds.append(pred)
        named += [(f"{t}:{i + 1}", None) for i in range(len(pred))]
    if not hasattr(preds[0], "top_k"):
        import numpy as np

        class _All:  # the tables' values as one prediction
            names = preds[0].names
            values = np.concatenate([p.values for p in preds])

        _print_values(named, _All, as_json)
        return
    _print_tops(named, [tops for p in preds for tops in p.top_k(top_k)], "row", as_json)


def _print_tops(named: Sequence[Any], rows: Sequence[Any], key: str, as_json: bool) -> None:
    """One line (or JSON object, the input's name under ``key``) per input: its top-k
    labels with probabilities."""
    if as_json:
        typer.echo(json.dumps([{key: name, "label": tops[0].label,
                                "probability": tops[0].probability,
                                "top_k": [t._asdict() for t in tops]}
                               for (name, _), tops in zip(named, rows, strict=True)], indent=2))
        return
    for (name, _), tops in zip(named, rows, strict=True):
        typer.echo(f"{name}: " + ", ".join(f"{t.label} ({t.probability:.3f})" for t in tops))


def _print_values(named: list[Any], pred: Any, as_json: bool) -> None:
    """Regression predictions: ``name: y=1.23`` per image, or JSON objects."""
    names = list(pred.names)
    rows = [{"image": name, **{n: float(v) for n, v in zip(names, row, strict=True)}}
            for (name, _), row in zip(named, pred.values, strict=True)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['image']}: " + ", ".join(f"{n}={r[n]:.6g}" for n in names))


# ------------------------------------------------------------------------------ export
@app.command("export")
def export_cmd(
    path: Annotated[Path, typer.Argument(help="A run directory or a model directory.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (or directory).")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="Output format: onnx.")] = "onnx",
    opset: Annotated[int | None, typer.Option(help="ONNX opset (default: the exporter's).")] = None,
) -> None:
    """Export a saved model to another format (ONNX, dynamic batch axis)."""
    formats = ("onnx",)
    if fmt.lower() not in formats:
        raise NasforgeError(f"unknown format {fmt!r}; valid formats: {', '.join(formats)}")
    from nasforge.export import export_onnx, load

    model = load(path)
    target = out / "model.onnx" if out.is_dir() else out
    try:
        info = export_onnx(model.module, model.input_shape, target, opset=opset)
    except RuntimeError as e:
        from nasforge.errors import shorten

        raise NasforgeError(f"cannot export {model.arch} to ONNX: {shorten(str(e), 600)}"
                            ) from None
    diff = "" if info.max_abs_diff is None else f", max |onnx - torch| {info.max_abs_diff:.2g}"
    typer.echo(f"wrote {target} (opset {info.opset}, {info.exporter} exporter{diff})")
