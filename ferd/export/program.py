"""The exported program: the student as a ``torch.export`` program (``model.pt2``), normalisation inside.

Input contract: float32 images in [0, 1], NCHW, ``(N, 3, H, W)`` with the dataset's ``H = W`` and any batch
size N ≥ 1; output: ``(N, num_classes)`` logits. A ferd model normalises inside (:class:`ferd.models.Normalize`
is its first op), so the program does too: feed it raw pixels. ``torch.jit.script`` fails on ferd's models and
``torch.jit.trace`` freezes control flow silently; ``torch.export`` captures the whole graph or refuses.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from torch import nn

from ..core.checkpoint import atomic_write_bytes

PROGRAM_FILE = "model.pt2"
BATCH = "batch"  # the one dynamic dimension, named so in the ONNX graph too


def input_contract(image_size: int) -> dict:
    """What the exported program (and the ONNX graph) takes and returns, as the model card states it."""
    return {"layout": "NCHW", "dtype": "float32", "range": [0.0, 1.0], "shape": [BATCH, 3, image_size, image_size],
            "normalisation": "inside the model (feed raw pixels in [0, 1])", "output": [BATCH, "num_classes"],
            "output_kind": "logits"}


def export_program(model: nn.Module, image_size: int) -> torch.export.ExportedProgram:
    """``model`` (eval mode, on the CPU) as a program with a dynamic batch dimension. The example input, which
    ``model.pt2`` stores, is fixed (zeros: a pixel value in [0, 1]), and the capture runs on a seeded copy of the
    global RNG, so the same student gives the same bytes."""
    example = torch.zeros(2, 3, image_size, image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim(BATCH)},))


def save_program(program: torch.export.ExportedProgram, path: str | os.PathLike[str]) -> Path:
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def load_program(path: str | os.PathLike[str]) -> nn.Module:
    """The exported program as a callable module (what a consumer does: ``torch.export.load(p).module()``)."""
    return torch.export.load(str(path)).module()
