"""Semantic segmentation: a U-Net-style decoder over a searched backbone's levels.

The decoder (Ronneberger et al. 2015, U-Net, as an FPN-like top-down path) starts at the
backbone's coarsest level and, level by level towards the finest, upsamples (bilinear),
concatenates the skip connection and applies ``depth`` 3x3 conv-BN-ReLU of ``width``
channels; a 1x1 conv gives the class logits, upsampled to the input size. The loss is
per-pixel cross-entropy (the loaders' 255 is ignored: letterbox padding, unlabelled
pixels); the metrics are torchmetrics' ``MeanIoU`` (``miou``, the primary objective) and
``DiceScore`` (``dice``), both macro over the classes present, background included,
computed over every labelled pixel of a split at once.

Targets are the loaders' ``(N, S, S)`` class maps (0 background, ``k + 1`` class ``k``
of ``data.yaml``); the served network (and ONNX graph) outputs per-pixel class
probabilities ``(N, K, S, S)``; :meth:`Segmentation.decode` maps the letterboxed
prediction back to each original image (crop the padding, resize, argmax).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasforge.errors import NasforgeError, RunDirError
from nasforge.tasks.base import Task, register

IGNORE = 255
METRICS_INSTALL = "pip install 'nasforge[segmentation]' (torchmetrics)"


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class UNetDecoder(nn.Module):
    """Top-down: coarsest level -> (upsample, concat skip, ``depth`` convs) per finer
    level -> 1x1 class logits -> bilinear to the input size."""

    def __init__(self, channels: Sequence[int], width: int, depth: int, n_classes: int
                 ) -> None:
        super().__init__()
        chans = list(channels)
        self.top = nn.Sequential(*[_conv_bn_relu(chans[-1] if i == 0 else width, width)
                                   for i in range(max(1, depth))])
        self.up = nn.ModuleList(
            nn.Sequential(*[_conv_bn_relu(width + c if i == 0 else width, width)
                            for i in range(max(1, depth))])
            for c in reversed(chans[:-1]))
        self.classify = nn.Conv2d(width, n_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        x = self.top(feats[-1])
        for m, skip in zip(self.up, reversed(list(feats[:-1])), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = m(torch.cat([x, skip], 1))
        out = self.classify(x)
        if tuple(out.shape[-2:]) != tuple(size):
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out


class Segmenter(nn.Module):
    """Backbone -> U-Net decoder: ``(N, K, H, W)`` class logits."""

    def __init__(self, backbone: nn.Module, decoder: UNetDecoder) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.backbone.forward_features(x),
                            (int(x.shape[-2]), int(x.shape[-1])))


class Probabilities(nn.Module):
    """The served segmenter: softmax over the classes, per pixel."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.inner(x), dim=1)


def _metrics_api() -> tuple[Any, Any]:
    """``(MeanIoU, DiceScore)`` of torchmetrics; missing: one line saying what to install."""
    try:
        from torchmetrics.segmentation import DiceScore, MeanIoU
    except ImportError:
        raise NasforgeError(f"segmentation metrics need torchmetrics: {METRICS_INSTALL}"
                            ) from None
    return MeanIoU, DiceScore


def mask_metrics(pred: torch.Tensor, target: torch.Tensor, n_classes: int
                 ) -> dict[str, float]:
    """``miou`` and ``dice`` (torchmetrics, macro over the classes present, background
    included) of class maps ``pred`` against ``target`` over every pixel whose target is
    not :data:`IGNORE`."""
    MeanIoU, DiceScore = _metrics_api()
    keep = target != IGNORE
    p, t = pred[keep].reshape(1, -1).long(), target[keep].reshape(1, -1).long()
    if t.numel() == 0:
        return {"miou": 0.0, "dice": 0.0}
    miou = MeanIoU(num_classes=n_classes, input_format="index")(p, t)
    dice = DiceScore(num_classes=n_classes, input_format="index", average="macro")(p, t)
    return {"miou": float(miou), "dice": float(torch.nan_to_num(dice, 0.0))}


