"""The model directory: write it (:func:`save_best`), find it, check ``arch.json``, :func:`load`."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nasforge.errors import NasforgeError, RunDirError
from nasforge.export._format import (
    ARCH_FILE,
    FORMAT,
    FORMAT_VERSION,
    ONNX_FILE,
    SUMMARY_FILE,
    WEIGHTS_FILE,
)
from nasforge.export.predict import LoadedModel
from nasforge.export.to_onnx import export_onnx

if TYPE_CHECKING:
    from nasforge.data import Dataset
    from nasforge.spaces.base import Arch, SearchSpace


# ----------------------------------------------------------------------------- helpers
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _jsonable(v: Any) -> Any:
    """Numbers from numpy/torch as plain Python, so metrics always serialize."""
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return v.item()
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN/inf
    if isinstance(v, str | int | float | bool) or v is None:
        return v
    return str(v)


def _write_json(path: Path, doc: Mapping[str, Any]) -> None:
    """Write atomically, so an interrupted save never leaves half a JSON file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(doc), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as independent contiguous CPU tensors (safetensors refuses shared storage)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}

# -------------------------------------------------------------------------------- save
class FlipTTA(nn.Module):
    """Test-time augmentation for a model trained with random horizontal flips: the
    average of its class probabilities on the image and its mirror image, returned as
    log-probabilities (so softmax, argmax and the ONNX graph treat them like logits).

    Written by hand because it is four lines and must live inside the exported graph;
    it costs a second forward pass and is measured so (latency in ``summary.json``).
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_both(x)[0]

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(served output, the inner model's plain logits)`` from the same two passes, so
        a test can score the model with and without the augmentation at once."""
        plain = self.inner(x)
        p = torch.softmax(plain, -1) + torch.softmax(self.inner(torch.flip(x, [3])), -1)
        return torch.log(p * 0.5), plain


