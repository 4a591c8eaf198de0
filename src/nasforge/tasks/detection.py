"""Object detection: an FPN neck and an anchor-free FCOS head on a searched backbone.

The design is FCOS (Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection",
ICCV 2019) with its later improvements (centre sampling, centerness on the regression
branch, GIoU loss): every location of every pyramid level predicts class scores
(sigmoid, focal loss), the distances ``l, t, r, b`` from itself to the four sides of its
box (GIoU loss) and a centerness (BCE) that down-weights boxes predicted far from an
object's centre. A location is a positive of the object whose box (and centre region of
``radius`` strides) contains it, if the object's size falls in the level's range;
ambiguous locations take the smallest such object.

The task owns the neck and the head (:meth:`Detection.build_network`): an FPN (Lin et
al. 2017) over the backbone's levels (``SearchSpace.build_backbone``), its width and
depth task options, with stride-2 convolutions added where the backbone has too few
coarse levels. The network returns one tensor so the rest of nasforge (the one training
loop, scoring, export) handles it like any other: ``(N, A, 4 + 1 + C + 5)`` per
location: ``l, t, r, b`` in input pixels, the centerness logit, ``C`` class logits and
the location's ``x, y, stride`` and the input's ``width, height`` (constants the loss
and the decoding need). Targets are the loaders' ``(N, M, 5)`` rows ``class, x0, y0,
x1, y1`` normalized to the (letterboxed) input, padded with class -1.

Decoding and NMS are written here in torch and numpy: torchvision (whose ``ops.nms`` is
the usual choice) is not installed next to nasforge's pinned torch. The served network
(:meth:`Detection.serve`, also the ONNX graph) decodes the boxes in the graph and
outputs ``(N, A, 4 + C)``: ``x0, y0, x1, y1`` in input pixels and per-class scores
``sqrt(sigmoid(class) * sigmoid(centerness))``; NMS is the documented post-processing
step :func:`postprocess` (numpy only). mAP comes from the COCO evaluation of
``faster-coco-eval`` (or ``pycocotools``): ``map50_95`` (COCO's AP@[.5:.95]) is the
primary metric, ``map50`` is reported beside it.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nasforge.errors import NasforgeError, RunDirError
from nasforge.spaces.base import Arch, Choice, Value
from nasforge.tasks.base import Task, register, resized

#: columns after the boxes, centerness and classes: x, y, stride, width, height
N_EXTRA = 5
#: what `pip install` makes the COCO evaluation available (the ``detection`` extra)
METRICS_INSTALL = "pip install 'nasforge[detection]' (faster-coco-eval, pycocotools)"
PRE_NMS_TOP_K = 1000
EVAL_CONF = 0.05  # COCO-style evaluation keeps low-scoring boxes: they add recall
MAX_DET = 100


# -- the network ---------------------------------------------------------------------------


def _groups(ch: int) -> int:
    return next(g for g in (8, 4, 2, 1) if ch % g == 0)


def _conv_norm_act(cin: int, cout: int, stride: int = 1, norm: str = "bn",
                   block: str = "conv") -> nn.Sequential:
    """3x3 conv, norm, ReLU; GroupNorm in the head (its weights are shared over levels
    of different statistics, which batch norm would mix, as FCOS does). ``block="dw"``:
    the depthwise-separable form (3x3 depthwise, norm, ReLU, 1x1, norm, ReLU) of
    MobileNet's blocks, a third of the FLOPs at 64 channels."""
    def norm_layer(c: int) -> nn.Module:
        return nn.BatchNorm2d(c) if norm == "bn" else nn.GroupNorm(_groups(c), c)

    if block == "dw":
        return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                             norm_layer(cin), nn.ReLU(),
                             nn.Conv2d(cin, cout, 1, bias=False), norm_layer(cout), nn.ReLU())
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), norm_layer(cout),
                         nn.ReLU())


