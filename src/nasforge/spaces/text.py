"""The ``text`` space: a token embedding (width, positional encoding none / sinusoidal /
learned) in front of the ``seq`` space's chain of temporal blocks and readout, for input
kind ``"text"`` (token ids, :mod:`nasforge.data.text`).

It is the ``seq`` space with two more choices, ``embed`` and ``posenc``, placed first:
every block type, readout, canonicalization and string rule of :mod:`nasforge.spaces.seq`
holds, with ``0`` blocks allowed by default so that a bag of embeddings (embedding, mean
over the real tokens, linear) is a point of it. The string form puts the embedding first:
``emb64-nopos|lstm-w128-bi|max|drop0.1``. The padding mask comes from the ids (id 0 is
padding), so every block and readout ignores padded positions as in ``seq``.

``vocab_size`` is the number of embedding rows; its default is the text loader's default
vocabulary, so the two agree unless one is changed (a larger tokenizer shares rows, see
:class:`~nasforge.spaces.text_net.TokenEmbedding`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn as nn

from nasforge.data.text import DEFAULT_VOCAB_SIZE, MAX_VOCAB_SIZE, MIN_VOCAB_SIZE, PAD_ID
from nasforge.errors import ArchParseError, NasforgeError
from nasforge.spaces import register
from nasforge.spaces.base import Arch, Backbone, Choice, Value
from nasforge.spaces.seq import SeqSpace, _int, _opts
from nasforge.spaces.seq_net import BLOCK_TYPES, NORMS, POOL_TYPES, READOUTS, block_module
from nasforge.spaces.text_net import POSITIONAL, TextNet, TokenEmbedding

_POS_TOK = {"none": "nopos", "sinusoidal": "sin", "learned": "learnedpos"}
_TOK_POS = {v: k for k, v in _POS_TOK.items()}
_EMB = re.compile(r"emb([0-9]{1,6})")

#: hand designs tried first: (embedding width, positional encoding, readout, blocks).
#: A bag of embeddings (fastText-like: mean of the token embeddings, linear; Joulin et
#: al. 2017), a bidirectional LSTM with max pooling over time, a one-layer CNN with max
#: pooling (Kim 2014), and a small transformer encoder layer.
KNOWN_GOOD: tuple[tuple[int, str, str, tuple[dict[str, Value], ...]], ...] = (
    (64, "none", "mean", ()),
    (64, "none", "max", ({"type": "lstm", "width": 128, "bidir": True},)),
    (64, "none", "max", ({"type": "conv", "kernel": 5, "width": 128, "norm": "none",
                          "act": "relu"},)),
    (64, "sinusoidal", "mean", ({"type": "transformer", "width": 64, "heads": 4, "ffn": 2,
                                 "act": "gelu"},)),
)


@register("text", help="text (token ids): embedding (width, positional encoding) + the "
          "seq blocks; bag of embeddings and BiLSTM are points")
class TextSpace(SeqSpace):
    """Embedding + seq blocks over (max_length,) token ids (module docstring)."""

    name = "text"
    input_kind = "text"
    default_for = "text"
    #: embeddings and recurrent layers train well with AdamW, poorly under the image
    #: recipe's SGD at lr 0.05
    train_defaults = {"optimizer": "adamw", "lr": 2e-3, "weight_decay": 0.01}

    def __init__(
        self,
        vocab_size: int = DEFAULT_VOCAB_SIZE,
        embed_widths: Sequence[int] = (32, 64, 128),
        positional: Sequence[str] = POSITIONAL,
        max_blocks: int = 3,
        min_blocks: int = 0,
        block_types: Sequence[str] = BLOCK_TYPES,
        kernels: Sequence[int] = (3, 5, 7),
        dilations: Sequence[int] = (1, 2),
        widths: Sequence[int] = (64, 128, 256),
        heads: Sequence[int] = (2, 4, 8),
        ffn_ratios: Sequence[int] = (2, 4),
        norms: Sequence[str] = NORMS,
        activations: Sequence[str] = ("relu", "gelu"),
        block_dropouts: Sequence[float] = (0.0, 0.1, 0.2),
        readouts: Sequence[str] = READOUTS,
        dropouts: Sequence[float] = (0.0, 0.1, 0.25, 0.5),
    ) -> None:
        if not _int(MIN_VOCAB_SIZE, MAX_VOCAB_SIZE)(vocab_size):
            raise NasforgeError(f"text: vocab_size must be an integer from {MIN_VOCAB_SIZE} "
                                f"to {MAX_VOCAB_SIZE}, got {vocab_size!r:.30}")
        super().__init__(max_blocks=max_blocks, min_blocks=min_blocks, block_types=block_types,
                         kernels=kernels, dilations=dilations, widths=widths, heads=heads,
                         ffn_ratios=ffn_ratios, norms=norms, activations=activations,
                         block_dropouts=block_dropouts, readouts=readouts, dropouts=dropouts)
        self.vocab_size = int(vocab_size)
        self.embed_widths = _opts("embed_widths", embed_widths,
                                  lambda o: _int(2, 4096)(o) and o % 2 == 0)
        self.positional = _opts("positional", positional, lambda o: o in POSITIONAL)
        head = (Choice("embed", self.embed_widths), Choice("posenc", self.positional))
        self._choices = head + self._choices
        self._first = {c.name: c.options[0] for c in self._choices}

    def config(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "embed_widths": list(self.embed_widths),
                "positional": list(self.positional), **super().config()}

    def choices(self) -> tuple[Choice, ...]:
        return self._choices

    def design(self, blocks: Sequence[Mapping[str, Value]], readout: str = "mean",
               dropout: float = 0.0, embed: int | None = None, posenc: str | None = None
               ) -> Arch:
        """The arch of a hand-written embedding and block list (fields left out: the
        first option)."""
        arch = super().design(blocks, readout, dropout)
        vals = arch.as_dict()
        if embed is not None:
            vals["embed"] = embed
        if posenc is not None:
            vals["posenc"] = posenc
        return self.make(vals)

    def known_good(self) -> list[Arch]:
        """The designs of :data:`KNOWN_GOOD` this space's options contain, in order:
        bag of embeddings first, then the BiLSTM, the CNN and the transformer layer."""
        out: list[Arch] = []
        for embed, pos, readout, blocks in KNOWN_GOOD:
            try:
                out.append(self.design([{"norm": "none", "act": "relu", **b} for b in blocks],
                                       readout, embed=embed, posenc=pos))
            except ArchParseError:
                continue
        return list(dict.fromkeys(out))

    # -- string form --------------------------------------------------------------------------
    def format(self, arch: Arch) -> str:
        """``emb64-nopos|lstm-w128-bi|max|drop0.1``: the embedding, then the seq form."""
        return f"emb{arch['embed']}-{_POS_TOK[str(arch['posenc'])]}|" + super().format(arch)

    def parse(self, text: str) -> Arch:
        """Inverse of :meth:`format`; raises :class:`ArchParseError` naming the bad token."""
        if not isinstance(text, str):
            raise ArchParseError(f"text: architecture must be a string, got "
                                 f"{type(text).__name__}")
        head, sep, rest = text.strip().partition("|")
        emb, _, pos = head.strip().partition("-")
        m = _EMB.fullmatch(emb)
        width = m[1] if m else ""
        if not sep or m is None or int(width) not in self.embed_widths or \
                pos not in _TOK_POS or _TOK_POS[pos] not in self.positional:
            raise ArchParseError(
                f"text: bad token {head[:50]!r} in {text[:200]!r}: expected 'emb<width>-"
                f"<{'|'.join(_POS_TOK[p] for p in self.positional)}>' with width in "
                f"{list(self.embed_widths)} first, e.g. 'emb64-nopos|mean|drop0.0'")
        vals = super().parse(rest).as_dict()
        vals.update(embed=int(width), posenc=_TOK_POS[pos])
        return self.make(vals)

    # -- building -----------------------------------------------------------------------------
    def _build(self, arch: Arch, input_shape: Sequence[int], num_classes: int | None
               ) -> TextNet:
        if not isinstance(arch, Arch) or arch.space != self.name:
            raise NasforgeError(f"text: not an architecture of the text space: {arch!r:.200}")
        shape = tuple(input_shape)
        if len(shape) != 1:
            raise NasforgeError(f"text: input_shape must be (max_length,) token ids, got "
                                f"{shape}")
        arch = self.make(arch.as_dict())
        length = int(shape[0])
        emb = TokenEmbedding(self.vocab_size, int(arch["embed"]), length,  # type: ignore[arg-type]
                             str(arch["posenc"]), PAD_ID)
        mods: list[nn.Module] = []
        ch, stride = int(arch["embed"]), 1  # type: ignore[arg-type]
        for b in self.blocks(arch):
            halve = b.type in POOL_TYPES and length >= 2
            m, ch = block_module(b, ch, halve)
            mods.append(m)
            if halve:
                length, stride = -(-length // 2), stride * 2
        return TextNet(emb, mods, ch, stride, str(arch["readout"]), float(arch["dropout"]),  # type: ignore[arg-type]
                       num_classes)

    def build_backbone(self, arch: Arch, input_shape: Sequence[int]) -> Backbone:
        """Embedding and blocks without readout and head: one level, the last block's
        (N, W, L') features with padded positions zero."""
        return self._build(arch, input_shape, None)
