"""Numerical faults: a non-finite loss stops the stage and leaves everything needed to debug it.

:class:`NonFiniteLoss` carries the stage, epoch and iteration, the value of every loss term
and the offending batch. The stage that catches it saves them with :meth:`NonFiniteLoss.save`
to ``<output>/.debug/nonfinite-<stage>-e<epoch>-i<iteration>.pt`` (``torch.save`` of tensors
only: loads with ``torch.load(..., weights_only=True)``; a hidden folder, never part of an
artifact's manifest) and re-raises with the path in the message. Nothing is written under the
artifact's final names and no manifest is written, so no later stage can use the failed one.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from ..core.checkpoint import atomic_write_bytes

DEBUG_DIR = ".debug"


def autocast(amp: str, device: str | torch.device):
    """``torch.autocast`` to bfloat16 when ``amp == "bf16"`` (``compute.amp``), else a no-op context."""
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp == "bf16")


class NonFiniteLoss(FloatingPointError):
    def __init__(self, stage: str, epoch: int, iteration: int, terms: dict[str, float],
                 batch: dict[str, torch.Tensor]):
        self.stage, self.epoch, self.iteration = stage, epoch, iteration
        self.terms = {k: float(v) for k, v in terms.items()}
        self.batch = {k: v.detach().cpu() for k, v in batch.items()}
        self.debug_path: Path | None = None
        super().__init__(self._message())

    def _message(self) -> str:
        terms = ", ".join(f"{k}={v!r}" for k, v in self.terms.items())
        msg = (f"{self.stage}: the loss is not finite at epoch {self.epoch}, iteration {self.iteration} "
               f"(loss terms: {terms})")
        if self.debug_path is not None:
            msg += f"; the batch and the loss terms are saved in {self.debug_path}"
        return msg

    def __reduce__(self) -> tuple[type, tuple[str, ...]]:
        """Across a process boundary (``ferd compare --jobs``' workers) as a plain FloatingPointError with the
        message, debug file included: the batch stays in the file, and a class that cannot be rebuilt from its
        ``args`` would break the whole pool."""
        return FloatingPointError, self.args

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        path = Path(out_dir) / DEBUG_DIR / f"nonfinite-{self.stage}-e{self.epoch}-i{self.iteration}.pt"
        buf = io.BytesIO()
        torch.save({"stage": self.stage, "epoch": self.epoch, "iteration": self.iteration,
                    "terms": self.terms, **self.batch}, buf)
        atomic_write_bytes(path, buf.getvalue())
        self.debug_path = path
        self.args = (self._message(),)
        return path


@contextlib.contextmanager
def saving_debug_batch(out_dir: str | os.PathLike[str] | None) -> Iterator[None]:
    """Re-raise a :class:`NonFiniteLoss` from the block after saving its batch under ``out_dir``
    (nothing is saved when ``out_dir`` is None)."""
    try:
        yield
    except NonFiniteLoss as exc:
        if out_dir is not None:
            exc.save(out_dir)
        raise


def check_finite_loss(loss: torch.Tensor, stage: str, epoch: int, iteration: int, terms: dict[str, float],
                      batch: dict[str, torch.Tensor]) -> None:
    """Raise :class:`NonFiniteLoss` when ``loss`` (or any term) is NaN or ±Inf."""
    if bool(torch.isfinite(loss)) and all(math.isfinite(float(v)) for v in terms.values()):
        return
    raise NonFiniteLoss(stage, epoch, iteration, {**terms, "total": float(loss.detach())}, batch)
