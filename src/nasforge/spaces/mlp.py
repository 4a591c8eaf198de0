"""The ``mlp`` space: multi-layer perceptrons for tabular data (input ``(F,)`` vectors).

An architecture is ``layers`` hidden blocks ``linear -> norm -> activation -> dropout``
with a width per block (``w1`` ... ``wK``; widths of blocks past ``layers`` are inactive
and reset to the first option), one activation, one normalization (``none``, ``batch``,
``layer``), one dropout rate and an optional residual connection around every block after
the first (with a bias-free linear projection when the widths differ): with ``residual`` and
normalization the network is the ResNet-MLP of Gorishniy et al. (2021), a strong tabular
baseline. The head is one linear layer to the task's outputs.

As a :class:`Backbone` the network has one level: the last block's ``(N, width)`` vector
(``Level(channels=width, stride=1)``: a vector has no resolution to reduce).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from nasforge.errors import NasforgeError
from nasforge.spaces import register
from nasforge.spaces.base import Arch, Backbone, Choice, Level, SearchSpace, Value, no_head

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU,
                                           "elu": nn.ELU, "tanh": nn.Tanh}
NORMS = ("none", "batch", "layer")
MAX_LAYERS = 64
MAX_WIDTH = 65536
MAX_OPTIONS = 1024

#: hand designs that strategies try first: a plain 2 x 256 MLP with batch norm (what a
#: practitioner writes first), the ResNet-MLP with layer norm, and a small one that trains
#: fast on small tables (where the big ones overfit)
KNOWN_GOOD = (
    {"layers": 2, "widths": (256, 256), "act": "relu", "norm": "batch", "dropout": 0.1,
     "residual": False},
    {"layers": 3, "widths": (256, 256, 256), "act": "silu", "norm": "layer", "dropout": 0.2,
     "residual": True},
    {"layers": 1, "widths": (128,), "act": "relu", "norm": "none", "dropout": 0.0,
     "residual": False},
)


def _options(name: str, value: Any) -> tuple[Any, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise NasforgeError(f"mlp: {name} must be a list of options, got {value!r:.100}")
    opts = tuple(itertools.islice(value, MAX_OPTIONS + 1))
    if not opts or len(opts) > MAX_OPTIONS:
        raise NasforgeError(f"mlp: {name} needs 1 to {MAX_OPTIONS} options")
    if len(set(opts)) != len(opts):
        raise NasforgeError(f"mlp: {name} has duplicate options: {list(opts)[:20]}")
    return opts


class MLPNet(Backbone):
    """The blocks (``blocks.i``: ``linear``, ``norm``; ``proj`` for a residual that changes
    width) and, unless built as a backbone, the ``head``."""

    def __init__(self, in_features: int, widths: Sequence[int], act: str, norm: str,
                 dropout: float, residual: bool, n_out: int | None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList()
        self.residual = residual
        prev = in_features
        for i, w in enumerate(widths):
            blk = nn.Module()
            blk.linear = nn.Linear(prev, w)
            blk.norm = (nn.BatchNorm1d(w) if norm == "batch" else nn.LayerNorm(w)
                        if norm == "layer" else nn.Identity())
            blk.act = ACTIVATIONS[act]()
            blk.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
            blk.proj = nn.Linear(prev, w, bias=False) if residual and i > 0 and prev != w \
                else nn.Identity()
            self.blocks.append(blk)
            prev = w
        self.width = prev
        self.levels = [Level(channels=prev, stride=1)]
        self.head = nn.Linear(prev, n_out) if n_out is not None else None

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for i, blk in enumerate(self.blocks):
            h = blk.drop(blk.act(blk.norm(blk.linear(x))))
            x = h + blk.proj(x) if self.residual and i > 0 else h
        return x

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self._features(x)]

    def forward_head(self, features: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if self.head is None:
            raise no_head(self)
        f = features if isinstance(features, torch.Tensor) else features[-1]
        return self.head(f)

    def forward(self, x: torch.Tensor) -> Any:
        if self.head is None:
            return self.forward_features(x)
        return self.head(self._features(x))


@register("mlp")
class MLPSpace(SearchSpace):
    """MLPs for tables: depth, width per layer, activation, normalization, dropout, residual."""

    name = "mlp"
    input_kind = "tabular"
    default_for = "tabular"
    #: AdamW (SGD at the image default lr 0.05 diverged on standardized regression targets
    #: here) and enough epochs that a trial on a small table sees more than a few batches
    train_defaults = {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 1e-4, "epochs": 30}
    #: measured on diabetes (30 s job): a 15 s final training on 354 rows (thousands of
    #: epochs) overfit to test RMSE 71.8 where the trials validated at 58
    final_epochs_factor = 2.0

    def __init__(
        self,
        max_layers: int = 4,
        min_layers: int = 1,
        widths: Sequence[int] = (32, 64, 128, 256, 512),
        activations: Sequence[str] = ("relu", "gelu", "silu"),
        norms: Sequence[str] = NORMS,
        dropouts: Sequence[float] = (0.0, 0.1, 0.2, 0.3),
        residual: Sequence[bool] = (False, True),
    ) -> None:
        for n, v, lo, hi in (("max_layers", max_layers, 1, MAX_LAYERS),
                             ("min_layers", min_layers, 1, MAX_LAYERS)):
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise NasforgeError(f"mlp: {n} must be an integer from {lo} to {hi}, "
                                    f"got {v!r:.50}")
        if min_layers > max_layers:
            raise NasforgeError(f"mlp: min_layers ({min_layers}) must not exceed max_layers "
                                f"({max_layers})")
        self.max_layers, self.min_layers = max_layers, min_layers
        self.widths = _options("widths", widths)
        for w in self.widths:
            if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= MAX_WIDTH:
                raise NasforgeError(f"mlp: widths must be integers from 1 to {MAX_WIDTH}, "
                                    f"got {w!r:.50}")
        self.activations = _options("activations", activations)
        self.norms = _options("norms", norms)
        for what, opts, valid in (("activation", self.activations, list(ACTIVATIONS)),
                                  ("norm", self.norms, list(NORMS))):
            for o in opts:
                if o not in valid:
                    raise NasforgeError(f"mlp: unknown {what} {o!r:.50}; choose from {valid}")
        self.dropouts = tuple(float(p) for p in _options("dropouts", dropouts))
        if not all(0.0 <= p < 1.0 for p in self.dropouts) or \
                len(set(self.dropouts)) != len(self.dropouts):
            raise NasforgeError(f"mlp: dropouts must be distinct numbers in [0, 1), got "
                                f"{list(dropouts)[:20]}")
        self.residual = _options("residual", residual)
        if not all(isinstance(r, bool) for r in self.residual):
            raise NasforgeError(f"mlp: residual must be booleans, got {list(residual)}")

    def config(self) -> dict[str, Any]:
        return {"max_layers": self.max_layers, "min_layers": self.min_layers,
                "widths": list(self.widths), "activations": list(self.activations),
                "norms": list(self.norms), "dropouts": list(self.dropouts),
                "residual": list(self.residual)}

    def choices(self) -> tuple[Choice, ...]:
        return (
            Choice("layers", tuple(range(self.min_layers, self.max_layers + 1))),
            *(Choice(f"w{i}", self.widths) for i in range(1, self.max_layers + 1)),
            Choice("act", self.activations),
            Choice("norm", self.norms),
            Choice("dropout", self.dropouts),
            Choice("residual", self.residual),
        )

    def is_active(self, name: str, values: Mapping[str, Value]) -> bool:
        layers = int(values["layers"])
        if name.startswith("w") and name[1:].isdigit():
            return int(name[1:]) <= layers
        if name == "residual":
            return layers >= 2  # a residual wraps the blocks after the first
        return True

    def canonicalize(self, values: dict[str, Value]) -> dict[str, Value]:
        first = {c.name: c.options[0] for c in self.choices()}
        return {k: (v if self.is_active(k, values) else first[k]) for k, v in values.items()}

    def known_good(self) -> list[Arch]:
        out = []
        for d in KNOWN_GOOD:
            widths = list(d["widths"])  # type: ignore[arg-type]
            layers = int(d["layers"])  # type: ignore[call-overload]
            if not self.min_layers <= layers <= self.max_layers:
                continue
            vals: dict[str, Value] = {"layers": layers}
            for i in range(1, self.max_layers + 1):
                want = widths[i - 1] if i <= layers else self.widths[0]
                vals[f"w{i}"] = min(self.widths, key=lambda w, t=want: abs(w - t))
            for k, opts in (("act", self.activations), ("norm", self.norms),
                            ("dropout", self.dropouts), ("residual", self.residual)):
                vals[k] = d[k] if d[k] in opts else opts[0]  # type: ignore[assignment]
            out.append(self.make(vals))
        return list(dict.fromkeys(out))

    # -- networks -------------------------------------------------------------------------
    def _net(self, arch: Arch, input_shape: Sequence[int], n_out: int | None) -> MLPNet:
        if len(tuple(input_shape)) != 1:
            raise NasforgeError(f"mlp builds networks for (F,) feature vectors, got input "
                                f"shape {tuple(input_shape)}; use it on tabular data")
        d = arch.as_dict()
        layers = int(d["layers"])
        widths = [int(d[f"w{i}"]) for i in range(1, layers + 1)]  # type: ignore[arg-type]
        return MLPNet(int(input_shape[0]), widths, str(d["act"]), str(d["norm"]),
                      float(d["dropout"]), bool(d["residual"]), n_out)  # type: ignore[arg-type]

    def build(self, arch: Arch, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        return self._net(arch, input_shape, int(num_classes))

    def build_backbone(self, arch: Arch, input_shape: Sequence[int]) -> Backbone:
        return self._net(arch, input_shape, None)
