"""The searched model as a self-contained directory, and everything to use it again.

A model directory (``RUN_DIR/best``) holds

- ``arch.json``: what to rebuild (space name + config, the architecture), what the model
  expects (input shape, class names, normalization mean/std) and version information;
- ``weights.safetensors``: the state dict, buffers included (never a pickle: loading a
  model must not run code from the file), with its sha256 recorded in ``arch.json`` so
  a corrupt or swapped file is caught instead of silently predicting garbage;
- ``model.onnx``: the same network for onnxruntime & co., with a dynamic batch axis;
- ``summary.json``: final metrics and whatever the caller adds (test accuracy, cost, ...).

:func:`load` (``nasforge.load``) rebuilds the network from the space registry and the
weights; :meth:`LoadedModel.predict` takes images in the forms people actually have
(numpy arrays in any common layout, files, PIL images) and preprocesses them exactly as
the training data was.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn as nn

from nasforge.errors import NasforgeError, RunDirError

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from nasforge.data import Dataset
    from nasforge.spaces.base import Arch, SearchSpace

#: identifies an ``arch.json`` written by this module
FORMAT = "nasforge-model"
#: bumped whenever a reader of the previous format could not read the new one
FORMAT_VERSION = 1

ARCH_FILE = "arch.json"
WEIGHTS_FILE = "weights.safetensors"
ONNX_FILE = "model.onnx"
SUMMARY_FILE = "summary.json"

#: largest |onnx - torch| accepted when an export is checked with onnxruntime
ONNX_ATOL = 1e-4

ImageInput = Any  # np.ndarray | str | os.PathLike | PIL.Image.Image | Sequence of those


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


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the exporters' progress prints, deprecation warnings and registry logs."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


# -------------------------------------------------------------------------------- ONNX
@dataclass
class OnnxExport:
    """How an ONNX export went: which exporter, which opset, how close to torch."""

    path: Path
    exporter: str
    opset: int | None
    max_abs_diff: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
            "exporter": self.exporter,
            "opset": self.opset,
            "max_abs_diff": self.max_abs_diff,
        }


#: the oldest ONNX opset nasforge exports to (older ones lack operators every net uses)
MIN_OPSET = 9


def _max_opset() -> int:
    """The newest opset the installed ``onnx`` knows."""
    try:
        import onnx.defs

        return int(onnx.defs.onnx_opset_version())
    except Exception:  # noqa: BLE001 - a guess is enough for a range check
        return 21


def _export_once(
    model: nn.Module, example: torch.Tensor, path: Path, opset: int | None, dynamo: bool
) -> None:
    kw: dict[str, Any] = dict(
        input_names=["input"], output_names=["logits"], opset_version=opset, dynamo=dynamo
    )
    if dynamo:
        kw["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
        kw["external_data"] = False  # one self-contained file
    else:
        kw["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
    with _quiet_export():
        torch.onnx.export(model, (example,), str(path), **kw)


def _onnx_check(model: nn.Module, path: Path, example: torch.Tensor) -> float:
    """Max |onnxruntime - torch| on ``example`` and on a different batch size."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    worst = 0.0
    for x in (example, example[:1].repeat(3, 1, 1, 1) * 0.5):
        with torch.no_grad():
            ref = model(x).detach().cpu().numpy()
        out = sess.run(None, {name: x.numpy()})[0]
        if out.shape != ref.shape:
            raise RuntimeError(f"ONNX output shape {out.shape} != torch {ref.shape}")
        worst = max(worst, float(np.max(np.abs(out - ref))))
    return worst


