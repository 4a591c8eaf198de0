"""A loaded model in use: :class:`LoadedModel`, its predictions, and the image reading for them.

:meth:`LoadedModel.predict` takes images in the forms people actually have (numpy arrays in
any common layout, files, PIL images) and preprocesses them exactly as the training data was.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn as nn

from nasforge.errors import NasforgeError
from nasforge.export._format import SUMMARY_FILE

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from nasforge.spaces.base import Arch, SearchSpace

ImageInput = Any  # np.ndarray | str | os.PathLike | PIL.Image.Image | Sequence of those


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
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    path: Path
    info: dict[str, Any] = field(default_factory=dict, repr=False)
    #: the fitted :class:`~nasforge.tasks.Task` (None: classification, as before tasks)
    task: Any = field(default=None, repr=False)
    #: for a model of tabular data: the fitted column steps
    #: (:class:`~nasforge.data.tabular.TabularPreprocessor`) that turn rows into its input
    preprocessing: Any = field(default=None, repr=False)

    @property
    def summary(self) -> dict[str, Any]:
        """``summary.json`` of the model directory ({} when absent or unreadable)."""
        from nasforge.jsonio import read_json

        try:
            return read_json(self.path / SUMMARY_FILE)
        except NasforgeError:
            return {}

    def preprocess(self, images: ImageInput) -> np.ndarray:
        """Images in any accepted form -> normalized float32 (N, C, H, W), as in training;
        for a tabular model, rows (a DataFrame, a .csv/.tsv/.parquet path, a dict or a
        list of dicts) -> the standardized float32 (N, F) features, as in training; series,
        for a model of a space whose input kind is ``"sequence"`` (see
        :func:`nasforge.data.sequences.to_model_input`)."""
        if self.preprocessing is not None:
            return self.preprocessing(images)
        if getattr(self.space, "input_kind", "image") == "sequence":
            from nasforge.data.sequences import to_model_input

            return to_model_input(images, self.input_shape, self.mean, self.std)
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

    def _letterboxed(self, images: ImageInput) -> tuple[np.ndarray, dict[str, Any]]:
        """Images -> the normalized letterboxed input of a task with ``image_fit =
        "letterbox"`` (as the YOLO-layout loader reads them), and what its ``decode`` needs
        to answer in each original image's pixels: sizes, the model's input shape and
        the RGB originals (to draw on)."""
        from nasforge.data.detection import letterbox

        c, h, w = self.input_shape
        if c != 3 or h != w:
            raise NasforgeError(f"a letterboxing model takes square RGB input, this one "
                                f"{self.input_shape}")
        pils = _to_pil_list(images)
        x = np.empty((len(pils), c, h, w), np.float32)
        for i, im in enumerate(pils):
            x[i] = letterbox(im, h).transpose(2, 0, 1)
        mean = np.asarray(self.mean, np.float32).reshape(-1)
        std = np.asarray(self.std, np.float32).reshape(-1)
        x = (x - mean[None, :, None, None]) / std[None, :, None, None]
        return np.ascontiguousarray(x, np.float32), {
            "sizes": [(im.height, im.width) for im in pils],
            "input_shape": self.input_shape, "images": pils}

    def __call__(self, images: ImageInput, **options: Any) -> Any:
        """``model(images)`` is :meth:`predict` (``nasforge.load(dir)(image)``)."""
        return self.predict(images, **options)

    def predict(self, images: ImageInput, batch_size: int = 256, **options: Any) -> Any:
        """Predict for ``images``: a numpy array ((H,W), (N,H,W), (N,H,W,C), (N,C,H,W) or
        one (H,W,C) image; uint8 0..255 or float 0..1), a path or list of paths to image
        files, or PIL images (or a list mixing paths and PIL images). A tabular model takes
        rows: a DataFrame, a table file's path, one dict row, a dict of columns or a list
        of dict rows, preprocessed exactly as the training data were. A text model takes
        raw strings (one string, a list of them, a .txt file or a .csv with a ``text``
        column), tokenized with the tokenizer stored in its model directory.

        Returns what the model's task returns: a :class:`Prediction` (classes and
        probabilities) for a classifier, :class:`~nasforge.tasks.regression.Values`
        (numbers in the training targets' units) for a regressor, one
        :class:`~nasforge.tasks.detection.Detections` per image for a detector (boxes in
        the original image's pixels; ``options`` ``conf``, ``iou``, ``max_det`` go to the
        task's decoding)."""
        if batch_size < 1:
            raise NasforgeError(f"batch_size must be at least 1, got {batch_size}")
        context: dict[str, Any] = {}
        if getattr(self.task, "image_fit", "resize") == "letterbox":
            x, context = self._letterboxed(images)
        else:
            x = self.preprocess(images)
        try:
            device = next(self.module.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
        self.module.eval()
        outs = []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                outs.append(self.module(torch.from_numpy(x[i : i + batch_size]).to(device))
                            .float().cpu().numpy())
        out = np.concatenate(outs)
        if (self.task is None or self.task.name == "classification") and not options:
            logits = torch.from_numpy(out).double()
            p = torch.softmax(logits, dim=-1).numpy()
            ids = p.argmax(axis=1).astype(np.int64)
            return Prediction(ids, p, [self.classes[i] for i in ids], list(self.classes))
        import inspect

        takes = inspect.signature(self.task.decode).parameters if self.task else {}
        unknown = sorted(set(options) - set(takes))
        if unknown:
            raise NasforgeError(f"predict options {unknown} do not apply to a "
                                f"{getattr(self.task, 'name', 'classification')} model")
        return self.task.decode(out, **context, **options)

    def to(self, device: str | torch.device) -> LoadedModel:
        self.module.to(device)
        return self


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


def _to_pil_list(images: ImageInput) -> list[Any]:
    """Any accepted input -> one RGB PIL image per image, at its own size (a letterboxing
    model keeps the original sizes to map its boxes back)."""
    from PIL import Image

    if _is_pathlike(images) or _is_pil(images):
        images = [images]
    if isinstance(images, np.ndarray):
        items: list[Any] = [images]
    elif isinstance(images, Sequence) or hasattr(images, "__iter__"):
        items = list(images)
        if items and not any(_is_pathlike(v) or _is_pil(v) or isinstance(v, np.ndarray)
                             for v in items):
            items = [np.asarray(items)]  # nested lists of numbers: one array
    else:
        raise NasforgeError(f"cannot use {type(images).__name__} as images: give a numpy "
                            "array, file path(s) or PIL image(s)")
    if not items:
        raise NasforgeError("no images given (empty list)")
    out: list[Any] = []
    for v in items:
        if _is_pil(v):
            out.append(v.convert("RGB"))
        elif _is_pathlike(v):
            out.append(_open_image(v).convert("RGB"))
        elif isinstance(v, np.ndarray):
            if v.size == 0:
                raise NasforgeError(f"no images given (array of shape {v.shape})")
            x = _convert_channels(_array_to_unit(_array_to_nchw(v, 3)), 3)
            for img in x:
                u8 = (np.clip(img, 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
                out.append(Image.fromarray(np.ascontiguousarray(u8)))
        else:
            raise NasforgeError(f"cannot use {type(v).__name__} as an image: give file "
                                "paths, PIL images or numpy arrays")
    return out


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
