"""The task interface: targets, head width, loss, metrics, serving and predictions."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from nasforge.registry import Registry

registry: Registry[Task] = Registry("task")
register = registry.register


def resized(size: Any, resolution: float) -> tuple[int, ...]:
    """An image side (or sides) times a network's input ``resolution`` choice, rounded,
    at least 8 pixels a side (what detection's and segmentation's in-network resize use)."""
    return tuple(max(8, int(round(int(s) * float(resolution)))) for s in size)


class Task(ABC):
    """What a network predicts and how it is judged.

    A task is *fitted* to the training targets (:meth:`fit`: e.g. the standardization
    statistics of a regression target) so that trials, the final model and ``predict``
    all see the same scale; :meth:`state` / :meth:`from_state` carry that fit into a model
    directory. Metric names are returned without the split prefix (``"accuracy"``); the
    caller adds ``val_`` or ``test_``.
    """

    name: ClassVar[str] = "task"
    #: the metric a search optimizes by default, without prefix, and its direction
    primary: ClassVar[str] = "accuracy"
    mode: ClassVar[str] = "max"
    #: every metric :meth:`metrics` reports (without prefix), for estimators' declarations
    metric_names: ClassVar[tuple[str, ...]] = ()
    #: split and subsample so each class keeps its share (classification) or at random
    stratify: ClassVar[bool] = True
    #: the names of the ONNX graph's outputs
    output_names: ClassVar[tuple[str, ...]] = ("output",)
    #: a time-budgeted job searches only when its longest trial sees at least this many
    #: epochs (:data:`nasforge.run.budget.MIN_RANKING_EPOCHS`); 0: any trial length ranks
    #: (classification: 1-epoch Fashion-MNIST trials ranked with Spearman 0.78)
    min_ranking_epochs: ClassVar[float] = 0.0
    #: how ``predict`` fits an image to the input size: ``"resize"`` (stretch, as the
    #: image-folder loader does) or ``"letterbox"`` (aspect kept, padded, as the YOLO
    #: layout is read); a letterboxing task's :meth:`decode` is given every image's
    #: original size (``sizes``) so it answers in the original pixels
    image_fit: ClassVar[str] = "resize"
    #: the axis of the raw output whose width is :meth:`raw_width` (segmentation: the
    #: class axis of ``(N, K, H, W)``)
    output_axis: ClassVar[int] = -1
    #: training options this task wants when the user gives none (given to an estimator
    #: that takes them, before the time budget's recipe): e.g. detection's small batches
    train_defaults: ClassVar[dict[str, Any]] = {}
    #: whether the targets move with the image (boxes, masks): a horizontal flip must
    #: flip them too (:meth:`flip_targets`), and flip test-time augmentation (averaging
    #: the outputs of an image and its mirror) does not apply
    spatial: ClassVar[bool] = False

    @property
    def objective(self) -> str:
        """The default objective, e.g. ``val_accuracy``."""
        return f"val_{self.primary}"

    # -- targets ---------------------------------------------------------------------------
    def fit(self, y_train: np.ndarray) -> Task:  # noqa: B027 - optional hook
        """Learn what the task needs from the training targets; returns ``self``."""
        return self

    @abstractmethod
    def n_outputs(self) -> int:
        """The width of the head's output."""

    def raw_width(self) -> int:
        """The last dimension of the network's raw output (:meth:`n_outputs` unless the
        task's head adds more, e.g. box regression next to the class scores)."""
        return self.n_outputs()

    def build_network(self, space: Any, arch: Any, input_shape: tuple[int, ...],
                      n_outputs: int | None = None) -> nn.Module:
        """The trainable network for ``arch`` of ``space``: by default the space's own
        network with a head of :meth:`n_outputs` (``n_outputs`` overrides it); a task with
        its own head (detection's neck and box head) attaches it to
        ``space.build_backbone`` instead. Every trial, the final model and ``load`` build
        through here, so they all get the same network."""
        return space.build(arch, tuple(input_shape),
                           self.n_outputs() if n_outputs is None else int(n_outputs))

    def arch_choices(self) -> tuple[Any, ...]:
        """Architecture decisions of this task's own head (a detection neck's width, a
        decoder's depth): :class:`~nasforge.spaces.Choice` objects the run adds after the
        backbone space's (:class:`~nasforge.spaces.headed.WithHead`), so strategies search
        them with the backbone. The first option of each is the task's default, what the
        known-good designs get; an option the user fixed is a one-option choice. Empty
        (the default): the space's network is the whole architecture."""
        return ()

    @classmethod
    def arch_active(cls, name: str, values: Mapping[str, Any]) -> bool:
        """Whether head choice ``name`` changes the network given the other ``values``
        (an inactive one is reset to its first option, as a space's are)."""
        return True

    def flip_targets(self, y: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
        """Targets ``y`` of a batch whose images ``flipped`` (bool per example) were
        mirrored left-right; unchanged unless the task is :attr:`spatial`."""
        return y

    @abstractmethod
    def encode(self, y: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Targets as the loss wants them (class indices, standardized floats)."""

    # -- training and scoring -------------------------------------------------------------
    @abstractmethod
    def loss(self, label_smoothing: float = 0.0) -> nn.Module:
        """The training loss on (network output, :meth:`encode`-d targets)."""

    @abstractmethod
    def metrics(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Scores of the raw outputs ``out`` for encoded targets ``y`` over a whole split."""

    # -- serving ---------------------------------------------------------------------------
    def serve(self, net: nn.Module) -> nn.Module:
        """The network with the task's post-processing appended (what ONNX exports)."""
        return net

    @abstractmethod
    def decode(self, out: np.ndarray, names: list[str] | None = None) -> Any:
        """What ``predict`` returns for served outputs ``out`` (one row per input)."""

    # -- persistence -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON state written to ``arch.json`` (the fit included)."""
        return {"task": self.name}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Task:
        """Rebuild a fitted task from :meth:`state` (untrusted: validate)."""
        return cls()