def export_onnx(
    model: nn.Module,
    input_shape: Sequence[int],
    path: str | os.PathLike[str],
    opset: int | None = None,
    *,
    check: bool = True,
    atol: float = ONNX_ATOL,
) -> OnnxExport:
    """Export ``model`` (on CPU, eval mode) to ONNX with a dynamic batch axis.

    Tries the torch.export-based exporter first and the TorchScript one if that fails;
    with ``check`` the file is run with onnxruntime and compared with torch, so a
    silently wrong export counts as a failure. Raises ``RuntimeError`` naming every
    exporter's error if none worked. The model's device and train/eval mode are restored.
    """
    path = Path(path)
    if opset is not None:
        top = _max_opset()
        if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
            raise NasforgeError(f"opset must be an integer from {MIN_OPSET} to {top}, "
                                f"got {opset!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a path under a file, a read-only disk, a name too long
        raise NasforgeError(f"cannot write {path}: {e.strerror or e}") from None
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise NasforgeError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    model.cpu().eval()
    # batch 2, not 1: torch.export specializes dimensions of size 0 and 1
    example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    errors: list[str] = []
    try:
        for dynamo in (True, False):
            name = "dynamo" if dynamo else "torchscript"
            try:
                path.unlink(missing_ok=True)
                _export_once(model, example, path, opset, dynamo)
                diff = _onnx_check(model, path, example) if check else None
                if diff is not None and not diff <= atol:
                    raise RuntimeError(f"ONNX output differs from torch by {diff:.3g} > {atol}")
            except Exception as e:  # noqa: BLE001 - try the next exporter, report all
                errors.append(f"{name}: {type(e).__name__}: {str(e).strip()[:500]}")
                continue
            import onnx

            opset_used = next(
                (o.version for o in onnx.load(str(path), load_external_data=False).opset_import
                 if o.domain in ("", "ai.onnx")),
                opset,
            )  # fmt: skip
            if opset is not None and opset_used != opset:  # never another opset silently
                errors.append(f"{name}: wrote opset {opset_used}, not the {opset} asked for")
                path.unlink(missing_ok=True)
                continue
            return OnnxExport(path, name, opset_used, diff)
    finally:
        model.to(device)
        model.train(was_training)
    path.unlink(missing_ok=True)
    raise RuntimeError("ONNX export failed: " + " | ".join(errors))


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
        num_classes = int(model(probe).shape[-1])
    model.train(was_training)
    classes = [str(c) for c in data.classes] or [str(i) for i in range(num_classes)]
    if len(classes) != num_classes:
        raise NasforgeError(
            f"the model has {num_classes} outputs but the data set has {len(classes)} classes"
        )

    weights = out / WEIGHTS_FILE
    from safetensors.torch import save_file

    tmp = weights.with_name(weights.name + ".tmp")
    save_file(_state_tensors(model), str(tmp), metadata={"format": FORMAT})
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
        "mean": [float(v) for v in data.mean],
        "std": [float(v) for v in data.std],
        "dataset": data.name,
        "weights": {"file": WEIGHTS_FILE, "sha256": _sha256(weights)},
    }
    if tta is not None:
        with_tta(model, tta)  # an unknown name fails before anything is written
        doc["tta"] = tta
    _write_json(out / ARCH_FILE, doc)

    onnx_info: dict[str, Any] = {"file": None, "error": None}
    if onnx:
        try:
            done = export_onnx(with_tta(model, tta), input_shape, out / ONNX_FILE)
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


# -------------------------------------------------------------------------------- load
class Top(NamedTuple):
    """One prediction: the class index, its name and its probability."""

    class_id: int
    label: str
    probability: float


@dataclass
class Prediction:
    """Predictions for a batch of images; iterating yields one :class:`Top` per image."""

    class_ids: np.ndarray
    probabilities: np.ndarray
    labels: list[str]
    classes: list[str] = field(default_factory=list, repr=False)

    def __len__(self) -> int:
        return len(self.class_ids)

    def __iter__(self) -> Iterator[Top]:
        for i, c in enumerate(self.class_ids):
            yield Top(int(c), self.labels[i], float(self.probabilities[i, c]))

    def __getitem__(self, i: int) -> Top:
        c = int(self.class_ids[i])
        return Top(c, self.labels[i], float(self.probabilities[i, c]))

    def top_k(self, k: int = 5) -> list[list[Top]]:
        """The ``k`` most likely classes of every image, most likely first."""
        k = max(1, min(int(k), self.probabilities.shape[1]))
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [
            [Top(int(c), self.classes[c], float(p[c])) for c in row]
            for row, p in zip(order, self.probabilities, strict=True)
        ]


