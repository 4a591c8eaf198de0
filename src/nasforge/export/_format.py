"""File names and format version of a model directory, shared by its writer and reader.

A module of its own so that :mod:`.modeldir` (which writes and loads the directory) and
:mod:`.predict` (whose :class:`LoadedModel` reads ``summary.json``) need not import each other.
"""

from __future__ import annotations

#: identifies an ``arch.json`` written by this module
FORMAT = "nasforge-model"
#: bumped whenever a reader of the previous format could not read the new one
FORMAT_VERSION = 1

ARCH_FILE = "arch.json"
WEIGHTS_FILE = "weights.safetensors"
ONNX_FILE = "model.onnx"
SUMMARY_FILE = "summary.json"
