"""The ONNX graph of the exported program (``model.onnx``): the optional ``onnx`` extra.

``torch.onnx.export`` (the dynamo exporter, from the ``torch.export`` program) needs ``onnxscript`` and
``onnx``, which the core install does not bring: :func:`require_exporter` raises ``ModuleNotFoundError`` naming
the missing module, which :func:`ferd.core.extras.missing_extra` turns into ``pip install 'ferd[onnx]'``.
"""

from __future__ import annotations

import importlib
import logging
import os

import torch

from ..core.checkpoint import atomic_write_bytes
from .program import BATCH

ONNX_FILE = "model.onnx"
OPSET = 20
INPUT_NAME, OUTPUT_NAME = "images", "logits"


def require_exporter() -> None:
    """Import what the ONNX exporter needs, or raise ``ModuleNotFoundError`` naming the first module missing."""
    for name in ("onnx", "onnxscript"):
        importlib.import_module(name)


def save_onnx(program: torch.export.ExportedProgram, path: str | os.PathLike[str]) -> None:
    """``program`` as an ONNX graph (opset :data:`OPSET`; input ``images``, output ``logits``, batch dynamic)."""
    require_exporter()
    for name in ("onnxscript", "onnx_ir"):  # their optimiser logs every pass at INFO
        logging.getLogger(name).setLevel(logging.WARNING)
    graph = torch.onnx.export(program, dynamo=True, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes=({0: BATCH},), opset_version=OPSET, verbose=False)
    atomic_write_bytes(path, graph.model_proto.SerializeToString())
