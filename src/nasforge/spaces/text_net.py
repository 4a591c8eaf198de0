"""The network a ``text`` architecture builds: token ids -> embedding (+ positional
encoding) -> the ``seq`` space's blocks and readout (:mod:`nasforge.spaces.seq_net`), with
the padding mask made from the ids (id 0 is ``[PAD]``, see :mod:`nasforge.data.text`)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from nasforge.spaces.seq_net import SeqNet

POSITIONAL: tuple[str, ...] = ("none", "sinusoidal", "learned")


class TokenEmbedding(nn.Module):
    """Token ids (N, L) -> ``(features (N, E, L), mask (N, 1, L))``.

    The ids arrive as float32: the shared training loop, the FLOPs/latency probes and the
    ONNX export all feed the network float tensors (see :mod:`nasforge.data.text`), and
    float32 is exact for integers below 2**24. They are rounded back to integers here, so
    an int64 tensor works too. Any value is made a valid row (``remainder``): a probe's
    random floats must not index out of the table, and a tokenizer with more ids than
    rows shares rows by id modulo the table size (the hashing trick) instead of failing.
    """

    def __init__(self, vocab_size: int, width: int, length: int, positional: str,
                 pad_id: int = 0) -> None:
        super().__init__()
        self.vocab_size, self.pad_id = int(vocab_size), int(pad_id)
        self.embed = nn.Embedding(vocab_size, width, padding_idx=pad_id)
        nn.init.normal_(self.embed.weight, std=width ** -0.5)
        with torch.no_grad():
            self.embed.weight[pad_id].zero_()
        self.positional = positional
        self.pos: nn.Parameter | None = None
        if positional == "learned":
            self.pos = nn.Parameter(torch.randn(1, width, length) * 0.02)
        elif positional == "sinusoidal":  # Vaswani et al. 2017; a buffer, not learned
            pos = torch.arange(length, dtype=torch.float32)[:, None]
            div = torch.exp(torch.arange(0, width, 2, dtype=torch.float32)
                            * (-math.log(10000.0) / width))
            pe = torch.zeros(length, width)
            pe[:, 0::2] = torch.sin(pos * div)
            pe[:, 1::2] = torch.cos(pos * div)[:, : width // 2]
            self.register_buffer("pe", pe.T[None].contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.round(x.float()).long()
        m = (ids != self.pad_id).float()[:, None, :]
        ids = torch.remainder(ids, self.vocab_size)
        h = self.embed(ids).transpose(1, 2)  # (N, E, L)
        if self.pos is not None:
            h = h + self.pos
        elif self.positional == "sinusoidal":
            h = h + self.pe
        return h * m, m


class TextNet(SeqNet):
    """:class:`TokenEmbedding` -> seq blocks -> readout -> dropout -> linear (a backbone
    without the last three)."""

    def __init__(self, embedding: TokenEmbedding, blocks: list[nn.Module], channels: int,
                 stride: int, readout: str, dropout: float, num_classes: int | None) -> None:
        super().__init__(blocks, channels, stride, readout, dropout, num_classes)
        self.embedding = embedding

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, m = self.embedding(x)
        for b in self.blocks:
            h, m = b(h, m)
        return h, m
