"""Crash-safe checkpoints of a one-shot supernet's training (``RUN_DIR/supernet.ckpt``).

Used by SPOS's supernet training and by the DARTS/GDAS search. A checkpoint is one
safetensors file: the tensors (weights, architecture logits, optimizer buffers, the
torch RNG states, a batch order) plus a JSON document of plain values (epoch, step, the
numpy generator's state, the loss curve or per-epoch history) in its metadata. Nothing
is ever unpickled, so a tampered checkpoint cannot run code; it is written to a side
file, fsynced and renamed over the old one, so a ``kill -9`` leaves either the previous
checkpoint or the new one.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nasforge.errors import RunDirError

CHECKPOINT_NAME = "supernet.ckpt"
FORMAT = 1
_KEY = "nasforge"


def save_checkpoint(path: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor],
                    state: Mapping[str, Any]) -> None:
    """Write ``tensors`` and the JSON-able ``state`` to ``path`` atomically."""
    from safetensors.torch import save

    path = Path(path)
    # independent contiguous CPU copies: safetensors refuses shared storage
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    blob = save(flat, metadata={_KEY: json.dumps({"format": FORMAT, **state})})
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor],
                                                           dict[str, Any]]:
    """``(tensors, state)`` of the checkpoint at ``path``; a damaged file is a one-line
    :class:`RunDirError` (never a traceback from deep inside a parser)."""
    from safetensors.torch import load

    path = Path(path)
    try:
        blob = path.read_bytes()
        n = int.from_bytes(blob[:8], "little")
        if len(blob) < 8 or n > len(blob) - 8:
            raise ValueError("truncated header")
        header = json.loads(blob[8 : 8 + n])
        state = json.loads(header["__metadata__"][_KEY])
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"unknown format {state.get('format')!r}"
                             if isinstance(state, dict) else "metadata is not an object")
        tensors = load(blob)
    except OSError as e:
        raise RunDirError(f"cannot read the supernet checkpoint {path}: "
                          f"{e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - any parser error means a damaged file
        raise damaged(path, f"{type(e).__name__}: {str(e)[:120]}") from None
    return tensors, state


def damaged(path: str | os.PathLike[str], why: str) -> RunDirError:
    """The error for a checkpoint that cannot be used: what to do about it, on one line."""
    return RunDirError(
        f"the supernet checkpoint {path} is damaged ({why}); delete it to train the "
        "supernet again from the start (same seed, same weights), or start a new run "
        "with another --out"
    )


def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str = "opt") -> tuple[
        dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state split into tensors (``<prefix>.<param>.<key>``) and plain values;
    a distinct ``prefix`` per optimizer lets several share one checkpoint (DARTS: two)."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{prefix}.{idx}.{k}"] = v
            else:
                plain.setdefault(str(idx), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "plain": plain}


def load_optimizer(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor],
                   plain: Mapping[str, Any], prefix: str = "opt") -> None:
    """Restore what :func:`optimizer_tensors` split (on the optimizer's parameters' device;
    Adam's ``step`` count stays on the CPU, where torch keeps it)."""
    dev = next((p.device for g in opt.param_groups for p in g["params"]), torch.device("cpu"))
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if name.startswith(f"{prefix}."):
            _, idx, k = name.split(".", 2)
            state.setdefault(int(idx), {})[k] = t if k == "step" else t.to(dev)
    for idx, st in dict(plain.get("plain") or {}).items():
        state.setdefault(int(idx), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": list(plain["param_groups"])})