class InputResize(nn.Module):
    """Bilinear resize of the input images to ``size`` (H, W), then ``inner``.

    What a compound-scaled model (``nasforge scale``) puts in front of its network: the
    network was scaled to a higher resolution, but the model keeps taking the data's own
    input shape (the same images, files and ONNX input as the unscaled model), so it is a
    drop-in replacement. The resize is the one ``train_model(resolution=...)`` does
    (``align_corners=False``, no antialias); a model directory declares it in ``arch.json``
    (``"input_resize": [H, W]``) and its weights are those of ``inner`` alone.
    """

    def __init__(self, inner: nn.Module, size: Sequence[int]) -> None:
        super().__init__()
        self.inner = inner
        self.size = (int(size[0]), int(size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)
        return self.inner(x)


def check_resize(size: Any, input_shape: Sequence[int]) -> tuple[int, int]:
    """``size`` as (H, W) for an image model of ``input_shape``, else a clear error (what a
    hostile ``arch.json`` says is bounded like any input shape)."""
    from nasforge.spaces.base import check_input_shape

    if len(input_shape) != 3:
        raise NasforgeError(f"an input resize applies to images (C, H, W), not inputs of "
                            f"shape {tuple(input_shape)}")
    if not isinstance(size, list | tuple) or len(size) != 2:
        raise NasforgeError(f"input_resize must be [height, width], got {size!r:.100}")
    _, h, w = check_input_shape([int(input_shape[0]), *size])
    return h, w


#: test-time augmentations a model directory can declare (``arch.json`` "tta")
TTA = {"flip": FlipTTA}


def with_tta(model: nn.Module, tta: str | None) -> nn.Module:
    """``model`` wrapped for serving with test-time augmentation ``tta`` (None: as is)."""
    if tta is None:
        return model
    if tta not in TTA:
        raise NasforgeError(f"unknown test-time augmentation {tta!r}; known: {sorted(TTA)}")
    wrapped = TTA[tta](model)
    wrapped.train(model.training)  # a fresh module is in train mode: keep the model's mode
    return wrapped


def save_best(
    out_dir: str | os.PathLike[str],
    model: nn.Module,
    arch: Arch,
    space: SearchSpace,
    data: Dataset,
    metrics: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
    *,
    onnx: bool = True,
    tta: str | None = None,
) -> Path:
    """Write the model directory (see module docstring) and return its path.

    ``tta``: the test-time augmentation the model is served with (``"flip"``); the
    weights stay those of the bare network, the ONNX graph and :func:`load` include it.
    A ``model`` that is an :class:`InputResize` is stored as its inner network's weights
    and an ``input_resize`` entry, and loads as the same wrapper.

    An ONNX failure is recorded in ``summary.json`` (``onnx.error``) instead of losing
    the weights that took a search to find.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from nasforge import __version__

    input_shape = [int(s) for s in data.input_shape]
    was_training = model.training
    model.eval()
    try:
        dev = next(model.parameters()).device
    except StopIteration:
        dev = torch.device("cpu")
    with torch.no_grad():
        probe = torch.zeros(2, *input_shape, device=dev)
        task = data.make_task()
        num_classes = int(model(probe).shape[getattr(task, "output_axis", -1)])
    model.train(was_training)
    if data.task == "classification":
        classes = [str(c) for c in data.classes] or [str(i) for i in range(num_classes)]
        if len(classes) != num_classes:
            raise NasforgeError(
                f"the model has {num_classes} outputs but the data set has {len(classes)} "
                "classes"
            )
    else:
        classes = []
        if task.raw_width() != num_classes:
            raise NasforgeError(f"the model has {num_classes} outputs but the {data.task} "
                                f"task needs {task.raw_width()}")

    weights = out / WEIGHTS_FILE
    from safetensors.torch import save_file

    bare = model.inner if isinstance(model, InputResize) else model
    tmp = weights.with_name(weights.name + ".tmp")
    save_file(_state_tensors(bare), str(tmp), metadata={"format": FORMAT})
    os.replace(tmp, weights)

    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nasforge_version": __version__,
        "torch_version": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "space": space.name,
        "space_config": space.config(),
        "arch": arch.to_json(),
        "input_shape": input_shape,
        "num_classes": num_classes,
        "classes": classes,
        "task": task.state(),
        "mean": [float(v) for v in data.mean],
        "std": [float(v) for v in data.std],
        "dataset": data.name,
        "weights": {"file": WEIGHTS_FILE, "sha256": _sha256(weights)},
        "input_kind": data.input_kind,
    }
    if data.preprocessing is not None and "onnx_input" in data.preprocessing:
        # text: the fitted tokenizer's JSON; the data say what the ONNX graph takes
        pre = dict(data.preprocessing)
        doc["onnx_input"] = pre.pop("onnx_input")
        doc["preprocessing"] = pre
    elif data.preprocessing is not None:  # the column steps predict() repeats (JSON data)
        doc["preprocessing"] = data.preprocessing
        doc["onnx_input"] = (
            f"{ONNX_FILE} takes the preprocessed float32 matrix (N, {input_shape[0]}), not "
            "raw rows: the columns encoded as in 'preprocessing' (features named in "
            "'preprocessing.features'), then standardized with its 'mean' and 'std'; "
            "nasforge.load(dir).preprocess(rows) computes it")
    if isinstance(model, InputResize):
        doc["input_resize"] = list(check_resize(list(model.size), input_shape))
    if tta is not None:
        with_tta(model, tta)  # an unknown name fails before anything is written
        doc["tta"] = tta
    _write_json(out / ARCH_FILE, doc)

    onnx_info: dict[str, Any] = {"file": None, "error": None}
    if onnx:
        try:
            # the task's post-processing (e.g. de-standardization) is part of the graph
            done = export_onnx(task.serve(with_tta(model, tta)), input_shape,
                               out / ONNX_FILE, output_name=task.output_names[0])
            onnx_info = {**done.to_json(), "error": None}
        except Exception as e:  # noqa: BLE001 - keep the rest of the model directory
            onnx_info = {"file": None, "error": f"{type(e).__name__}: {e}"}
    params = sum(p.numel() for p in model.parameters())
    summary = {
        "space": space.name,
        "arch": arch.text,
        "dataset": data.name,
        "metrics": {"params": params, **dict(metrics)},
        "extra": dict(extra or {}),
        "onnx": onnx_info,
        "nasforge_version": __version__,
    }
    _write_json(out / SUMMARY_FILE, summary)
    return out


def model_dir(path: str | os.PathLike[str]) -> Path:
    """The model directory that ``path`` names: itself, ``path/best`` for a run directory,
    or the folder of an ``arch.json``; raises :class:`RunDirError` when there is none."""
    p = Path(path).expanduser()
    if not p.exists():
        raise RunDirError(f"{p}: no such file or directory")
    if p.is_file():
        if p.name == ARCH_FILE:
            return p.parent
        raise RunDirError(f"{p} is a file; give a model directory (e.g. RUN_DIR/best)")
    if (p / ARCH_FILE).is_file():
        return p
    if (p / "best" / ARCH_FILE).is_file():
        return p / "best"
    hint = (
        " (this run has no exported model yet: the final training has not finished;"
        " `nasforge resume` the run or search with final training enabled)"
        if (p / "best").is_dir() or any(p.glob("*.db")) or (p / "config.json").exists()
        else ""
    )
    raise RunDirError(
        f"{p} is not a nasforge model directory: {ARCH_FILE} is missing{hint}. "
        "A search writes its model to RUN_DIR/best."
    )


def _read_arch_doc(d: Path) -> dict[str, Any]:
    from nasforge.jsonio import read_json

    doc = read_json(d / ARCH_FILE, kind=None, error=RunDirError)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise RunDirError(f"{d / ARCH_FILE} is not a nasforge model description")
    ver = doc.get("format_version")
    if ver != FORMAT_VERSION:
        raise RunDirError(
            f"{d / ARCH_FILE} has format version {ver!r}; this nasforge reads version "
            f"{FORMAT_VERSION}. Use the nasforge version that wrote it "
            f"({doc.get('nasforge_version', 'unknown')}) or re-export the model."
        )
    need = ("space", "arch", "input_shape", "classes", "mean", "std")
    missing = [k for k in need if k not in doc]
    if missing:
        raise RunDirError(f"{d / ARCH_FILE} is incomplete: missing {missing}")
    return doc


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model directory written by :func:`save_best` (or a run directory's ``best``).

    The network is rebuilt from the space registry and the weights are read with
    safetensors (no pickle) and loaded strictly, so a file that does not fit the
    architecture is an error rather than a half-initialized model.
    """
    from nasforge import spaces

    d = model_dir(path)
    doc = _read_arch_doc(d)
    from nasforge.spaces.base import check_input_shape

    try:
        input_shape = check_input_shape(doc["input_shape"], 2)
        task = _task_of(doc)
        if not isinstance(doc["classes"], list) or (not doc["classes"] and
                                                    task.name == "classification"):
            raise ValueError("'classes' must be a non-empty list")
        classes = [str(c) for c in doc["classes"]]
        n_out = len(classes) if task.name == "classification" else task.n_outputs()
        mean = tuple(float(v) for v in doc["mean"])
        std = tuple(float(v) for v in doc["std"])
        if not isinstance(doc.get("space_config") or {}, dict):
            raise ValueError("'space_config' must be an object")
        cfg = dict(doc.get("space_config") or {})
    except (TypeError, ValueError, OverflowError, NasforgeError) as e:
        raise RunDirError(f"{d / ARCH_FILE} is corrupt: {e}") from None
    c = input_shape[0]  # channels of an image, features of a vector
    if len(mean) != c or len(std) != c:
        raise RunDirError(f"{d / ARCH_FILE} is corrupt: 'mean' and 'std' need {c} value(s) "
                          f"for a {c}-channel model, got {len(mean)} and {len(std)}")
    preprocessing = None
    if doc.get("preprocessing") is not None:
        from nasforge.data.tabular import TabularPreprocessor
        from nasforge.data.text import TextPreprocessor

        # the state says which steps it is: a text model's carries its tokenizer
        pre_cls: Any = TextPreprocessor if isinstance(doc["preprocessing"], dict) and \
            doc["preprocessing"].get("kind") == TextPreprocessor.kind else TabularPreprocessor
        try:
            preprocessing = pre_cls.from_state(doc["preprocessing"])
        except NasforgeError as e:
            raise RunDirError(f"{d / ARCH_FILE}: {e}") from None
        if preprocessing.n_features != c:
            raise RunDirError(f"{d / ARCH_FILE} is corrupt: the preprocessing makes "
                              f"{preprocessing.n_features} features, the model takes {c}")
    if not all(math.isfinite(v) for v in mean) or not all(math.isfinite(v) and v > 0
                                                           for v in std):
        raise RunDirError(f"{d / ARCH_FILE} is corrupt: 'mean' must be finite and 'std' "
                          f"finite and positive, got {list(mean)} and {list(std)}")
    try:
        space = spaces.get(str(doc["space"]), **cfg)
        arch = space.from_json(doc["arch"])
    except NasforgeError as e:
        raise RunDirError(f"{d / ARCH_FILE}: {e}") from None
    except TypeError as e:  # a space_config key the space does not take
        raise RunDirError(f"{d / ARCH_FILE}: bad space_config {cfg}: {e}") from None
    resize = None
    if doc.get("input_resize") is not None:
        try:
            resize = check_resize(doc["input_resize"], input_shape)
        except NasforgeError as e:
            raise RunDirError(f"{d / ARCH_FILE} is corrupt: {e}") from None
    built_shape = input_shape if resize is None else (input_shape[0], *resize)
    try:
        module = task.build_network(space, arch, built_shape, n_out)
    except NasforgeError as e:
        raise RunDirError(f"{d}: cannot build {arch.text}: {e}") from None

    winfo = doc.get("weights") or {}
    if not isinstance(winfo, dict):
        raise RunDirError(f"{d / ARCH_FILE} is corrupt: 'weights' must be an object")
    wname = str(winfo.get("file") or WEIGHTS_FILE)
    if "\0" in wname or len(wname) > 255:
        raise RunDirError(f"{d / ARCH_FILE}: the weights file name is not a file name")
    wfile = d / wname
    # a tampered arch.json must not make us read (or hash) files outside the directory
    if Path(wname).name != wname or wname in (".", "..") or \
            not wfile.resolve().is_relative_to(d.resolve()):
        raise RunDirError(f"{d / ARCH_FILE}: the weights file {wname!r} must be a file inside "
                          "the model directory")
    if not wfile.is_file():
        raise RunDirError(f"{d}: {wfile.name} is missing; the model directory is incomplete")
    expected = winfo.get("sha256")
    if expected and _sha256(wfile) != expected:
        raise RunDirError(
            f"{wfile} does not match the checksum in {ARCH_FILE}: the file is corrupt or was "
            "modified after export"
        )
    from safetensors.torch import load_file

    try:
        state = load_file(str(wfile), device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise RunDirError(f"{wfile} is not a readable safetensors file: {e}") from None
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        msg = " ".join(str(e).split())
        raise RunDirError(
            f"{wfile.name} does not fit the architecture in {ARCH_FILE} ({arch.text}): {msg[:600]}"
        ) from None
    if resize is not None:
        module = InputResize(module, resize)
    tta = doc.get("tta")
    if tta is not None:
        try:
            module = with_tta(module, str(tta))
        except NasforgeError as e:
            raise RunDirError(f"{d / ARCH_FILE}: {e}") from None
    module = task.serve(module)
    module.to(device).eval()
    return LoadedModel(module, arch, space, classes, input_shape, mean, std, d, doc, task,  # type: ignore[arg-type]
                       preprocessing)


def _task_of(doc: Mapping[str, Any]) -> Any:
    """The fitted task an ``arch.json`` declares (classification when it predates tasks)."""
    from nasforge import tasks

    state = doc.get("task") or {"task": "classification"}
    if not isinstance(state, dict) or not isinstance(state.get("task"), str):
        raise ValueError("'task' must be an object with a 'task' name")
    if state["task"] not in tasks.registry:
        raise ValueError(f"unknown task {state['task']!r} (this nasforge knows "
                         f"{', '.join(tasks.names())})")
    return tasks.registry.factory(state["task"]).from_state(state)  # type: ignore[attr-defined]