@dataclass
class SegmentationMask:
    """One image's segmentation: ``mask`` (H, W) class ids in the original image's
    pixels (0 background), ``classes`` naming them; :meth:`save` draws it over the
    image."""

    mask: np.ndarray
    classes: list[str]
    image: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(len(np.unique(self.mask[self.mask > 0])))

    def to_json(self) -> dict[str, Any]:
        """The share of the image's pixels per class found (background included)."""
        ids, counts = np.unique(self.mask, return_counts=True)
        return {"classes": {self.classes[int(i)] if int(i) < len(self.classes) else str(i):
                            round(float(c) / self.mask.size, 4)
                            for i, c in zip(ids, counts, strict=True)}}

    def describe(self) -> str:
        shares = self.to_json()["classes"]
        return ", ".join(f"{k} {v:.1%}" for k, v in shares.items())

    def draw(self, image: Any = None) -> Any:
        """The image with every non-background class tinted (PIL)."""
        from PIL import Image

        im = image if image is not None else self.image
        if im is None:
            im = Image.new("RGB", (self.mask.shape[1], self.mask.shape[0]))
        base = np.asarray(im.convert("RGB"), np.float32)
        rng = np.random.default_rng(7)
        lut = rng.integers(40, 256, (max(len(self.classes), int(self.mask.max()) + 1), 3))
        colour = lut[self.mask].astype(np.float32)
        on = (self.mask > 0)[..., None]
        out = np.where(on, 0.5 * base + 0.5 * colour, base)
        return Image.fromarray(out.clip(0, 255).astype(np.uint8))

    def save(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        p.parent.mkdir(parents=True, exist_ok=True)
        self.draw().save(p)
        return p


class SegmentationResults(list):  # type: ignore[type-arg]
    """One :class:`SegmentationMask` per image."""

    def to_json(self) -> list[dict[str, Any]]:
        return [m.to_json() for m in self]


@register("segmentation", help="a class per pixel: a U-Net decoder on the searched backbone, "
          "cross-entropy, mIoU and Dice (the YOLO layout with masks/)")
class Segmentation(Task):
    """Semantic segmentation (see the module docstring). Options: ``decoder_width``
    (channels, 32), ``decoder_depth`` (convs per decoder level, 1). The default objective
    is ``val_miou``."""

    primary = "miou"
    #: as detection (a dense-prediction head learns as slowly; not measured separately)
    min_ranking_epochs = 3.0
    mode = "max"
    metric_names = ("miou", "dice", "loss")
    stratify = False
    output_names = ("probabilities",)
    image_fit = "letterbox"
    spatial = True
    output_axis: ClassVar[int] = 1
    train_defaults: ClassVar[dict[str, Any]] = {"batch_size": 32, "label_smoothing": 0.0}

    def __init__(self, classes: list[str] | None = None, n_classes: int = 0,
                 decoder_width: int = 32, decoder_depth: int = 1) -> None:
        self.classes = [str(c) for c in (classes or [])]
        self.n_classes = int(n_classes or len(self.classes))
        for name, v, lo, hi in (("decoder_width", decoder_width, 4, 512),
                                ("decoder_depth", decoder_depth, 1, 4)):
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise NasforgeError(f"segmentation: {name} must be an integer from {lo} to "
                                    f"{hi}, got {v!r}")
        self.decoder_width, self.decoder_depth = decoder_width, decoder_depth

    def fit(self, y_train: np.ndarray) -> Segmentation:
        _metrics_api()  # a missing torchmetrics fails here, before any training
        if not self.n_classes:
            y = np.asarray(y_train)
            y = y[y != IGNORE]
            self.n_classes = int(y.max()) + 1 if y.size else 0
        return self

    def n_outputs(self) -> int:
        if self.n_classes < 2:
            raise NasforgeError("segmentation needs the background and at least one class")
        return self.n_classes

    def build_network(self, space: Any, arch: Any, input_shape: tuple[int, ...],
                      n_outputs: int | None = None) -> nn.Module:
        if len(input_shape) != 3:
            raise NasforgeError(f"segmentation takes images (C, H, W), got {input_shape}")
        backbone = space.build_backbone(arch, tuple(input_shape))
        dec = UNetDecoder([lv.channels for lv in backbone.levels], self.decoder_width,
                          self.decoder_depth, n_outputs or self.n_outputs())
        return Segmenter(backbone, dec)

    def encode(self, y: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y).long()
        if t.dim() != 3:
            raise NasforgeError(f"segmentation targets must be (N, H, W) class maps, got "
                                f"shape {tuple(t.shape)}")
        return t

    def flip_targets(self, y: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
        return torch.where(flipped.to(y.device)[:, None, None], y.flip(-1), y)

    def loss(self, label_smoothing: float = 0.0) -> nn.Module:
        return nn.CrossEntropyLoss(ignore_index=IGNORE, label_smoothing=label_smoothing)

    def metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        out = out.float()
        n = max(len(out), 1)
        loss = sum(float(F.cross_entropy(out[i:i + 64], y[i:i + 64], ignore_index=IGNORE))
                   * len(out[i:i + 64]) for i in range(0, len(out), 64)) / n
        pred = out.argmax(1)
        return {**mask_metrics(pred, y, self.n_outputs()), "loss": loss}

    def serve(self, net: nn.Module) -> nn.Module:
        return Probabilities(net)

    def decode(self, out: np.ndarray, names: list[str] | None = None,
               sizes: Sequence[tuple[int, int]] | None = None,
               input_shape: Sequence[int] | None = None, images: Sequence[Any] | None = None
               ) -> SegmentationResults:
        """Served probabilities -> per image a :class:`SegmentationMask` in the original
        pixels (the letterbox's padding cropped, bilinear back to the image's size)."""
        from nasforge.data.detection import letterbox_params

        classes = list(names or self.classes or [str(i) for i in range(out.shape[1])])
        prob = torch.as_tensor(np.asarray(out, np.float32))
        res = SegmentationResults()
        for i in range(len(prob)):
            p = prob[i : i + 1]
            if sizes is not None and input_shape is not None:
                h, w = sizes[i]
                _, nh, nw, top, left = letterbox_params(h, w, int(input_shape[1]))
                p = F.interpolate(p[:, :, top:top + nh, left:left + nw], size=(h, w),
                                  mode="bilinear", align_corners=False)
            res.append(SegmentationMask(p[0].argmax(0).numpy().astype(np.int64), classes,
                                        images[i] if images is not None else None))
        return res

    def state(self) -> dict[str, Any]:
        return {"task": self.name, "classes": self.classes, "n_classes": self.n_classes,
                "decoder_width": self.decoder_width, "decoder_depth": self.decoder_depth}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Segmentation:
        try:
            return cls(classes=[str(c) for c in state.get("classes") or []],
                       n_classes=int(state.get("n_classes") or 0),
                       decoder_width=state.get("decoder_width", 32),
                       decoder_depth=state.get("decoder_depth", 1))
        except (TypeError, ValueError, NasforgeError) as e:
            raise RunDirError(f"the segmentation task's state is corrupt: {e}") from None
