"""ONNX export with a dynamic batch axis, checked against torch with onnxruntime."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from nasforge.errors import NasforgeError

#: largest |onnx - torch| accepted when an export is checked with onnxruntime
ONNX_ATOL = 1e-4


@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the exporters' progress prints, deprecation warnings and registry logs."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch._dynamo", "torch.export")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)


# -------------------------------------------------------------------------------- ONNX
@dataclass
class OnnxExport:
    """How an ONNX export went: which exporter, which opset, how close to torch."""

    path: Path
    exporter: str
    opset: int | None
    max_abs_diff: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path.name,
            "exporter": self.exporter,
            "opset": self.opset,
            "max_abs_diff": self.max_abs_diff,
        }


#: the oldest ONNX opset nasforge exports to (older ones lack operators every net uses)
MIN_OPSET = 9


def _max_opset() -> int:
    """The newest opset the installed ``onnx`` knows."""
    try:
        import onnx.defs

        return int(onnx.defs.onnx_opset_version())
    except Exception:  # noqa: BLE001 - a guess is enough for a range check
        return 21


def _export_once(
    model: nn.Module, example: torch.Tensor, path: Path, opset: int | None, dynamo: bool,
    output_name: str = "logits",
) -> None:
    kw: dict[str, Any] = dict(
        input_names=["input"], output_names=[output_name], opset_version=opset, dynamo=dynamo
    )
    if dynamo:
        kw["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
        kw["external_data"] = False  # one self-contained file
    else:
        kw["dynamic_axes"] = {"input": {0: "batch"}, output_name: {0: "batch"}}
    with _quiet_export():
        torch.onnx.export(model, (example,), str(path), **kw)


def _onnx_check(model: nn.Module, path: Path, example: torch.Tensor) -> float:
    """Max |onnxruntime - torch| on ``example`` and on a different batch size, relative
    to the output's scale where it is large (divided by ``max(1, max |torch|)``): a
    detector's box corners are pixels (up to the image side), where float32 kernels that
    add in another order (ORT's bilinear resize) differ by 1e-4 of a pixel; an output
    within [-1, 1] keeps the absolute bound."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    worst = 0.0
    for x in (example, example[:1].repeat(3, *[1] * (example.dim() - 1)) * 0.5):
        with torch.no_grad():
            ref = model(x).detach().cpu().numpy()
        out = sess.run(None, {name: x.numpy()})[0]
        if out.shape != ref.shape:
            raise RuntimeError(f"ONNX output shape {out.shape} != torch {ref.shape}")
        scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
        worst = max(worst, float(np.max(np.abs(out - ref))) / scale)
    return worst


def export_onnx(
    model: nn.Module,
    input_shape: Sequence[int],
    path: str | os.PathLike[str],
    opset: int | None = None,
    *,
    check: bool = True,
    atol: float = ONNX_ATOL,
    output_name: str = "logits",
) -> OnnxExport:
    """Export ``model`` (on CPU, eval mode) to ONNX with a dynamic batch axis.

    Tries the TorchScript exporter first and the torch.export-based one if that fails
    (measured here: a detector with in-graph box decoding exports in 0.9 s by the first,
    11 s by the second; a time-budgeted job pays this inside its budget);
    with ``check`` the file is run with onnxruntime and compared with torch, so a
    silently wrong export counts as a failure. Raises ``RuntimeError`` naming every
    exporter's error if none worked. The model's device and train/eval mode are restored.
    ``output_name`` names the graph's output (the task's ``output_names``).
    """
    path = Path(path)
    if opset is not None:
        top = _max_opset()
        if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= top:
            raise NasforgeError(f"opset must be an integer from {MIN_OPSET} to {top}, "
                                f"got {opset!r}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a path under a file, a read-only disk, a name too long
        raise NasforgeError(f"cannot write {path}: {e.strerror or e}") from None
    shape = tuple(int(s) for s in input_shape)
    if len(shape) not in (1, 2, 3):  # (C, H, W) images, (C, L) sequences, (F,) features
        raise NasforgeError(f"input_shape must be (C, H, W), (C, L) or (F,), got "
                            f"{tuple(input_shape)}")
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    was_training = model.training
    model.cpu().eval()
    # batch 2, not 1: torch.export specializes dimensions of size 0 and 1
    example = torch.randn(2, *shape, generator=torch.Generator().manual_seed(0))
    errors: list[str] = []
    try:
        for dynamo in (False, True):
            name = "dynamo" if dynamo else "torchscript"
            try:
                path.unlink(missing_ok=True)
                _export_once(model, example, path, opset, dynamo, output_name)
                diff = _onnx_check(model, path, example) if check else None
                if diff is not None and not diff <= atol:
                    raise RuntimeError(f"ONNX output differs from torch by {diff:.3g} > {atol}")
            except Exception as e:  # noqa: BLE001 - try the next exporter, report all
                errors.append(f"{name}: {type(e).__name__}: {str(e).strip()[:500]}")
                continue
            import onnx

            opset_used = next(
                (o.version for o in onnx.load(str(path), load_external_data=False).opset_import
                 if o.domain in ("", "ai.onnx")),
                opset,
            )  # fmt: skip
            if opset is not None and opset_used != opset:  # never another opset silently
                errors.append(f"{name}: wrote opset {opset_used}, not the {opset} asked for")
                path.unlink(missing_ok=True)
                continue
            return OnnxExport(path, name, opset_used, diff)
    finally:
        model.to(device)
        model.train(was_training)
    path.unlink(missing_ok=True)
    raise RuntimeError("ONNX export failed: " + " | ".join(errors))
