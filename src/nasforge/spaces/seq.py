"""The ``seq`` space: chains of temporal blocks for time series (input kind ``"sequence"``).

An architecture is ``n_blocks`` blocks, a readout and a dropout before the linear head.
Each block is a temporal convolution (kernel, dilation), a depthwise-separable temporal
convolution, an LSTM or GRU (bidirectional or not), a transformer encoder layer (heads, FFN
ratio, pre/post norm) or a max / average pool that halves the length; with a width,
normalization (batch, layer, none), activation, a residual connection and dropout where
they apply. The readout is the mean or max over the real steps, attention pooling or the
last real step. Inputs are ``(1 + C, L)``: channel 0 is the padding mask
(:mod:`nasforge.data.sequences`), which every block and readout respects.

Inactive choices (blocks past ``n_blocks``, a pool's kernel, an LSTM's heads, ...) are
reset to their first option, so equal networks are equal archs; the string form reads
like the network, ``conv-k8-d1-w128-bn-relu|maxpool|gru-w64-bi|attention|drop0.1``.
The FCN of Wang et al. (2017; conv 128-k8, 256-k5, 128-k3, each with batch norm and ReLU,
global average pooling) is a point of the space and the first of
:meth:`SeqSpace.known_good`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn as nn

from nasforge.errors import ArchParseError, NasforgeError
from nasforge.spaces import register
from nasforge.spaces.base import Arch, Backbone, Choice, SearchSpace, Value
from nasforge.spaces.seq_net import (
    ACTIVATIONS,
    BLOCK_TYPES,
    CONV_TYPES,
    NORMS,
    POOL_TYPES,
    READOUTS,
    RNN_TYPES,
    SeqBlock,
    SeqNet,
    block_module,
)

FIELDS = ("type", "kernel", "dilation", "width", "bidir", "heads", "ffn", "prenorm", "norm",
          "act", "skip", "drop")
#: which block types use a field (``type`` and ``drop``: all)
_USES: dict[str, frozenset[str]] = {
    "kernel": CONV_TYPES, "dilation": CONV_TYPES, "norm": CONV_TYPES,
    "width": CONV_TYPES | RNN_TYPES | {"transformer"},
    "bidir": RNN_TYPES, "skip": CONV_TYPES | RNN_TYPES,
    "heads": frozenset({"transformer"}), "ffn": frozenset({"transformer"}),
    "prenorm": frozenset({"transformer"}), "act": CONV_TYPES | {"transformer"},
}
_NORM_TOK = {"batch": "bn", "layer": "ln", "none": "nonorm"}
_TOK_NORM = {v: k for k, v in _NORM_TOK.items()}
_NUM = re.compile(r"([kdwhf])([0-9]{1,6})")
_NUM_FIELD = {"k": "kernel", "d": "dilation", "w": "width", "h": "heads", "f": "ffn"}
_DROP = re.compile(r"drop([0-9]{1,3}(?:\.[0-9]{1,8})?)")
MAX_BLOCKS = 32
MAX_WIDTH = 4096

#: hand designs tried first (block lists; unspecified fields at the space's first option).
#: FCN (Wang et al. 2017) first, then a half-width FCN (4x cheaper per step on a CPU, so
#: more epochs in a short budget), a residual dilated conv stack, a conv + bidirectional GRU
#: and a conv + transformer design.
KNOWN_GOOD: tuple[tuple[str, tuple[dict[str, Value], ...]], ...] = (
    ("mean", ({"type": "conv", "kernel": 8, "width": 128}, {"type": "conv", "kernel": 5,
              "width": 256}, {"type": "conv", "kernel": 3, "width": 128})),
    ("mean", ({"type": "conv", "kernel": 8, "width": 64}, {"type": "conv", "kernel": 5,
              "width": 128}, {"type": "conv", "kernel": 3, "width": 64})),
    ("mean", ({"type": "conv", "kernel": 7, "width": 64}, {"type": "conv", "kernel": 5,
              "dilation": 2, "width": 64, "skip": True},
              {"type": "conv", "kernel": 3, "dilation": 4, "width": 64, "skip": True})),
    ("attention", ({"type": "conv", "kernel": 5, "width": 64}, {"type": "maxpool"},
                   {"type": "gru", "width": 64, "bidir": True})),
    ("mean", ({"type": "conv", "kernel": 5, "width": 64}, {"type": "maxpool"},
              {"type": "transformer", "width": 64, "heads": 4, "ffn": 2, "act": "gelu"})),
)


def _opts(name: str, value: Any, check: Any) -> tuple[Any, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise NasforgeError(f"seq: {name} must be a list of options, got {value!r:.100}")
    opts = tuple(value)
    if not opts or len(opts) > 256 or len(set(opts)) != len(opts):
        raise NasforgeError(f"seq: {name} needs 1-256 distinct options, got {list(opts)[:20]}")
    for o in opts:
        if not check(o):
            raise NasforgeError(f"seq: bad option {o!r:.50} in {name}")
    return opts


def _int(lo: int, hi: int) -> Any:
    return lambda o: isinstance(o, int) and not isinstance(o, bool) and lo <= o <= hi


@register("seq", help="time series: temporal convs, LSTM/GRU, transformer layers, pools; "
          "mean/max/attention/last readout (FCN is a point)")
class SeqSpace(SearchSpace):
    """Chain of temporal blocks over (mask + channels, length) inputs (module docstring)."""

    name = "seq"
    input_kind = "sequence"
    default_for = "sequence"

    def __init__(
        self,
        max_blocks: int = 5,
        min_blocks: int = 1,
        block_types: Sequence[str] = BLOCK_TYPES,
        kernels: Sequence[int] = (3, 5, 7, 8, 9),
        dilations: Sequence[int] = (1, 2, 4),
        widths: Sequence[int] = (32, 64, 128, 256),
        heads: Sequence[int] = (2, 4, 8),
        ffn_ratios: Sequence[int] = (2, 4, 1),
        norms: Sequence[str] = NORMS,
        activations: Sequence[str] = ("relu", "gelu", "silu"),
        block_dropouts: Sequence[float] = (0.0, 0.1, 0.2),
        readouts: Sequence[str] = READOUTS,
        dropouts: Sequence[float] = (0.0, 0.1, 0.25, 0.5),
    ) -> None:
        if not _int(1, MAX_BLOCKS)(max_blocks) or not _int(0, max_blocks)(min_blocks):
            raise NasforgeError(f"seq: need 0 <= min_blocks <= max_blocks <= {MAX_BLOCKS}, "
                                f"got {min_blocks!r:.30} and {max_blocks!r:.30}")
        self.max_blocks, self.min_blocks = int(max_blocks), int(min_blocks)
        self.block_types = _opts("block_types", block_types, lambda o: o in BLOCK_TYPES)
        self.kernels = _opts("kernels", kernels, _int(1, 64))
        self.dilations = _opts("dilations", dilations, _int(1, 64))
        self.widths = _opts("widths", widths, lambda o: _int(2, MAX_WIDTH)(o) and o % 2 == 0)
        self.heads = _opts("heads", heads, _int(1, 64))
        bad = [(w, h) for w in self.widths for h in self.heads if w % h]
        if bad and "transformer" in self.block_types:
            raise NasforgeError(f"seq: every width must divide by every head count, not "
                                f"{bad[:3]}")
        self.ffn_ratios = _opts("ffn_ratios", ffn_ratios, _int(1, 16))
        self.norms = _opts("norms", norms, lambda o: o in NORMS)
        self.activations = _opts("activations", activations, lambda o: o in ACTIVATIONS)
        prob = lambda o: isinstance(o, int | float) and not isinstance(o, bool) \
            and 0 <= o < 1  # noqa: E731
        self.block_dropouts = tuple(float(p) for p in _opts("block_dropouts",
                                                             block_dropouts, prob))
        self.readouts = _opts("readouts", readouts, lambda o: o in READOUTS)
        self.dropouts = tuple(float(p) for p in _opts("dropouts", dropouts, prob))
        field_opts: dict[str, tuple[Value, ...]] = {
            "type": self.block_types, "kernel": self.kernels, "dilation": self.dilations,
            "width": self.widths, "bidir": (False, True), "heads": self.heads,
            "ffn": self.ffn_ratios, "prenorm": (True, False), "norm": self.norms,
            "act": self.activations, "skip": (False, True), "drop": self.block_dropouts,
        }
        cs = [Choice("n_blocks", tuple(range(self.min_blocks, self.max_blocks + 1)))]
        self._block_of: dict[str, tuple[int, str]] = {}
        for i in range(self.max_blocks):
            for f in FIELDS:
                cs.append(Choice(f"b{i}_{f}", field_opts[f]))
                self._block_of[f"b{i}_{f}"] = (i, f)
        cs += [Choice("readout", self.readouts), Choice("dropout", self.dropouts)]
        self._choices = tuple(cs)
        self._first = {c.name: c.options[0] for c in cs}

    def config(self) -> dict[str, Any]:
        return {
            "max_blocks": self.max_blocks, "min_blocks": self.min_blocks,
            "block_types": list(self.block_types), "kernels": list(self.kernels),
            "dilations": list(self.dilations), "widths": list(self.widths),
            "heads": list(self.heads), "ffn_ratios": list(self.ffn_ratios),
            "norms": list(self.norms), "activations": list(self.activations),
            "block_dropouts": list(self.block_dropouts), "readouts": list(self.readouts),
            "dropouts": list(self.dropouts),
        }

    def choices(self) -> tuple[Choice, ...]:
        return self._choices

    def is_active(self, name: str, values: Mapping[str, Value]) -> bool:
        pos = self._block_of.get(name)
        if pos is None:
            return True
        i, f = pos
        if i >= int(values["n_blocks"]):
            return False
        uses = _USES.get(f)
        return uses is None or values[f"b{i}_type"] in uses

    def canonicalize(self, values: dict[str, Value]) -> dict[str, Value]:
        return {k: (v if self.is_active(k, values) else self._first[k]) for k, v in values.items()}

    def blocks(self, arch: Arch) -> list[SeqBlock]:
        d = arch.as_dict()
        return [SeqBlock(**{f: d[f"b{i}_{f}"] for f in FIELDS})  # type: ignore[arg-type]
                for i in range(int(d["n_blocks"]))]

    def design(self, blocks: Sequence[Mapping[str, Value]], readout: str = "mean",
               dropout: float = 0.0) -> Arch:
        """The arch of a hand-written block list (fields left out: the first option)."""
        vals = dict(self._first)
        vals.update(n_blocks=len(blocks), readout=readout, dropout=dropout)
        for i, b in enumerate(blocks):
            vals.update({f"b{i}_{k}": v for k, v in b.items()})
        return self.make(vals)

    def known_good(self) -> list[Arch]:
        """FCN (Wang et al. 2017) and the variants of :data:`KNOWN_GOOD` this space's
        options contain, in that order."""
        out: list[Arch] = []
        for readout, blocks in KNOWN_GOOD:
            try:
                out.append(self.design([{"norm": "batch", "act": "relu", **b}
                                        for b in blocks], readout))
            except ArchParseError:
                continue
        return list(dict.fromkeys(out))

    # -- string form --------------------------------------------------------------------------
    def format(self, arch: Arch) -> str:
        """``conv-k8-d1-w128-bn-relu|maxpool|gru-w64-bi|attention|drop0.1``: one token per
        block with its active fields only, then the readout and the head's dropout."""
        parts = []
        for b in self.blocks(arch):
            if b.type in POOL_TYPES:
                tok = b.type
            elif b.type in RNN_TYPES:
                tok = f"{b.type}-w{b.width}" + ("-bi" if b.bidir else "")
            elif b.type == "transformer":
                tok = (f"transformer-w{b.width}-h{b.heads}-f{b.ffn}-"
                       f"{'pre' if b.prenorm else 'post'}-{b.act}")
            else:
                tok = f"{b.type}-k{b.kernel}-d{b.dilation}-w{b.width}-{_NORM_TOK[b.norm]}-{b.act}"
            if b.skip and b.type in _USES["skip"]:
                tok += "-skip"
            if b.drop > 0:
                tok += f"-drop{b.drop}"
            parts.append(tok)
        return "|".join([*parts, str(arch["readout"]), f"drop{arch['dropout']}"])

    def parse(self, text: str) -> Arch:
        """Inverse of :meth:`format`; raises :class:`ArchParseError` naming the bad token."""
        if not isinstance(text, str):
            raise ArchParseError(f"seq: architecture must be a string, got {type(text).__name__}")
        toks = [t.strip() for t in text.strip().split("|")]
        if len(toks) < 2:
            raise ArchParseError(f"seq: bad architecture {text[:200]!r}: expected "
                                 "'block|...|readout|dropP', e.g. "
                                 "'conv-k8-d1-w128-bn-relu|mean|drop0.0'")
        vals: dict[str, Value] = dict(self._first)
        vals["dropout"] = self._drop(toks[-1], text, "dropout")
        if toks[-2] not in self.readouts:
            raise ArchParseError(f"seq: bad token {toks[-2][:50]!r} in {text[:200]!r}: the "
                                 f"readout is one of {list(self.readouts)}")
        vals["readout"] = toks[-2]
        body = toks[:-2]
        if not self.min_blocks <= len(body) <= self.max_blocks:
            raise ArchParseError(f"seq: bad architecture {text[:200]!r}: {len(body)} blocks, "
                                 f"this space allows {self.min_blocks} to {self.max_blocks}")
        vals["n_blocks"] = len(body)
        for i, tok in enumerate(body):
            vals.update({f"b{i}_{k}": v for k, v in self._parse_block(tok, text).items()})
        return self.make(vals)

    def _drop(self, tok: str, text: str, choice: str) -> float:
        m = _DROP.fullmatch(tok)
        opts = self._choice_map()["dropout" if choice == "dropout" else "b0_drop"].options
        if m is None or float(m[1]) not in opts:
            raise ArchParseError(f"seq: bad token {tok[:50]!r} in {text[:200]!r}: expected "
                                 f"'drop<p>' with p in {list(opts)}")
        return float(m[1])

    def _parse_block(self, tok: str, text: str) -> dict[str, Value]:
        def bad(why: str) -> ArchParseError:
            return ArchParseError(f"seq: bad token {tok[:80]!r} in {text[:200]!r}: {why}")

        parts = tok.split("-")
        out: dict[str, Value] = {"type": parts[0], "skip": False, "bidir": False}
        if parts[0] not in self.block_types:
            raise bad(f"block type {parts[0][:30]!r} is not one of {list(self.block_types)}")
        seen: set[str] = set()
        for p in parts[1:]:
            if m := _NUM.fullmatch(p):
                key, val = _NUM_FIELD[m[1]], int(m[2])
            elif p in _TOK_NORM:
                key, val = "norm", _TOK_NORM[p]
            elif p in ("pre", "post"):
                key, val = "prenorm", p == "pre"
            elif p in ACTIVATIONS:
                key, val = "act", p
            elif p in ("bi", "skip"):
                key, val = ("bidir" if p == "bi" else "skip"), True
            elif p.startswith("drop"):
                key, val = "drop", self._drop(p, text, "drop")
            else:
                raise bad(f"unknown part {p[:30]!r}")
            if key in seen:
                raise bad(f"{key} given twice")
            if key not in ("drop",) and parts[0] not in _USES.get(key, frozenset()):
                raise bad(f"a {parts[0]} block does not take {p[:30]!r}")
            seen.add(key)
            out[key] = val
        return out

    # -- building -----------------------------------------------------------------------------
    def _check(self, arch: Arch, input_shape: Sequence[int]) -> tuple[Arch, int, int]:
        if not isinstance(arch, Arch) or arch.space != self.name:
            raise NasforgeError(f"seq: not an architecture of the seq space: {arch!r:.200}")
        shape = tuple(input_shape)
        if len(shape) != 2 or int(shape[0]) < 2:
            raise NasforgeError(f"seq: input_shape must be (1 + channels, length) with the "
                                f"padding mask as channel 0, got {shape}")
        return self.make(arch.as_dict()), int(shape[0]) - 1, int(shape[1])

    def _build(self, arch: Arch, input_shape: Sequence[int], num_classes: int | None
               ) -> SeqNet:
        arch, c, length = self._check(arch, input_shape)
        mods, ch, stride = [], c, 1
        for b in self.blocks(arch):
            halve = b.type in POOL_TYPES and length >= 2
            m, ch = block_module(b, ch, halve)
            mods.append(m)
            if halve:
                length, stride = -(-length // 2), stride * 2
        return SeqNet(mods, ch, stride, str(arch["readout"]), float(arch["dropout"]),
                      num_classes)

    def build(self, arch: Arch, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise NasforgeError(f"{self.name}: num_classes must be a positive integer, got "
                                f"{num_classes!r:.50}")
        return self._build(arch, input_shape, num_classes)

    def build_backbone(self, arch: Arch, input_shape: Sequence[int]) -> Backbone:
        """The blocks without readout and head: one level, the last block's (N, W, L')
        features with padded steps zero."""
        return self._build(arch, input_shape, None)
