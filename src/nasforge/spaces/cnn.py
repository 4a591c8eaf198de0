"""The ``cnn`` space: a chain-structured macro space over what practitioners tune by hand.

An architecture is ``stem conv 3x3 -> n_blocks blocks -> head``. Each block picks a type
(plain conv-BN-act, depthwise-separable conv, MBConv inverted residual, a 3x3 max pool, or
a classic 2x2 max or average pool that halves the resolution), a kernel size, an output
width, an activation, an optional residual connection (with a 1x1 projection when shapes
differ), an optional stride-2 downsample and a dropout after the block. The head is global
average pooling then dropout then a linear layer (``gap``), or flatten then a hidden
fully connected layer with ReLU, dropout and the linear layer (``fc128``, ...).

So a stage of 1-3 convolutions per resolution, pooled and regularized, is a run of blocks,
and the hand designs people write for small images are points of the space (see
:meth:`CNNSpace.known_good`, which the strategies try first).

Conditional choices are canonicalized so that equal networks are equal :class:`Arch` values:
blocks at positions ``i >= n_blocks`` are inactive, a ``pool`` block ignores kernel, width,
activation and skip (it is a 3x3 max pool that keeps its input channels), and the 2x2
``maxpool``/``avgpool`` blocks also ignore the downsample flag (they always halve).
Inactive choices are reset to their first option.

The string form reads like the network, e.g.
``stem16|mbconv-k5-w32-silu-skip-down|conv-k3-w64-relu|maxpool-drop0.1|fc128|drop0.25``
(the head token is left out for ``gap``, a block's ``-dropP`` for no dropout).

Downsampling is input dependent at build time: a block's downsample flag is *ignored* once
the feature map is smaller than 2 pixels on a side, so no input of at least 8x8 is ever
shrunk below 1x1 (see :meth:`CNNSpace.trace`). Inputs smaller than 8x8 are rejected.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch.nn as nn

from nasforge.errors import ArchParseError, NasforgeError
from nasforge.spaces import register
from nasforge.spaces.base import (
    Arch,
    Backbone,
    Choice,
    Level,
    SearchSpace,
    Value,
    _check_multipliers,
    scale_channels,
    scale_repeats,
)

BLOCK_TYPES: tuple[str, ...] = ("conv", "sepconv", "mbconv", "pool", "maxpool", "avgpool")
from nasforge.spaces.cnn_net import (  # noqa: E402 - the network lives beside the space
    ACTIVATIONS,
    HALVING_POOLS,
    POOL_TYPES,
    Block,
    CNNNet,
    Stage,
    _block_module,
    _conv_bn,
)

_HEAD = re.compile(r"^fc([0-9]{1,6})$")

#: per-block fields, in choice order; a pool uses ``type``, ``down`` and ``drop`` only
FIELDS: tuple[str, ...] = ("type", "kernel", "width", "act", "skip", "down", "drop")
_POOL_INACTIVE = frozenset({"kernel", "width", "act", "skip"})
_BLOCK_NAME = re.compile(r"^b(\d+)_(\w+)$")

#: smallest input side accepted by :meth:`CNNSpace.build`
MIN_SIDE = 8
#: bounds on the space's options, checked before any choice list is made (a hostile
#: ``max_blocks=100000000`` would otherwise allocate gigabytes of choices); what a
#: network built from valid options may cost is checked by ``SearchSpace`` itself
MAX_BLOCKS = 256
MAX_WIDTH = 16384
MAX_KERNEL = 31
MAX_EXPANSION = 64
MAX_OPTIONS = 1024

#: hand designs for small images (see :meth:`CNNSpace.known_good`), best first: the order matters
#: when the budget affords only a few trials (``--trials 1`` trains the first). The first pools
#: right after the stem, puts two 32-wide convolutions (the first with a skip) at 1/2 resolution and
#: two 64-wide ones at 1/4, then an FC-128 head; it was the best of the final-length study's sample
#: on Fashion-MNIST (94.13 % validation after 520 s, 0.7 points above the next), and also the best
#: after 26 s, so short trials find it (benchmarks/results/fidelity_rank_final_length.md); on a
#: 5-class image folder it is within noise of the classic design
#: (benchmarks/results/known_good_folder.md). The second is a wider variant (48/96, GAP head); the
#: third is the classic VGG-style design (2 x [conv3x3-BN-ReLU x 2, 2x2 max pool, dropout], 32/64
#: channels, FC-128 head with dropout 0.3); the fourth spends its time on one strided conv, a pool
#: and an FC head (4.5 MFLOPs, 3x the epochs of the classic design in the same time). A tiny
#: inverted-residual design (1.5 MFLOPs) was taken out: it wins trials of a few seconds and is last
#: after the final training.
KNOWN_GOOD: tuple[str, ...] = (
    "stem16|maxpool|conv-k3-w32-relu-skip|conv-k3-w32-relu|maxpool|conv-k3-w64-relu"
    "|conv-k3-w64-relu|fc128|drop0.1",
    "stem16|maxpool|conv-k3-w48-relu|conv-k3-w48-relu|maxpool|conv-k3-w96-relu"
    "|conv-k3-w96-relu|drop0.1",
    "stem32|conv-k3-w32-relu|maxpool-drop0.1|conv-k3-w64-relu|conv-k3-w64-relu"
    "|maxpool-drop0.2|fc128|drop0.3",
    "stem32|conv-k3-w32-relu-down|maxpool-drop0.1|fc128|drop0.3",
)
#: below this many training + validation examples the classic design (``KNOWN_GOOD[2]``)
#: is tried first. Measured on the 5-class image folder (2,400 examples, 28x28,
#: benchmarks/results/hand_design_small.md): trained by the same code (the job's final
#: training, ``train_model``) for the same 106 s, the classic design (the hand CNN) reached
#: 86.8 / 84.5 % test accuracy (seeds 0 / 1) and the first design 82.3 / 82.2 %: on few
#: examples its early pool and light dropout cost 2-4.5 points, while on Fashion-MNIST's
#: 60,000 it leads by 0.7. Sizes in between are not measured.
SMALL_DATA_EXAMPLES = 10_000
SMALL_DATA_FIRST = KNOWN_GOOD[2]


# -- option validation -----------------------------------------------------------------------


def _int_options(name: str, value: Any, *, odd: bool = False,
                 hi: int = MAX_WIDTH) -> tuple[int, ...]:
    opts = _options(name, value)
    for o in opts:
        if isinstance(o, bool) or not isinstance(o, int) or not 1 <= o <= hi:
            raise NasforgeError(
                f"cnn: {name} must be integers from 1 to {hi}, got {o!r} in {list(opts)[:20]}")
        if odd and o % 2 == 0:
            raise NasforgeError(
                f"cnn: {name} must be odd (so 'same' padding keeps the shape), "
                f"got {o} in {list(opts)}"
            )
    return opts


def _name_options(name: str, value: Any, valid: Iterable[str]) -> tuple[str, ...]:
    opts = _options(name, value)
    valid = list(valid)
    for o in opts:
        if o not in valid:
            raise NasforgeError(f"cnn: unknown {name[:-1]} {o!r} in {name}; choose from {valid}")
    return opts


def _options(name: str, value: Any) -> tuple[Any, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise NasforgeError(f"cnn: {name} must be a list of options, got {value!r}")
    opts = tuple(itertools.islice(value, MAX_OPTIONS + 1))
    if len(opts) > MAX_OPTIONS:
        raise NasforgeError(f"cnn: {name} has more than {MAX_OPTIONS} options")
    if not opts:
        raise NasforgeError(f"cnn: {name} needs at least one option")
    if len(set(opts)) != len(opts):
        raise NasforgeError(f"cnn: {name} has duplicate options: {list(opts)}")
    return opts


def _prob_options(name: str, value: Any) -> tuple[float, ...]:
    opts = _options(name, value)
    for p in opts:
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= p < 1.0:
            raise NasforgeError(f"cnn: {name} must be numbers in [0, 1), got {p!r}")
    out = tuple(float(p) for p in opts)
    if len(set(out)) != len(out):
        raise NasforgeError(f"cnn: {name} has duplicate options: {list(opts)}")
    return out


def _count(name: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise NasforgeError(f"cnn: {name} must be an integer from {lo} to {hi}, got {value!r}")
    return value


# -- network pieces --------------------------------------------------------------------------


# -- the space -------------------------------------------------------------------------------


@register("cnn")
class CNNSpace(SearchSpace):
    """Chain-structured CNN macro space: per-block type, kernel, width, activation, skip, stride."""

    name = "cnn"
    default_for = "image"

    def __init__(
        self,
        max_blocks: int = 10,
        min_blocks: int = 1,
        widths: Sequence[int] = (16, 24, 32, 48, 64, 96, 128, 192),
        kernels: Sequence[int] = (3, 5, 7),
        block_types: Sequence[str] = BLOCK_TYPES,
        activations: Sequence[str] = ("relu", "gelu", "silu", "hardswish"),
        dropouts: Sequence[float] = (0.0, 0.1, 0.2, 0.25, 0.3, 0.5),
        stem_widths: Sequence[int] = (8, 16, 24, 32, 48, 64),
        expansion: int = 4,
        block_dropouts: Sequence[float] = (0.0, 0.1, 0.2),
        heads: Sequence[str] = ("gap", "fc128", "fc256"),
    ) -> None:
        self.min_blocks = _count("min_blocks", min_blocks, 0, MAX_BLOCKS)
        self.max_blocks = _count("max_blocks", max_blocks, 1, MAX_BLOCKS)
        if self.min_blocks > self.max_blocks:
            raise NasforgeError(
                f"cnn: min_blocks ({min_blocks}) must not exceed max_blocks ({max_blocks})"
            )
        self.widths = _int_options("widths", widths)
        self.kernels = _int_options("kernels", kernels, odd=True, hi=MAX_KERNEL)
        self.block_types = _name_options("block_types", block_types, BLOCK_TYPES)
        self.activations = _name_options("activations", activations, ACTIVATIONS)
        self.dropouts = _prob_options("dropouts", dropouts)
        self.block_dropouts = _prob_options("block_dropouts", block_dropouts)
        self.stem_widths = _int_options("stem_widths", stem_widths)
        self.expansion = _count("expansion", expansion, 1, MAX_EXPANSION)
        self.heads = _options("heads", heads)
        for h in self.heads:
            if h != "gap" and not (isinstance(h, str) and _HEAD.match(h)
                                   and 0 < int(h[2:]) <= MAX_WIDTH):
                raise NasforgeError(
                    f"cnn: unknown head {h!r} in heads; use 'gap' or 'fcN' (a hidden fully "
                    "connected layer of N units, e.g. 'fc128')"
                )

        field_opts: dict[str, tuple[Value, ...]] = {
            "type": self.block_types, "kernel": self.kernels, "width": self.widths,
            "act": self.activations, "skip": (False, True), "down": (False, True),
            "drop": self.block_dropouts,
        }
        cs = [
            Choice("n_blocks", tuple(range(self.min_blocks, self.max_blocks + 1))),
            Choice("stem_width", self.stem_widths),
        ]
        self._block_of: dict[str, tuple[int, str]] = {}
        for i in range(self.max_blocks):
            for f in FIELDS:
                cs.append(Choice(f"b{i}_{f}", field_opts[f]))
                self._block_of[f"b{i}_{f}"] = (i, f)
        cs.append(Choice("head", self.heads))
        cs.append(Choice("dropout", self.dropouts))
        self._choices = tuple(cs)
        self._first = {c.name: c.options[0] for c in cs}

    def config(self) -> dict[str, Any]:
        return {
            "max_blocks": self.max_blocks,
            "min_blocks": self.min_blocks,
            "widths": list(self.widths),
            "kernels": list(self.kernels),
            "block_types": list(self.block_types),
            "activations": list(self.activations),
            "dropouts": list(self.dropouts),
            "stem_widths": list(self.stem_widths),
            "expansion": self.expansion,
            "block_dropouts": list(self.block_dropouts),
            "heads": list(self.heads),
        }

    head_only_choices = ("head", "dropout")

    def choices(self) -> tuple[Choice, ...]:
        return self._choices

    # -- conditionality -----------------------------------------------------------------------
    def is_active(self, name: str, values: Mapping[str, Value]) -> bool:
        """Blocks past ``n_blocks`` are off; a pool block only uses its type, down flag
        (not for the always-halving 2x2 pools) and dropout."""
        pos = self._block_of.get(name)
        if pos is None:
            return True
        i, f = pos
        if i >= int(values["n_blocks"]):
            return False
        t = values[f"b{i}_type"]
        if t in HALVING_POOLS and f == "down":
            return False
        return not (f in _POOL_INACTIVE and t in POOL_TYPES)

    def canonicalize(self, values: dict[str, Value]) -> dict[str, Value]:
        """Reset every inactive choice to its first option (same rule as :meth:`is_active`)."""
        return {k: (v if self.is_active(k, values) else self._first[k]) for k, v in values.items()}

    def blocks(self, arch: Arch) -> list[Block]:
        """The active blocks of ``arch``, in order."""
        d = arch.as_dict()
        return [
            Block(
                type=str(d[f"b{i}_type"]), kernel=int(d[f"b{i}_kernel"]),
                width=int(d[f"b{i}_width"]), act=str(d[f"b{i}_act"]),
                skip=bool(d[f"b{i}_skip"]), down=bool(d[f"b{i}_down"]),
                drop=float(d[f"b{i}_drop"]),
            )
            for i in range(int(d["n_blocks"]))
        ]

    # -- counting and enumeration -------------------------------------------------------------
    def _block_variants(self) -> list[dict[str, Value]]:
        """Canonical field values of one active block (pool variants collapse)."""
        out: list[dict[str, Value]] = []
        base = {"kernel": self.kernels[0], "width": self.widths[0],
                "act": self.activations[0], "skip": False}
        for t in self.block_types:
            if t in POOL_TYPES:
                downs = (False,) if t in HALVING_POOLS else (False, True)
                out += [{"type": t, **base, "down": dn, "drop": p}
                        for dn in downs for p in self.block_dropouts]
                continue
            for k, w, a, sk, dn, p in itertools.product(
                self.kernels, self.widths, self.activations, (False, True), (False, True),
                self.block_dropouts,
            ):
                out.append({"type": t, "kernel": k, "width": w, "act": a, "skip": sk,
                            "down": dn, "drop": p})
        return out

    def _per_block(self) -> int:
        """Canonical variants of one active block (what :meth:`_block_variants` lists)."""
        n_conv = sum(1 for t in self.block_types if t not in POOL_TYPES)
        per = n_conv * len(self.kernels) * len(self.widths) * len(self.activations) * 4
        per += 2 if "pool" in self.block_types else 0
        per += sum(1 for t in self.block_types if t in HALVING_POOLS)
        return per * len(self.block_dropouts)

    @property
    def size(self) -> int:
        """Distinct canonical archs: ``stems * heads * dropouts * sum_n B**n``, B = variants
        per block."""
        per_block = self._per_block()
        chains = sum(per_block**n for n in range(self.min_blocks, self.max_blocks + 1))
        return len(self.stem_widths) * len(self.heads) * len(self.dropouts) * chains

    def enumerate(self) -> Iterator[Arch]:
        """Every canonical arch exactly once, generated directly (lazy, no 'seen' set)."""
        variants = self._block_variants()
        for n in range(self.min_blocks, self.max_blocks + 1):
            for stem, head, drop in itertools.product(self.stem_widths, self.heads,
                                                      self.dropouts):
                for chain in itertools.product(variants, repeat=n):
                    vals = dict(self._first)
                    vals.update(n_blocks=n, stem_width=stem, head=head, dropout=drop)
                    for i, bv in enumerate(chain):
                        vals.update({f"b{i}_{f}": v for f, v in bv.items()})
                    yield self.make(vals)

    # -- compound scaling -----------------------------------------------------------------
    can_scale = True

    def stages(self, arch: Arch) -> list[list[int]]:
        """Block indices of ``arch`` grouped by resolution: a new stage starts at each block
        that halves it (a ``-down`` block or a 2x2 pool), whatever the input size."""
        out: list[list[int]] = [[]]
        for i, b in enumerate(self.blocks(arch)):
            if (b.down or b.type in HALVING_POOLS) and out[-1]:
                out.append([])
            out[-1].append(i)
        return [st for st in out if st]

    def scale(self, arch: Arch, depth: float, width: float) -> tuple[SearchSpace, Arch]:
        """EfficientNet's depth and width scaling of a chain.

        Depth: in each stage (see :meth:`stages`) the ``n`` convolution blocks become
        ``round(n * depth)``; the new ones are copies of the stage's last convolution,
        inserted after it, without its downsample and with a residual connection (same
        shape, so an identity skip: EfficientNet's repeated blocks). Pools are kept as they
        are. Width: every convolution's width, the stem's and an FC head's hidden units are
        multiplied and rounded to a multiple of 8 (:func:`scale_channels`). The returned
        space is this one with its options widened (more blocks, new widths and heads)."""
        depth, width = _check_multipliers(self.name, depth, width)
        arch = self._check(arch)
        if depth == 1 and width == 1:
            return self, arch
        blocks = self.blocks(arch)
        order: list[Block] = []
        for st in self.stages(arch):
            convs = [i for i in st if blocks[i].type not in POOL_TYPES]
            extra = scale_repeats(len(convs), depth) - len(convs) if convs else 0
            for i in st:
                order.append(blocks[i])
                if convs and i == convs[-1]:
                    copy = dataclasses.replace(blocks[i], down=False, skip=True)
                    order.extend([copy] * extra)
        order = [b if b.type in POOL_TYPES else
                 dataclasses.replace(b, width=scale_channels(b.width, width))
                 for b in order]
        stem = scale_channels(int(arch["stem_width"]), width)
        head = str(arch["head"])
        if head != "gap":
            head = f"fc{scale_channels(int(head[2:]), width)}"
        cfg = self.config()
        cfg.update(
            max_blocks=max(self.max_blocks, len(order)),
            widths=sorted({*self.widths, *(b.width for b in order
                                          if b.type not in POOL_TYPES)}),
            stem_widths=sorted({*self.stem_widths, stem}),
            heads=list(dict.fromkeys([*self.heads, head])),
        )
        space = type(self)(**cfg)
        vals: dict[str, Value] = dict(space._first)
        vals.update(n_blocks=len(order), stem_width=stem, head=head,
                    dropout=arch["dropout"])
        for i, b in enumerate(order):
            vals.update({f"b{i}_{f}": getattr(b, f) for f in FIELDS})
        return space, space.make(vals)

    # -- designs worth trying first -------------------------------------------------------
    def known_good(self) -> list[Arch]:
        """Hand designs for small images that this space (with its options) contains.

        Strategies evaluate these before sampling (``warm_start``), so a search starts
        from what a practitioner would write instead of from random chains, and can only
        improve on it. Each is written as a string; those the space's options exclude
        are left out.
        """
        out: list[Arch] = []
        for text in KNOWN_GOOD:
            try:
                out.append(self.parse(text))
            except ArchParseError:
                continue
        return list(dict.fromkeys(out))

    def known_good_for(self, n_examples: int) -> list[Arch]:
        """:meth:`known_good`, the classic design first on a small data set (fewer than
        :data:`SMALL_DATA_EXAMPLES` examples; see there for the measurement)."""
        out = self.known_good()
        if n_examples >= SMALL_DATA_EXAMPLES:
            return out
        try:
            classic = self.parse(SMALL_DATA_FIRST)
        except ArchParseError:  # the space's options exclude it
            return out
        return [classic, *(a for a in out if a != classic)] if classic in out else out

    # -- string form --------------------------------------------------------------------------
    def format(self, arch: Arch) -> str:
        """``stem16|<block>|...|drop0.25``; a block is ``type-kK-wW-act[-skip][-down]``
        or ``pool[-down]``, so the string reads like the network and omits inactive choices."""
        d = arch.as_dict()
        parts = [f"stem{d['stem_width']}"]
        for b in self.blocks(arch):
            pool = b.type in POOL_TYPES
            tok = b.type if pool else f"{b.type}-k{b.kernel}-w{b.width}-{b.act}"
            if not pool and b.skip:
                tok += "-skip"
            if b.down:
                tok += "-down"
            if b.drop > 0:
                tok += f"-drop{b.drop}"
            parts.append(tok)
        if d["head"] != "gap":
            parts.append(str(d["head"]))
        parts.append(f"drop{d['dropout']}")
        return "|".join(parts)

    def parse(self, text: str) -> Arch:
        """Inverse of :meth:`format`; raises :class:`ArchParseError` naming the bad token."""
        if not isinstance(text, str):
            raise ArchParseError(f"cnn: architecture must be a string, got {type(text).__name__}")
        toks = [t.strip() for t in text.strip().split("|")]
        if len(toks) < 2:
            raise ArchParseError(
                f"cnn: bad architecture {text!r}: expected 'stemW|block|...|dropP', "
                "e.g. 'stem16|conv-k3-w32-relu-down|pool|drop0.1'"
            )
        vals: dict[str, Value] = dict(self._first)
        vals["stem_width"] = self._num_token(toks[0], "stem", "stem_width", text)
        vals["dropout"] = self._num_token(toks[-1], "drop", "dropout", text)
        body = toks[1:-1]
        if body and (body[-1] == "gap" or _HEAD.match(body[-1])):
            if body[-1] not in self.heads:
                raise ArchParseError(
                    f"cnn: bad token {body[-1]!r} in {text!r}: head must be one of "
                    f"{list(self.heads)}"
                )
            vals["head"] = body[-1]
            body = body[:-1]
        else:
            vals["head"] = "gap"
            if "gap" not in self.heads:
                raise ArchParseError(
                    f"cnn: bad architecture {text!r}: no head token and this space has no "
                    f"'gap' head; end with one of {list(self.heads)} before the dropout"
                )
        if not self.min_blocks <= len(body) <= self.max_blocks:
            raise ArchParseError(
                f"cnn: bad architecture {text!r}: {len(body)} blocks, this space allows "
                f"{self.min_blocks} to {self.max_blocks}"
            )
        vals["n_blocks"] = len(body)
        for i, tok in enumerate(body):
            vals.update({f"b{i}_{f}": v for f, v in self._parse_block(tok, text).items()})
        return self.make(vals)

    def _num_token(self, tok: str, prefix: str, choice: str, text: str) -> Value:
        opts = self._choice_map()[choice].options
        raw = tok[len(prefix):] if tok.startswith(prefix) else None
        if raw is None:
            raise ArchParseError(
                f"cnn: bad token {tok!r} in {text!r}: expected '{prefix}<value>' with value in "
                f"{list(opts)}"
            )
        try:
            num = float(raw)
        except ValueError:
            num = math.nan
        for o in opts:
            if o == num:
                return o
        raise ArchParseError(
            f"cnn: bad token {tok!r} in {text!r}: {choice} must be one of {list(opts)}"
        )

    def _parse_block(self, tok: str, text: str) -> dict[str, Value]:
        def bad(why: str) -> ArchParseError:
            return ArchParseError(f"cnn: bad token {tok!r} in {text!r}: {why}")

        parts = tok.split("-")
        btype = parts[0]
        if btype not in self.block_types:
            raise bad(f"block type {btype!r} is not one of {list(self.block_types)}")
        out: dict[str, Value] = {"type": btype, "skip": False, "down": False,
                                 "drop": self.block_dropouts[0]}
        seen: set[str] = set()
        for p in parts[1:]:
            if p in ("skip", "down"):
                key, val = p, True
            elif p.startswith("drop"):
                key = "drop"
                try:
                    num = float(p[4:])
                except ValueError:
                    num = math.nan
                match = [o for o in self.block_dropouts if o == num]
                if not match:
                    raise bad(f"block dropout must be one of {list(self.block_dropouts)}")
                val = match[0]
            elif p in self.activations:
                key, val = "act", p
            elif m := re.fullmatch(r"([kw])([0-9]{1,9})", p):  # ASCII, short: int() cannot fail
                key = "kernel" if m[1] == "k" else "width"
                val = int(m[2])
                opts = self.kernels if key == "kernel" else self.widths
                if val not in opts:
                    raise bad(f"{key} {val} is not one of {list(opts)}")
            else:
                raise bad(
                    f"unknown part {p!r}; expected kK, wW, an activation in "
                    f"{list(self.activations)}, 'skip' or 'down'"
                )
            if key in seen:
                raise bad(f"{key} given twice")
            seen.add(key)
            if btype == "pool" and key not in ("down", "drop"):
                raise bad(f"a pool block only takes '-down' and '-dropP', not {p!r}")
            if btype in HALVING_POOLS and key != "drop":
                raise bad(f"a {btype} block (2x2, always halves) only takes '-dropP', not {p!r}")
            out[key] = val
        if btype not in POOL_TYPES:
            missing = [f for f in ("kernel", "width", "act") if f not in out]
            if missing:
                raise bad(f"missing {', '.join(missing)} (e.g. '{btype}-k3-w32-relu')")
        return out

    # -- building -----------------------------------------------------------------------------
    def _check(self, arch: Arch) -> Arch:
        if not isinstance(arch, Arch) or arch.space != self.name:
            raise NasforgeError(f"cnn: not an architecture of the cnn space: {arch!r}")
        return self.make(arch.as_dict())

    def _check_input(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        shape = tuple(input_shape)
        if len(shape) != 3 or any(isinstance(s, bool) or not isinstance(s, int) for s in shape):
            raise NasforgeError(f"cnn: input_shape must be (channels, height, width), got {shape}")
        c, h, w = shape
        if c < 1 or h < MIN_SIDE or w < MIN_SIDE:
            raise NasforgeError(
                f"cnn: input {c}x{h}x{w} is too small: needs >= 1 channel and at least "
                f"{MIN_SIDE}x{MIN_SIDE} pixels (resize or pad the images)"
            )
        return c, h, w

    def trace(self, arch: Arch, input_shape: Sequence[int]) -> list[Stage]:
        """Per-block channels, stride and output size; downsampling stops below 2 pixels."""
        arch = self._check(arch)
        _, h, w = self._check_input(input_shape)
        ch = int(arch["stem_width"])
        out = []
        for b in self.blocks(arch):
            stride = 2 if (b.down or b.type in HALVING_POOLS) and min(h, w) >= 2 else 1
            h, w = -(-h // stride), -(-w // stride)
            cout = ch if b.type in POOL_TYPES else b.width
            out.append(Stage(b, ch, cout, stride, h, w))
            ch = cout
        return out

    def _taps(self, arch: Arch, input_shape: Sequence[int]) -> list[tuple[int, Level]]:
        """One level per resolution: the stem's or a block's output read just before the
        next block that halves the resolution, and the last block's output; each with how
        many blocks precede it. A level's stride is the product of the block strides
        before it (downsampling stops below 2 pixels, so strides stop growing there)."""
        stages = self.trace(arch, input_shape)
        ch, stride = int(arch["stem_width"]), 1
        out: list[tuple[int, Level]] = []
        for n, st in enumerate(stages):
            if st.stride > 1:
                out.append((n, Level(ch, stride)))
            ch, stride = st.out_channels, stride * st.stride
        out.append((len(stages), Level(ch, stride)))
        return out

    def _build(self, arch: Arch, input_shape: Sequence[int], num_classes: int | None,
               head: bool = True) -> CNNNet:
        """The network of ``arch``; without its head (``num_classes`` unused) for a backbone."""
        arch = self._check(arch)
        c, _, _ = self._check_input(input_shape)
        if head and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                     or num_classes < 1):
            raise NasforgeError(f"cnn: num_classes must be a positive integer, got {num_classes!r}")
        stem_w = int(arch["stem_width"])
        stem = nn.Sequential(*_conv_bn(c, stem_w, 3, 1), nn.ReLU())
        mods = []
        ch, (_, h, w) = stem_w, self._check_input(input_shape)
        for st in self.trace(arch, input_shape):
            m, ch = _block_module(st.block, st.in_channels, st.stride, self.expansion)
            mods.append(m)
            h, w = st.height, st.width
        head_kind = str(arch["head"])
        hidden = 0 if head_kind == "gap" else int(head_kind[2:])
        return CNNNet(stem, nn.Sequential(*mods), float(arch["dropout"]), ch,
                      num_classes if head else None, hidden=hidden, flat=ch * h * w,
                      taps=self._taps(arch, input_shape))

    def build(self, arch: Arch, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        return self._build(arch, input_shape, num_classes)

    def build_backbone(self, arch: Arch, input_shape: Sequence[int]) -> Backbone:
        """Stem and blocks without the head: one level per resolution (the last feature
        map before each halving, and the last block's output)."""
        return self._build(arch, input_shape, None, head=False)
