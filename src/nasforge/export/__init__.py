# ruff: noqa: F401 - this module only re-exports, private helpers included
"""The searched model as a self-contained directory, and everything to use it again.

A model directory (``RUN_DIR/best``) holds

- ``arch.json``: what to rebuild (space name + config, the architecture), what the model
  expects (input shape, class names, normalization mean/std) and version information;
- ``weights.safetensors``: the state dict, buffers included (never a pickle: loading a
  model must not run code from the file), with its sha256 recorded in ``arch.json`` so
  a corrupt or swapped file is caught instead of silently predicting garbage;
- ``model.onnx``: the same network for onnxruntime & co., with a dynamic batch axis;
- ``summary.json``: final metrics and whatever the caller adds (test accuracy, cost, ...).

:func:`load` (``nasforge.load``) rebuilds the network from the space registry and the
weights; :meth:`LoadedModel.predict` takes images in the forms people actually have
(numpy arrays in any common layout, files, PIL images) and preprocesses them exactly as
the training data was.

The code lives in submodules: :mod:`.modeldir` (write, find, check and load the
directory), :mod:`.to_onnx` (the ONNX export and its check) and :mod:`.predict` (the loaded
model, its predictions, image reading). Every name is re-exported here, private helpers
included, so ``from nasforge.export import X`` keeps working; patch a name where it is
looked up (e.g. ``nasforge.export.modeldir.export_onnx`` for :func:`save_best`).
"""

from __future__ import annotations

from nasforge.export._format import (
    ARCH_FILE,
    FORMAT,
    FORMAT_VERSION,
    ONNX_FILE,
    SUMMARY_FILE,
    WEIGHTS_FILE,
)
from nasforge.export.modeldir import (
    TTA,
    FlipTTA,
    InputResize,
    _jsonable,
    _read_arch_doc,
    _sha256,
    _state_tensors,
    _write_json,
    load,
    model_dir,
    save_best,
    with_tta,
)
from nasforge.export.predict import (
    _CH,
    ImageInput,
    LoadedModel,
    Prediction,
    Top,
    _array_to_nchw,
    _array_to_unit,
    _convert_channels,
    _is_pathlike,
    _is_pil,
    _open_image,
    _pil_to_unit,
    _resize_unit,
    _to_model_input,
)
from nasforge.export.to_onnx import (
    MIN_OPSET,
    ONNX_ATOL,
    OnnxExport,
    _export_once,
    _max_opset,
    _onnx_check,
    _quiet_export,
    export_onnx,
)

__all__ = [
    "ARCH_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "FlipTTA",
    "ImageInput",
    "InputResize",
    "LoadedModel",
    "MIN_OPSET",
    "ONNX_ATOL",
    "ONNX_FILE",
    "OnnxExport",
    "Prediction",
    "SUMMARY_FILE",
    "TTA",
    "Top",
    "WEIGHTS_FILE",
    "export_onnx",
    "load",
    "model_dir",
    "save_best",
    "with_tta",
]
