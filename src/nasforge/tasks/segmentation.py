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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasforge.errors import NasforgeError, RunDirError
from nasforge.spaces.base import Arch, Choice
from nasforge.tasks.base import Task, register, resized

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
    """Backbone -> U-Net decoder: ``(N, K, H, W)`` class logits. ``resolution`` < 1
    resizes the input first; the logits come back at the input's size."""

    def __init__(self, backbone: nn.Module, decoder: UNetDecoder,
                 resolution: float = 1.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.resolution = float(resolution)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        if self.resolution != 1.0:
            x = F.interpolate(x, size=resized(size, self.resolution), mode="bilinear",
                              align_corners=False)
        return self.decoder(self.backbone.forward_features(x), size)


#: the searched decoder (:meth:`Segmentation.arch_choices`); the first of each is the
#: default
DECODER_CHOICES: dict[str, tuple[Any, ...]] = {
    "decoder_width": (32, 16, 48, 64),
    "decoder_depth": (1, 2),
    "resolution": (1.0, 0.75, 0.5),
}


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
    """Semantic segmentation (see the module docstring). The decoder is searched with
    the backbone (:data:`DECODER_CHOICES`, through the ``with-head`` space):
    ``decoder_width`` (channels), ``decoder_depth`` (convs per decoder level) and
    ``resolution`` (the input resized by this factor inside the network); each is also an
    option that, given, is fixed, and ``search_head`` false fixes them all at their
    defaults (32, 1, 1.0). The default objective is ``val_miou``."""

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
                 decoder_width: int | None = None, decoder_depth: int | None = None,
                 resolution: float | None = None, search_head: bool = True) -> None:
        self.classes = [str(c) for c in (classes or [])]
        self.n_classes = int(n_classes or len(self.classes))
        self.fixed: dict[str, Any] = {}
        for name, v, lo, hi in (("decoder_width", decoder_width, 4, 512),
                                ("decoder_depth", decoder_depth, 1, 4)):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise NasforgeError(f"segmentation: {name} must be an integer from {lo} to "
                                    f"{hi}, got {v!r}")
            self.fixed[name] = v
        if resolution is not None:
            if isinstance(resolution, bool) or not isinstance(resolution, int | float) or \
                    not (math.isfinite(resolution) and 0.25 <= resolution <= 2.0):
                raise NasforgeError(f"segmentation: resolution must be a number from 0.25 "
                                    f"to 2.0 (a factor of the input size), got {resolution!r}")
            self.fixed["resolution"] = float(resolution)
        if not isinstance(search_head, bool):
            raise NasforgeError(f"segmentation: search_head must be true or false, got "
                                f"{search_head!r}")
        self.search_head = search_head

    def arch_choices(self) -> tuple[Choice, ...]:
        out = tuple(Choice(k, (self.fixed[k],) if k in self.fixed else opts)
                    for k, opts in DECODER_CHOICES.items())
        return out if self.search_head and any(len(c.options) > 1 for c in out) else ()

    def head_config(self, arch: Any = None) -> dict[str, Any]:
        """The decoder of ``arch``: its choices where it has them, else the fixed options,
        else the defaults."""
        cfg = {k: self.fixed.get(k, opts[0]) for k, opts in DECODER_CHOICES.items()}
        if isinstance(arch, Arch):
            cfg.update({k: v for k, v in arch.items if k in cfg})
        return cfg

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
        cfg = self.head_config(arch)
        shape = (int(input_shape[0]), *resized(input_shape[1:], cfg["resolution"]))
        backbone = space.build_backbone(arch, shape)
        dec = UNetDecoder([lv.channels for lv in backbone.levels], cfg["decoder_width"],
                          cfg["decoder_depth"], n_outputs or self.n_outputs())
        return Segmenter(backbone, dec, resolution=cfg["resolution"])

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
                **self.fixed, "search_head": self.search_head}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Segmentation:
        try:
            opts = {k: state[k] for k in (*DECODER_CHOICES, "search_head") if k in state}
            return cls(classes=[str(c) for c in state.get("classes") or []],
                       n_classes=int(state.get("n_classes") or 0), **opts)
        except (TypeError, ValueError, NasforgeError) as e:
            raise RunDirError(f"the segmentation task's state is corrupt: {e}") from None