@dataclass
class LoadedModel:
    """A model directory loaded back: the network plus what it needs to preprocess input."""

    module: nn.Module
    arch: Arch
    space: SearchSpace
    classes: list[str]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    path: Path
    info: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def summary(self) -> dict[str, Any]:
        """``summary.json`` of the model directory ({} when absent or unreadable)."""
        from nasforge.jsonio import read_json

        try:
            return read_json(self.path / SUMMARY_FILE)
        except NasforgeError:
            return {}

    def preprocess(self, images: ImageInput) -> np.ndarray:
        """Images in any accepted form -> normalized float32 (N, C, H, W), as in training."""
        x = _to_model_input(images, self.input_shape)
        c = self.input_shape[0]
        mean = np.asarray(self.mean, np.float32).reshape(-1)
        std = np.asarray(self.std, np.float32).reshape(-1)
        if mean.size == 1:
            mean = np.repeat(mean, c)
        if std.size == 1:
            std = np.repeat(std, c)
        return np.ascontiguousarray(
            (x - mean[None, :, None, None]) / std[None, :, None, None], dtype=np.float32
        )

    def predict(self, images: ImageInput, batch_size: int = 256) -> Prediction:
        """Classify ``images``: a numpy array ((H,W), (N,H,W), (N,H,W,C), (N,C,H,W) or one
        (H,W,C) image; uint8 0..255 or float 0..1), a path or list of paths to image files,
        or PIL images (or a list mixing paths and PIL images)."""
        if batch_size < 1:
            raise NasforgeError(f"batch_size must be at least 1, got {batch_size}")
        x = self.preprocess(images)
        try:
            device = next(self.module.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
        self.module.eval()
        probs = []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                logits = self.module(torch.from_numpy(x[i : i + batch_size]).to(device))
                probs.append(torch.softmax(logits.double(), dim=-1).cpu().numpy())
        p = np.concatenate(probs)
        ids = p.argmax(axis=1).astype(np.int64)
        return Prediction(ids, p, [self.classes[i] for i in ids], list(self.classes))

    def to(self, device: str | torch.device) -> LoadedModel:
        self.module.to(device)
        return self


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
        if not isinstance(doc["classes"], list) or not doc["classes"]:
            raise ValueError("'classes' must be a non-empty list")
        classes = [str(c) for c in doc["classes"]]
        mean = tuple(float(v) for v in doc["mean"])
        std = tuple(float(v) for v in doc["std"])
        if not isinstance(doc.get("space_config") or {}, dict):
            raise ValueError("'space_config' must be an object")
        cfg = dict(doc.get("space_config") or {})
    except (TypeError, ValueError, OverflowError, NasforgeError) as e:
        raise RunDirError(f"{d / ARCH_FILE} is corrupt: {e}") from None
    c = input_shape[0]
    if len(mean) != c or len(std) != c:
        raise RunDirError(f"{d / ARCH_FILE} is corrupt: 'mean' and 'std' need {c} value(s) "
                          f"for a {c}-channel model, got {len(mean)} and {len(std)}")
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
    try:
        module = space.build(arch, input_shape, len(classes))
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
    tta = doc.get("tta")
    if tta is not None:
        try:
            module = with_tta(module, str(tta))
        except NasforgeError as e:
            raise RunDirError(f"{d / ARCH_FILE}: {e}") from None
    module.to(device).eval()
    return LoadedModel(module, arch, space, classes, input_shape, mean, std, d, doc)  # type: ignore[arg-type]


# -------------------------------------------------------------------- image conversion
def _is_pathlike(v: Any) -> bool:
    return isinstance(v, str | os.PathLike)


def _is_pil(v: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return False
    return isinstance(v, Image.Image)


def _open_image(p: str | os.PathLike[str]) -> PILImage.Image:
    from PIL import Image, UnidentifiedImageError

    from nasforge.data import MAX_IMAGE_PIXELS, image_too_large

    path = Path(p).expanduser()
    try:
        with Image.open(path) as im:
            if image_too_large(im):
                raise NasforgeError(
                    f"image {path} is {im.width} x {im.height} pixels, over the "
                    f"{MAX_IMAGE_PIXELS:,} nasforge decodes; resize it first"
                )
            im.load()
            return im.copy()
    except Image.DecompressionBombError:
        raise NasforgeError(
            f"image {path} is too large to decode safely (over {MAX_IMAGE_PIXELS:,} pixels); "
            "resize it first"
        ) from None
    except FileNotFoundError:
        raise NasforgeError(f"image file not found: {path}") from None
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise NasforgeError(f"cannot read image {path}: {e}") from None


def _pil_to_unit(im: PILImage.Image, shape: tuple[int, int, int]) -> np.ndarray:
    """A PIL image -> float32 (C, H, W) in [0, 1], converted as the image-folder loader does."""
    from PIL import Image

    c, h, w = shape
    if c not in (1, 3):
        raise NasforgeError(f"the model takes {c}-channel input; give such images as numpy arrays")
    from nasforge.data import to_8bit

    im = to_8bit(im, gray=c == 1)
    if (im.height, im.width) != (h, w):
        im = im.resize((w, h), Image.Resampling.BILINEAR)
    a = np.asarray(im, dtype=np.float32).reshape(h, w, -1) / 255.0
    return np.moveaxis(a, 2, 0)


def _array_to_unit(x: np.ndarray) -> np.ndarray:
    """uint8/integer 0..255 -> /255; bool -> 0/1; float must already be in [0, 1]."""
    if x.dtype == bool:
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (int(x.min()) < 0 or int(x.max()) > 255):
            raise NasforgeError(
                f"integer images must be in 0..255, got values {int(x.min())}..{int(x.max())}"
            )
        return x.astype(np.float32) / 255.0
    if np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
        if x.size and not np.isfinite(x).all():
            raise NasforgeError("images contain NaN or infinite values")
        if x.size and (float(x.min()) < -1e-3 or float(x.max()) > 1 + 1e-3):
            raise NasforgeError(
                f"float images must be in [0, 1] (got values {float(x.min()):.3g}.."
                f"{float(x.max()):.3g}); pass uint8 0..255 images or divide by 255. "
                "Do not pass already-normalized data: predict() normalizes itself."
            )
        return np.clip(x, 0.0, 1.0)
    raise NasforgeError(f"images have dtype {x.dtype}: expected uint8 (0..255) or float (0..1)")


_CH = (1, 2, 3, 4)  # gray, gray + alpha, RGB, RGBA


def _array_to_nchw(x: np.ndarray, want_c: int) -> np.ndarray:
    """(H,W), (N,H,W), one (H,W,C), (N,H,W,C) or (N,C,H,W) -> (N, C, H, W)."""
    if x.ndim == 2:
        return x[None, None]
    if x.ndim == 3:
        # (N, H, W) unless the last axis looks like channels (no image is 1-4 pixels wide)
        if x.shape[-1] in _CH and x.shape[0] not in _CH and x.shape[1] > 4:
            return np.moveaxis(x, 2, 0)[None]
        return x[:, None]
    if x.ndim == 4:
        first, last = x.shape[1] in _CH, x.shape[3] in _CH
        if first and last:  # e.g. (N, 3, 3, 3): prefer the axis that fits the model, then NCHW
            if x.shape[3] == want_c and x.shape[1] != want_c:
                return np.moveaxis(x, 3, 1)
            return x
        if first:
            return x
        if last:
            return np.moveaxis(x, 3, 1)
        raise NasforgeError(
            f"cannot tell the channel axis of images with shape {x.shape}: expected "
            "(N, C, H, W) or (N, H, W, C) with C = 1 (gray), 2 (gray + alpha), 3 (RGB) or "
            "4 (RGBA) channels"
        )
    raise NasforgeError(
        f"images have shape {x.shape}: expected (H, W), (N, H, W), (N, H, W, C) or (N, C, H, W)"
    )


def _convert_channels(x: np.ndarray, want: int) -> np.ndarray:
    """(N, C, H, W) in [0, 1] -> ``want`` channels: alpha dropped, RGB <-> gray (ITU-R 601)."""
    have = x.shape[1]
    if have == want:
        return x
    if have == 2:  # gray + alpha
        x, have = x[:, :1], 1
        if want == 1:
            return x
    if have == 4 and want != 4:
        x, have = x[:, :3], 3
        if want == 3:
            return x
    if have == 3 and want == 1:
        w = np.array([0.299, 0.587, 0.114], np.float32)[None, :, None, None]
        return (x * w).sum(axis=1, keepdims=True)
    if have == 1 and want == 3:
        return np.repeat(x, 3, axis=1)
    raise NasforgeError(
        f"images have {have} channel(s) but the model takes {want}; cannot convert "
        f"{have} -> {want} (1 = gray, 2 = gray + alpha, 3 = RGB, 4 = RGBA are understood)"
    )


def _resize_unit(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize (N, C, H, W) float images channel by channel with PIL bilinear."""
    if x.shape[2:] == (h, w):
        return x
    from PIL import Image

    out = np.empty((x.shape[0], x.shape[1], h, w), np.float32)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            im = Image.fromarray(np.ascontiguousarray(x[i, c], np.float32), mode="F")
            out[i, c] = np.asarray(im.resize((w, h), Image.Resampling.BILINEAR), np.float32)
    return np.clip(out, 0.0, 1.0)


def _to_model_input(images: ImageInput, shape: tuple[int, int, int]) -> np.ndarray:
    """Any accepted input -> float32 (N, C, H, W) in [0, 1] at the model's size and channels."""
    c, h, w = shape
    if _is_pathlike(images) or _is_pil(images):
        images = [images]
    if isinstance(images, np.ndarray) or (
        isinstance(images, Sequence)
        and len(images) > 0
        and not any(_is_pathlike(v) or _is_pil(v) or isinstance(v, np.ndarray) for v in images)
    ):  # one array (or nested lists of numbers); a list of arrays goes item by item below,
        # so that images of different sizes are each resized like files are
        try:
            arr = np.asarray(images)
        except ValueError:  # ragged nested lists
            raise NasforgeError("images given as nested lists must all have one shape; "
                                "give a list of numpy arrays or file paths instead") from None
        if arr.dtype == object:
            raise NasforgeError("images must be one numpy array, or a list of paths / PIL images")
        if arr.size == 0:
            raise NasforgeError(f"no images given (array of shape {arr.shape})")
        x = _array_to_nchw(arr, c)
        x = _convert_channels(_array_to_unit(x), c)
        return np.ascontiguousarray(_resize_unit(x, h, w), np.float32)
    if isinstance(images, Sequence) or hasattr(images, "__iter__"):
        items = list(images)
        if not items:
            raise NasforgeError("no images given (empty list)")
        parts: list[np.ndarray] = []
        for v in items:  # each item one image, or (an array) a batch of any size
            if _is_pil(v):
                parts.append(_pil_to_unit(v, shape)[None])
            elif _is_pathlike(v):
                parts.append(_pil_to_unit(_open_image(v), shape)[None])
            elif isinstance(v, np.ndarray):
                parts.append(_to_model_input(v, shape))  # resized like files are
            else:
                raise NasforgeError(
                    f"cannot use {type(v).__name__} as an image: give file paths, PIL images "
                    "or numpy arrays"
                )
        return np.ascontiguousarray(np.concatenate(parts), np.float32)
    raise NasforgeError(
        f"cannot use {type(images).__name__} as images: give a numpy array, file path(s) "
        "or PIL image(s)"
    )