class FPN(nn.Module):
    """Feature pyramid (Lin et al. 2017): 1x1 laterals, top-down nearest upsampling and
    addition, ``depth`` 3x3 convs per output; ``down`` stride-2 convs first bring a
    too-fine coarsest backbone level to the smallest stride used, and ``extra`` stride-2
    convs on the coarsest output add levels above the backbone's (FCOS's P6, P7).
    ``pan``: PANet's bottom-up path after the top-down one (Liu et al. 2018, as in
    YOLOv4-v8's necks): each level adds a stride-2 conv of the finer level's output and
    convolves the sum, over every output level, the extra ones included (a backbone too
    fine for the pyramid feeds it one level, whose coarser levels are all extra).
    ``block``: ``conv`` or ``dw`` for the output and bottom-up convs."""

    def __init__(self, in_channels: Sequence[int], width: int, depth: int, down: int = 0,
                 extra: int = 0, pan: bool = False, block: str = "conv") -> None:
        super().__init__()
        chans = list(in_channels)
        self.down = nn.Sequential(*[_conv_norm_act(chans[-1] if i == 0 else width, width, 2)
                                    for i in range(down)])
        if down:
            chans[-1] = width
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in chans)
        self.output = nn.ModuleList(
            nn.Sequential(*[_conv_norm_act(width, width, block=block) for _ in range(depth)])
            for _ in chans)
        self.extra = nn.ModuleList(_conv_norm_act(width, width, 2) for _ in range(extra))
        n_up = len(chans) + extra - 1 if pan else 0
        self.bottom_up = nn.ModuleList(_conv_norm_act(width, width, 2, block=block)
                                       for _ in range(n_up))
        self.merge = nn.ModuleList(_conv_norm_act(width, width, block=block)
                                   for _ in range(n_up))

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        feats = list(feats)
        if len(self.down):
            feats[-1] = self.down(feats[-1])
        lat = [m(f) for m, f in zip(self.lateral, feats, strict=True)]
        outs = [lat[-1]]
        for x in reversed(lat[:-1]):
            outs.insert(0, x + F.interpolate(outs[0], size=x.shape[-2:], mode="nearest"))
        outs = [m(x) for m, x in zip(self.output, outs, strict=True)]
        for m in self.extra:
            outs.append(m(outs[-1]))
        for i, (down, merge) in enumerate(zip(self.bottom_up, self.merge, strict=True)):
            d = down(outs[i])
            if d.shape[-2:] != outs[i + 1].shape[-2:]:  # odd sides: ceil vs floor
                d = F.interpolate(d, size=outs[i + 1].shape[-2:], mode="nearest")
            outs[i + 1] = merge(outs[i + 1] + d)
        return outs


