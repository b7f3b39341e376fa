"""Stage 1, teacher fetch: a verified teacher checkpoint plus its model card.

Every kind of ``teacher.source`` (train, local file, URL, S3, RobustBench) is
:func:`ferd.algorithm.teacher_source.obtain_teacher`'s, the same as ``ferd run`` and ``ferd compare`` use.

Output directory: ``teacher.safetensors`` (the state_dict, normalised and checked against
``teacher.arch`` / ``num_classes``, NaN/Inf refused), ``model_card.json`` (arch,
num_classes, mean, std, sha256 of ``teacher.safetensors``, source, and the source file's
sha256), ``manifest.json``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..compute.switches import set_memory_format
from ..settings.config import FerdConfig
from ..core.provenance import utc_now
from ..models import FerdModel
from ..models.loading import load_model
from ..algorithm.teacher_source import CARD_NAME, CHECKPOINT_NAME, obtain_teacher
from .executor import InProcess
from .layout import TEACHER, TEACHER_DIR
from .artifacts import ArtifactError, read_json, read_manifest, write_manifest

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class TeacherArtifact:
    dir: Path
    checkpoint: Path
    model_card: Path
    card: dict

    def summary(self) -> dict:
        return {"dir": str(self.dir), "checkpoint": str(self.checkpoint), "sha256": self.card["sha256"],
                "source": self.card["source"], "arch": self.card["arch"]}


def teacher_fetch(cfg: FerdConfig, out_dir: str | os.PathLike[str], *, progress: bool = False) -> TeacherArtifact:
    """Fetch (or train) the teacher named by ``cfg.teacher.source`` into ``out_dir``."""
    started = utc_now()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _, card = obtain_teacher(cfg, out, progress=progress)
    write_manifest(out, TEACHER, cfg, started=started, extra={"source": cfg.teacher.source, "sha256": card["sha256"]})
    return TeacherArtifact(out, out / CHECKPOINT_NAME, out / CARD_NAME, card)


def load_teacher(cfg: FerdConfig, teacher_dir: str | os.PathLike[str]) -> tuple[FerdModel, dict]:
    """The teacher of a teacher artifact on ``cfg.device``: checked, eval mode, frozen."""
    read_manifest(teacher_dir, TEACHER, cfg, what="teacher")
    d = Path(teacher_dir)
    card = read_json(d / CARD_NAME)
    if card.get("arch") != cfg.teacher.arch or card.get("num_classes") != cfg.num_classes:
        raise ArtifactError(f"teacher: {d} holds a {card.get('arch')} with {card.get('num_classes')} classes, "
                            f"expected {cfg.teacher.arch} with {cfg.num_classes}")
    model = load_model(d / card.get("checkpoint", CHECKPOINT_NAME), card["arch"], card["num_classes"],
                       card.get("mean"), card.get("std"), sha256=card["sha256"])
    return model.to(cfg.device).eval().requires_grad_(False), card


def step(ctx: InProcess, round_index: None, inputs: dict) -> FerdModel:
    """The stage in memory (``ferd run``, :mod:`ferd.stages.executor`): the teacher, obtained into
    ``<out>/teacher`` (reused when its model card matches), on the device, frozen, in the run's memory format."""
    cfg = ctx.state.cfg
    teacher, ctx.card = obtain_teacher(cfg, ctx.out / TEACHER_DIR, progress=ctx.progress)
    return set_memory_format(teacher.to(cfg.device).eval().requires_grad_(False), cfg.compute.channels_last)


__all__ = ["TeacherArtifact", "load_teacher", "step", "teacher_fetch"]