class Scale(nn.Module):
    """A learnable scalar per level (FCOS): the shared head's regression range differs."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


class FCOSHead(nn.Module):
    """Shared classification and regression towers of ``depth`` conv-GN-ReLU of
    ``width`` channels (from the neck's ``in_width``); class logits from the first,
    ``l, t, r, b`` (``exp``, times the level's stride) and the centerness logit from the
    second. ``decoupled=False``: one tower feeds all three outputs (half the head's
    FLOPs; the coupled head YOLOX measured against). The class bias starts at the
    focal-loss prior (``p = 0.01``) so the many background locations do not swamp the
    first steps."""

    def __init__(self, width: int, n_classes: int, depth: int, n_levels: int,
                 prior: float = 0.01, in_width: int | None = None,
                 decoupled: bool = True) -> None:
        super().__init__()
        cin = int(in_width or width)

        def tower() -> nn.Sequential:
            return nn.Sequential(*[_conv_norm_act(cin if i == 0 else width, width, norm="gn")
                                   for i in range(depth)])

        self.cls_tower = tower()
        self.reg_tower = tower() if decoupled else None
        cout = width if depth else cin
        self.cls = nn.Conv2d(cout, n_classes, 3, padding=1)
        self.reg = nn.Conv2d(cout, 4, 3, padding=1)
        self.ctr = nn.Conv2d(cout, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale() for _ in range(n_levels))
        for m in (self.cls, self.reg, self.ctr):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls.bias, -math.log((1 - prior) / prior))

    def forward(self, feats: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """``size``: the input's (height, width) in the pixels the boxes are wanted in
        (the network's input before any resize: strides follow from it)."""
        h_in, w_in = size
        outs = []
        for k, f in enumerate(feats):
            n, _, h, w = f.shape
            c = self.cls_tower(f)
            r = self.reg_tower(f) if self.reg_tower is not None else c
            sy, sx = h_in / h, w_in / w  # the level's stride (ceil-halved maps: nearly)
            stride = max(sx, sy)
            ltrb = torch.exp(self.scales[k](self.reg(r)).clamp(max=10.0)) * stride
            ys = (torch.arange(h, dtype=f.dtype, device=f.device) + 0.5) * sy
            xs = (torch.arange(w, dtype=f.dtype, device=f.device) + 0.5) * sx
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            const = torch.stack([gx.reshape(-1), gy.reshape(-1),
                                 torch.full_like(gx.reshape(-1), stride),
                                 torch.full_like(gx.reshape(-1), float(w_in)),
                                 torch.full_like(gx.reshape(-1), float(h_in))], -1)
            per = torch.cat([ltrb, self.ctr(r), self.cls(c)], 1)  # (N, 5 + C, h, w)
            per = per.flatten(2).transpose(1, 2)  # (N, h * w, 5 + C)
            outs.append(torch.cat([per, const.expand(n, -1, -1)], -1))
        return torch.cat(outs, 1)


class Detector(nn.Module):
    """Backbone -> FPN -> FCOS head; ``forward`` gives the raw ``(N, A, 10 + C)`` tensor
    described in the module docstring. ``backbone`` keeps the space's parameter names.
    ``resolution`` < 1 resizes the input first (bilinear) and the head still answers in
    the input's pixels, so nothing outside the network sees the resize."""

    def __init__(self, backbone: nn.Module, neck: FPN, head: FCOSHead,
                 levels: Sequence[int], resolution: float = 1.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.use = list(levels)  # which backbone levels feed the neck
        self.resolution = float(resolution)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (int(x.shape[-2]), int(x.shape[-1]))
        if self.resolution != 1.0:
            x = F.interpolate(x, size=resized(size, self.resolution), mode="bilinear",
                              align_corners=False)
        feats = self.backbone.forward_features(x)
        pyr = self.neck([feats[i] for i in self.use])
        return self.head(pyr, size)


def decode_raw(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw outputs -> ``(boxes (N, A, 4) xyxy in input pixels, scores (N, A, C))``."""
    ltrb, ctr, cls = out[..., :4], out[..., 4:5], out[..., 5:-N_EXTRA]
    px, py = out[..., -5], out[..., -4]
    w, h = out[..., -2], out[..., -1]
    x0 = torch.minimum(torch.maximum(px - ltrb[..., 0], torch.zeros_like(px)), w)
    y0 = torch.minimum(torch.maximum(py - ltrb[..., 1], torch.zeros_like(py)), h)
    x1 = torch.minimum(px + ltrb[..., 2], w)
    y1 = torch.minimum(py + ltrb[..., 3], h)
    boxes = torch.stack([x0, y0, x1, y1], -1)
    scores = torch.sqrt(torch.sigmoid(cls) * torch.sigmoid(ctr))
    return boxes, scores


class DecodeBoxes(nn.Module):
    """The served detector: boxes decoded in the graph, ``(N, A, 4 + C)`` = ``x0, y0,
    x1, y1`` in input pixels and the class scores; NMS follows (:func:`postprocess`)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        boxes, scores = decode_raw(self.inner(x))
        return torch.cat([boxes, scores], -1)


# -- boxes ---------------------------------------------------------------------------------


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU of xyxy boxes ``a`` (n, 4) and ``b`` (m, 4): (n, m)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Generalized IoU (Rezatofighi et al. 2019) of matching xyxy rows of ``a`` and ``b``."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    union = (area_a + area_b - inter).clamp(min=1e-9)
    hull = (torch.maximum(a[:, 2:], b[:, 2:]) - torch.minimum(a[:, :2], b[:, :2])
            ).clamp(min=0).prod(-1).clamp(min=1e-9)
    return inter / union - (hull - union) / hull


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    """Greedy non-maximum suppression (torch): indices of the kept boxes, best first.
    One IoU matrix, then a pass in score order (a few hundred boxes per image here)."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.argsort(scores, descending=True, stable=True)
    over = (box_iou(boxes[order], boxes[order]) > iou).cpu().numpy()
    keep = _greedy(over)
    return order[torch.as_tensor(keep, dtype=torch.long, device=order.device)]


def nms_numpy(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """:func:`nms` in numpy only (the ONNX post-processing step needs no torch)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if not len(boxes):
        return np.zeros(0, np.int64)
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    b = boxes[order]
    lt = np.maximum(b[:, None, :2], b[None, :, :2])
    rb = np.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    ious = inter / np.maximum(area[:, None] + area[None, :] - inter, 1e-9)
    return order[np.asarray(_greedy(ious > iou), np.int64)]


def _greedy(over: np.ndarray) -> list[int]:
    """Rows (in score order) kept when each suppresses the later rows it overlaps."""
    removed = np.zeros(len(over), bool)
    keep = []
    for i in range(len(over)):
        if removed[i]:
            continue
        keep.append(i)
        removed |= over[i]
    return keep


def postprocess(detections: np.ndarray, conf: float = 0.25, iou: float = 0.6,
                max_det: int = MAX_DET, top_k: int = PRE_NMS_TOP_K
                ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """NMS after the served network (``model.onnx`` included), numpy only.

    ``detections`` is the graph's ``(N, A, 4 + C)`` output. Per image: every (location,
    class) pair scoring at least ``conf`` (at most ``top_k`` of them, best first), then
    class-wise greedy NMS at IoU ``iou``, at most ``max_det`` boxes. Returns per image
    ``(boxes (K, 4) xyxy in input pixels, scores (K,), class_ids (K,))``, best first.
    """
    det = np.asarray(detections, np.float32)
    if det.ndim != 3 or det.shape[-1] < 5:
        raise NasforgeError(f"detections must be (N, A, 4 + classes), got {det.shape}")
    out = []
    for d in det:
        boxes, scores = d[:, :4], d[:, 4:]
        loc, cls = np.nonzero(scores >= conf)
        s = scores[loc, cls]
        if len(s) > top_k:
            pick = np.argsort(-s, kind="stable")[:top_k]
            loc, cls, s = loc[pick], cls[pick], s[pick]
        b = boxes[loc]
        # one NMS for all classes: boxes of different classes are moved apart
        off = cls[:, None].astype(np.float64) * (float(np.abs(boxes).max(initial=0)) + 1)
        keep = nms_numpy(b + off, s, iou)[:max_det]
        out.append((b[keep].astype(np.float32), s[keep].astype(np.float32),
                    cls[keep].astype(np.int64)))
    return out


def _postprocess_torch(boxes: torch.Tensor, scores: torch.Tensor, conf: float, iou: float,
                       max_det: int = MAX_DET, top_k: int = PRE_NMS_TOP_K
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`postprocess` of one image in torch (the metrics path)."""
    loc, cls = torch.nonzero(scores >= conf, as_tuple=True)
    s = scores[loc, cls]
    if len(s) > top_k:
        pick = torch.topk(s, top_k).indices
        loc, cls, s = loc[pick], cls[pick], s[pick]
    b = boxes[loc]
    off = cls[:, None].to(b.dtype) * (float(boxes.abs().max()) + 1 if len(boxes) else 1.0)
    keep = nms(b + off, s, iou)[:max_det]
    return b[keep], s[keep], cls[keep]


# -- the loss ------------------------------------------------------------------------------


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
               gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017), summed."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    a_t = alpha * targets + (1 - alpha) * (1 - targets)
    return (a_t * ce * (1 - p_t) ** gamma).sum()


def assign(out: torch.Tensor, y: torch.Tensor, radius: float = 1.5, size_range: float = 4.0
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FCOS targets for raw outputs ``out`` and padded targets ``y`` (N, M, 5):
    ``(positive (N, A) bool, matched box (N, A, 4) xyxy pixels, matched class (N, A))``.

    A location is a candidate for an object when it lies inside the box and within
    ``radius`` strides of its centre (centre sampling), and the largest of its distances
    to the sides fits the level: up to ``size_range`` strides on the finest level, from
    half that on the others, without bound on the coarsest. The smallest candidate box
    wins."""
    const = out[0, :, -N_EXTRA:].detach()
    px, py, st, w, h = (const[:, i] for i in range(N_EXTRA))
    valid = y[..., 0] >= 0  # (N, M)
    scale = torch.stack([w[0], h[0], w[0], h[0]])
    boxes = y[..., 1:5] * scale  # (N, M, 4) pixels
    n, m = y.shape[:2]
    a = len(px)
    if m == 0:
        return (torch.zeros(n, a, dtype=torch.bool, device=out.device),
                torch.zeros(n, a, 4, device=out.device),
                torch.zeros(n, a, dtype=torch.long, device=out.device))
    bx0, by0, bx1, by1 = (boxes[..., i][:, None, :] for i in range(4))  # (N, 1, M)
    pxe, pye, ste = px[None, :, None], py[None, :, None], st[None, :, None]
    dl, dt, dr, db = pxe - bx0, pye - by0, bx1 - pxe, by1 - pye  # (N, A, M)
    inside = torch.minimum(torch.minimum(dl, dt), torch.minimum(dr, db)) > 0
    cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
    near = ((pxe - cx).abs() < radius * ste) & ((pye - cy).abs() < radius * ste)
    maxd = torch.maximum(torch.maximum(dl, dt), torch.maximum(dr, db))
    lo = torch.where(st <= st.min(), torch.zeros_like(st), st * size_range / 2)[None, :, None]
    hi = torch.where(st >= st.max(), torch.full_like(st, math.inf),
                     st * size_range)[None, :, None]
    ok = inside & near & (maxd > lo) & (maxd <= hi) & valid[:, None, :]
    area = ((bx1 - bx0) * (by1 - by0)).expand(n, a, m)
    area = torch.where(ok, area, torch.full_like(area, math.inf))
    best_area, idx = area.min(-1)  # (N, A)
    pos = torch.isfinite(best_area)
    matched = torch.gather(boxes, 1, idx[..., None].expand(n, a, 4))
    cls = torch.gather(y[..., 0], 1, idx).long()
    return pos, matched, cls


class FCOSLoss(nn.Module):
    """Focal loss on the classes (over all locations), GIoU loss on the boxes weighted by
    the centerness target and BCE on the centerness (positives only), each normalized
    by the positives as FCOS does."""

    def __init__(self, n_classes: int, radius: float = 1.5, size_range: float = 4.0) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.radius = radius
        self.size_range = size_range

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = out.float()
        pos, matched, cls = assign(out, y.float(), self.radius, self.size_range)
        logits = out[..., 5:-N_EXTRA]
        target = torch.zeros_like(logits)
        if pos.any():
            target[pos, cls[pos].clamp(0, self.n_classes - 1)] = 1.0
        n_pos = pos.sum().clamp(min=1).float()
        loss = focal_loss(logits, target) / n_pos
        if not pos.any():
            return loss + 0.0 * out[..., :5].sum()  # every output in the graph
        o = out[pos]
        px, py = o[:, -5], o[:, -4]
        mb = matched[pos]
        dl, dt, dr, db = px - mb[:, 0], py - mb[:, 1], mb[:, 2] - px, mb[:, 3] - py
        ctr_t = torch.sqrt((torch.minimum(dl, dr) / torch.maximum(dl, dr).clamp(min=1e-6)) *
                           (torch.minimum(dt, db) / torch.maximum(dt, db).clamp(min=1e-6))
                           ).clamp(0, 1)
        pred = torch.stack([px - o[:, 0], py - o[:, 1], px + o[:, 2], py + o[:, 3]], -1)
        g = (1 - giou(pred, mb)) * ctr_t
        loss = loss + g.sum() / ctr_t.sum().clamp(min=1e-6)
        loss = loss + F.binary_cross_entropy_with_logits(o[:, 4], ctr_t,
                                                         reduction="sum") / n_pos
        return loss


# -- metrics -------------------------------------------------------------------------------


def _coco_api() -> tuple[Any, Any]:
    """``(COCO, COCOeval)`` of faster-coco-eval (fast C++), else pycocotools; a missing
    library is one line saying what to install."""
    try:
        from faster_coco_eval import COCO, COCOeval_faster

        return COCO, COCOeval_faster
    except ImportError:
        pass
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    except ImportError:
        raise NasforgeError("detection metrics (mAP) need the COCO evaluation: "
                            f"{METRICS_INSTALL}") from None


def coco_map(preds: Sequence[tuple[Any, Any, Any]], targets: Sequence[tuple[Any, Any]],
             n_classes: int) -> dict[str, float]:
    """COCO mAP@[.5:.95] and mAP@.5 of per-image predictions ``(boxes xyxy, scores,
    class ids)`` against ``(boxes xyxy, class ids)`` (same pixel units), evaluated by
    faster-coco-eval or pycocotools (the reference implementation, not ours)."""
    COCO, COCOeval = _coco_api()
    images, anns, dets = [], [], []
    for i, (tb, tc) in enumerate(targets):
        tb = np.asarray(tb, np.float64).reshape(-1, 4)
        side = float(max(tb.max(initial=0), 1.0))
        images.append({"id": i + 1, "width": side, "height": side})
        for b, c in zip(tb, np.asarray(tc).reshape(-1), strict=True):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": int(c) + 1,
                         "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h,
                         "iscrowd": 0})
    for i, (pb, ps, pc) in enumerate(preds):
        pb = np.asarray(pb, np.float64).reshape(-1, 4)
        for b, s, c in zip(pb, np.asarray(ps).reshape(-1), np.asarray(pc).reshape(-1),
                           strict=True):
            dets.append({"image_id": i + 1, "category_id": int(c) + 1, "score": float(s),
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]),
                                  float(b[3] - b[1])]})
    if not anns:
        return {"map50_95": 0.0, "map50": 0.0}
    if not dets:
        return {"map50_95": 0.0, "map50": 0.0}
    gt_doc = {"images": images, "annotations": anns,
              "categories": [{"id": c + 1, "name": str(c)} for c in range(n_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):  # both libraries print as they go
        gt = COCO()
        gt.dataset = gt_doc
        gt.createIndex()
        dt = gt.loadRes(dets)
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(v) for v in ev.stats[:2]]
    return {"map50_95": max(0.0, stats[0]), "map50": max(0.0, stats[1])}


# -- predictions ---------------------------------------------------------------------------


@dataclass
class Detections:
    """One image's detections: ``boxes`` (K, 4) ``x0, y0, x1, y1`` in the original
    image's pixels, ``scores``, ``class_ids`` and their ``labels``, best first;
    :meth:`save` draws them on the image."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    labels: list[str]
    image: Any = field(default=None, repr=False)  # the original, a PIL image (for save)

    def __len__(self) -> int:
        return len(self.scores)

    def to_json(self) -> list[dict[str, Any]]:
        return [{"box": [round(float(v), 2) for v in b], "score": round(float(s), 4),
                 "class_id": int(c), "label": lab}
                for b, s, c, lab in zip(self.boxes, self.scores, self.class_ids, self.labels,
                                        strict=True)]

    def describe(self) -> str:
        """One line: ``K object(s): label score [x0, y0, x1, y1], ...``."""
        objs = ", ".join(f"{d['label']} {d['score']:.2f} "
                         f"[{', '.join(f'{v:.1f}' for v in d['box'])}]" for d in self.to_json())
        return f"{len(self)} object(s)" + (f": {objs}" if objs else "")

    def draw(self, image: Any = None) -> Any:
        """A copy of the image (the original, or ``image``) with the boxes drawn (PIL)."""
        from PIL import ImageDraw

        im = image if image is not None else self.image
        if im is None:
            raise NasforgeError("these detections have no image to draw on: pass one")
        im = im.convert("RGB").copy()
        draw = ImageDraw.Draw(im)
        for b, s, c, lab in zip(self.boxes, self.scores, self.class_ids, self.labels,
                                strict=True):
            col = _colour(int(c))
            draw.rectangle([float(v) for v in b], outline=col, width=max(1, im.width // 200))
            text = f"{lab} {s:.2f}"
            x, y = float(b[0]), max(0.0, float(b[1]) - 11)
            tw = draw.textlength(text) if hasattr(draw, "textlength") else 6 * len(text)
            draw.rectangle([x, y, x + tw + 2, y + 10], fill=col)
            draw.text((x + 1, y - 1), text, fill=(0, 0, 0) if sum(col) > 380 else
                      (255, 255, 255))
        return im

    def save(self, path: str | Path) -> Path:
        """Draw the detections on the image and write it (format from the suffix)."""
        p = Path(path).expanduser()
        p.parent.mkdir(parents=True, exist_ok=True)
        self.draw().save(p)
        return p


def _colour(c: int) -> tuple[int, int, int]:
    rng = np.random.default_rng(c * 7919 + 3)
    return tuple(int(v) for v in rng.integers(40, 256, 3))  # type: ignore[return-value]


class DetectionResults(list):  # type: ignore[type-arg]
    """One :class:`Detections` per image (a list), with the JSON of them all."""

    def to_json(self) -> list[list[dict[str, Any]]]:
        return [d.to_json() for d in self]

    def __iter__(self) -> Iterator[Detections]:
        return super().__iter__()


def unletterbox(boxes: np.ndarray, orig_hw: tuple[int, int], size: tuple[int, int]
                ) -> np.ndarray:
    """Boxes in the letterboxed input's pixels -> the original image's pixels (undo the
    scale and the padding of :func:`nasforge.data.detection.letterbox`), clipped."""
    from nasforge.data.detection import letterbox_params

    h, w = orig_hw
    side = size[0]
    s, nh, nw, top, left = letterbox_params(h, w, side)
    b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    b[:, [0, 2]] = (b[:, [0, 2]] - left) * (w / nw)
    b[:, [1, 3]] = (b[:, [1, 3]] - top) * (h / nh)
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
    return b.astype(np.float32)


# -- the task ------------------------------------------------------------------------------


@register("detection", help="boxes and classes of objects: an FPN neck and an FCOS head on "
          "the searched backbone, focal + GIoU + centerness loss, COCO mAP (the YOLO "
          "layout: --dataset data.yaml)")
class Detection(Task):
    """Anchor-free detection, FCOS (Tian et al. 2019; see the module docstring).

    The neck and head are searched with the backbone (:data:`HEAD_CHOICES`, through the
    ``with-head`` space): ``neck`` (``fpn`` or ``pan``), ``neck_width``, ``neck_depth``
    (3x3 convs per level after the merge), ``neck_block`` (``conv`` or depthwise-separable
    ``dw``), ``n_levels`` (pyramid levels), ``head_tower`` (``decoupled`` towers or one
    ``shared``), ``head_width``, ``head_depth`` (convs per tower) and ``resolution`` (the
    input resized by this factor inside the network). Each is also an option: given, it is
    fixed (``fpn_width`` / ``fpn_depth`` are the old names of the neck's); ``search_head``
    false fixes them all at their defaults. Other options: ``min_stride`` (the finest
    pyramid level, 8), ``radius`` (centre sampling in strides, 1.5), ``size_range`` (a
    level's object size range, in strides, 4). The default objective is ``val_map50_95``."""

    primary = "map50_95"
    #: measured (benchmarks/results/detection.md): trials of 1/3 to 1.1 epochs all score
    #: val mAP 0.003-0.009, a ranking by noise, and twice the search picked a weaker
    #: network than the first known-good design; where ranking starts was not measured
    #: (3 epochs is a bound above what failed, not a measured threshold)
    min_ranking_epochs = 3.0
    mode = "max"
    metric_names = ("map50_95", "map50", "loss")
    stratify = False
    output_names = ("detections",)
    image_fit = "letterbox"
    spatial = True
    # a few hundred large images: small batches give more steps in the same CPU time;
    # label smoothing is a classification recipe (the focal loss has its own weighting)
    train_defaults: ClassVar[dict[str, Any]] = {"batch_size": 32, "label_smoothing": 0.0}

    def __init__(self, classes: list[str] | None = None, n_classes: int = 0,
                 neck: str | None = None, neck_width: int | None = None,
                 neck_depth: int | None = None, neck_block: str | None = None,
                 n_levels: int | None = None, head_tower: str | None = None,
                 head_width: int | None = None, head_depth: int | None = None,
                 resolution: float | None = None, min_stride: int = 8, radius: float = 1.5,
                 size_range: float = 4.0, search_head: bool = True,
                 fpn_width: int | None = None, fpn_depth: int | None = None) -> None:
        self.classes = [str(c) for c in (classes or [])]
        self.n_classes = int(n_classes or len(self.classes))
        # fpn_width / fpn_depth: the names before the neck could be a PAN (old model dirs)
        neck_width = fpn_width if neck_width is None else neck_width
        neck_depth = fpn_depth if neck_depth is None else neck_depth
        given = {"neck": neck, "neck_width": neck_width, "neck_depth": neck_depth,
                 "neck_block": neck_block, "n_levels": n_levels, "head_tower": head_tower,
                 "head_width": head_width, "head_depth": head_depth,
                 "resolution": resolution}
        self.fixed = {k: _check_option(k, v) for k, v in given.items() if v is not None}
        if not isinstance(min_stride, int) or isinstance(min_stride, bool) or \
                not 1 <= min_stride <= 64:
            raise NasforgeError(f"detection: min_stride must be an integer from 1 to 64, got "
                                f"{min_stride!r}")
        for name, f in (("radius", radius), ("size_range", size_range)):
            if isinstance(f, bool) or not isinstance(f, int | float) or not \
                    (math.isfinite(f) and f > 0):
                raise NasforgeError(f"detection: {name} must be a positive number, got {f!r}")
        if not isinstance(search_head, bool):
            raise NasforgeError(f"detection: search_head must be true or false, got "
                                f"{search_head!r}")
        self.search_head = search_head
        self.min_stride = min_stride
        self.radius, self.size_range = float(radius), float(size_range)

    def options(self) -> dict[str, Any]:
        return {**self.fixed, "min_stride": self.min_stride, "radius": self.radius,
                "size_range": self.size_range, "search_head": self.search_head}

    def arch_choices(self) -> tuple[Choice, ...]:
        """The neck and head choices (:data:`HEAD_CHOICES`), a fixed option as its only
        value; none when ``search_head`` is off or every choice is fixed."""
        out = tuple(Choice(k, (self.fixed[k],) if k in self.fixed else opts)
                    for k, opts in HEAD_CHOICES.items())
        return out if self.search_head and any(len(c.options) > 1 for c in out) else ()

    @classmethod
    def arch_active(cls, name: str, values: Mapping[str, Any]) -> bool:
        # the block type shapes only the FPN's output convs and PAN's bottom-up path
        if name == "neck_block":
            return not (values.get("neck", "fpn") == "fpn" and values.get("neck_depth", 1) == 0)
        return True

    def head_config(self, arch: Any = None) -> dict[str, Any]:
        """The neck and head of ``arch``: its head choices where it has them (an arch of
        the ``with-head`` space), else the fixed options, else the defaults."""
        cfg = {k: self.fixed.get(k, opts[0]) for k, opts in HEAD_CHOICES.items()}
        if isinstance(arch, Arch):
            cfg.update({k: v for k, v in arch.items if k in cfg})
        return cfg

    def fit(self, y_train: np.ndarray) -> Detection:
        _coco_api()  # a missing evaluator fails here, before any training, in one line
        if not self.n_classes:
            y = np.asarray(y_train)
            self.n_classes = int(y[..., 0].max()) + 1 if y.size else 0
        return self

    def n_outputs(self) -> int:
        if self.n_classes < 1:
            raise NasforgeError("detection needs at least one class")
        return self.n_classes

    def raw_width(self) -> int:
        return 5 + self.n_outputs() + N_EXTRA

    def build_network(self, space: Any, arch: Any, input_shape: tuple[int, ...],
                      n_outputs: int | None = None) -> nn.Module:
        """The space's backbone for ``arch`` with the neck and FCOS head of
        :meth:`head_config`: pyramid levels from the first backbone level of stride
        ``min_stride`` or more, ``n_levels`` of them (stride-2 convs added above the
        backbone's coarsest level, or below it when the backbone stays finer)."""
        if not getattr(space, "has_backbone", lambda: False)():
            space.build_backbone(arch, input_shape)  # raises, naming the spaces that can
        if len(input_shape) != 3:
            raise NasforgeError(f"detection takes images (C, H, W), got input {input_shape}")
        cfg = self.head_config(arch)
        shape = (int(input_shape[0]), *resized(input_shape[1:], cfg["resolution"]))
        backbone = space.build_backbone(arch, shape)
        levels = list(backbone.levels)
        side = min(shape[1], shape[2])
        use = [i for i, lv in enumerate(levels) if lv.stride >= self.min_stride]
        use = use[:cfg["n_levels"]]
        down = 0
        if not use:  # the backbone stays too fine: halve its coarsest level in the neck
            use = [len(levels) - 1]
            s = levels[-1].stride
            while s < self.min_stride and side / (s * 2) >= 1:
                s, down = s * 2, down + 1
            strides = [s]
        else:
            strides = [levels[i].stride for i in use]
        extra = 0
        while len(strides) + extra < cfg["n_levels"] and \
                side / (strides[-1] * 2 ** (extra + 1)) >= 1:
            extra += 1
        neck = FPN([levels[i].channels for i in use], cfg["neck_width"], cfg["neck_depth"],
                   down=down, extra=extra, pan=cfg["neck"] == "pan", block=cfg["neck_block"])
        head = FCOSHead(cfg["head_width"], n_outputs or self.n_outputs(), cfg["head_depth"],
                        len(use) + extra, in_width=cfg["neck_width"],
                        decoupled=cfg["head_tower"] == "decoupled")
        return Detector(backbone, neck, head, use, resolution=cfg["resolution"])

    def encode(self, y: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(y, np.float32) if not torch.is_tensor(y) else y).float()
        if t.dim() != 3 or t.shape[-1] != 5:
            raise NasforgeError(f"detection targets must be (N, M, 5) rows 'class x0 y0 x1 "
                                f"y1', got shape {tuple(t.shape)}")
        return t

    def flip_targets(self, y: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
        """Mirror the boxes of flipped images: ``x0, x1 -> 1 - x1, 1 - x0``."""
        f = flipped.to(y.device)[:, None] & (y[..., 0] >= 0)
        out = y.clone()
        out[..., 1] = torch.where(f, 1 - y[..., 3], y[..., 1])
        out[..., 3] = torch.where(f, 1 - y[..., 1], y[..., 3])
        return out

    def loss(self, label_smoothing: float = 0.0) -> nn.Module:
        return FCOSLoss(self.n_outputs(), self.radius, self.size_range)

    def metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        out = out.float()
        loss = 0.0
        for i in range(0, len(out), 256):
            loss += float(self.loss()(out[i:i + 256], y[i:i + 256])) * len(out[i:i + 256])
        boxes, scores = decode_raw(out)
        w, h = float(out[0, 0, -2]), float(out[0, 0, -1])
        scale = torch.tensor([w, h, w, h])
        preds, targets = [], []
        with torch.no_grad():
            for i in range(len(out)):
                b, s, c = _postprocess_torch(boxes[i], scores[i], EVAL_CONF, 0.6)
                preds.append((b.numpy(), s.numpy(), c.numpy()))
                keep = y[i, :, 0] >= 0
                targets.append(((y[i, keep, 1:5] * scale).numpy(), y[i, keep, 0].long().numpy()))
        return {**coco_map(preds, targets, self.n_outputs()), "loss": loss / max(len(out), 1)}

    def serve(self, net: nn.Module) -> nn.Module:
        return DecodeBoxes(net)

    def decode(self, out: np.ndarray, names: list[str] | None = None,
               sizes: Sequence[tuple[int, int]] | None = None,
               input_shape: Sequence[int] | None = None, images: Sequence[Any] | None = None,
               conf: float = 0.25, iou: float = 0.6, max_det: int = MAX_DET
               ) -> DetectionResults:
        """Served outputs -> per image :class:`Detections`, in the original pixels when
        ``sizes`` (each image's height, width) and ``input_shape`` are given."""
        classes = list(names or self.classes or [str(i) for i in range(self.n_outputs())])
        res = DetectionResults()
        for i, (b, s, c) in enumerate(postprocess(out, conf, iou, max_det)):
            if sizes is not None and input_shape is not None:
                b = unletterbox(b, sizes[i], (int(input_shape[1]), int(input_shape[2])))
            res.append(Detections(b, s, c, [classes[int(k)] if int(k) < len(classes)
                                            else str(int(k)) for k in c],
                                  images[i] if images is not None else None))
        return res

    def state(self) -> dict[str, Any]:
        return {"task": self.name, "classes": self.classes, "n_classes": self.n_classes,
                **self.options()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Detection:
        try:
            keys = (*HEAD_CHOICES, "fpn_width", "fpn_depth", "min_stride", "radius",
                    "size_range", "search_head")
            opts = {k: state[k] for k in keys if k in state}
            if "fpn_width" in opts and "head_width" not in opts:  # before the head had its own
                opts["head_width"] = opts["fpn_width"]
            return cls(classes=[str(c) for c in state.get("classes") or []],
                       n_classes=int(state.get("n_classes") or 0), **opts)
        except (TypeError, ValueError, NasforgeError) as e:
            raise RunDirError(f"the detection task's state is corrupt: {e}") from None


#: the searched neck and head of a detector (:meth:`Detection.arch_choices`): each
#: option's first value is the default, the hand design of benchmarks/results/detection.md
#: (FPN of 64 channels, one conv per level, three levels, decoupled towers of two convs)
HEAD_CHOICES: dict[str, tuple[Value, ...]] = {
    "neck": ("fpn", "pan"),
    "neck_width": (64, 32, 48, 96),
    "neck_depth": (1, 0, 2),
    "neck_block": ("conv", "dw"),
    "n_levels": (3, 2, 4),
    "head_tower": ("decoupled", "shared"),
    "head_width": (64, 32, 48, 96),
    "head_depth": (2, 1, 3),
    "resolution": (1.0, 0.75, 0.5),
}
#: what a user may fix each of to (task options), beyond the searched values
_OPTION_RANGES: dict[str, Any] = {
    "neck": ("fpn", "pan"), "neck_block": ("conv", "dw"), "head_tower": ("decoupled", "shared"),
    "neck_width": (8, 512), "head_width": (8, 512), "neck_depth": (0, 4),
    "head_depth": (0, 6), "n_levels": (1, 6), "resolution": (0.25, 2.0),
}


def _check_option(name: str, v: Any) -> Value:
    """A fixed neck/head option, validated, else the one-line error."""
    allowed = _OPTION_RANGES[name]
    if isinstance(allowed[0], str):
        if v not in allowed:
            raise NasforgeError(f"detection: {name} must be one of {', '.join(allowed)}, "
                                f"got {v!r}")
        return str(v)
    lo, hi = allowed
    if name == "resolution":
        if isinstance(v, bool) or not isinstance(v, int | float) or not (
                math.isfinite(v) and lo <= v <= hi):
            raise NasforgeError(f"detection: resolution must be a number from {lo} to {hi} "
                                f"(a factor of the input size), got {v!r}")
        return float(v)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise NasforgeError(f"detection: {name} must be an integer from {lo} to {hi}, "
                            f"got {v!r}")
    return int(v)
