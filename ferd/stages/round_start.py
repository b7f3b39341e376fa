"""What a per-round stage that trains does first: its inputs checked from the graph, the teacher loaded in the
run's memory format, and the initial round state of the resolved plan."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..compute.switches import set_memory_format
from ..settings.config import FerdConfig
from ..models import FerdModel
from ..plan.resolve import resolve
from ..core.provenance import utc_now
from ..algorithm.round_state import RunState
from .artifacts import check_inputs, round_epochs
from .teacher_fetch import load_teacher


@dataclass
class RoundStart:
    started: str  # when the stage began (its manifest's ``started``)
    epochs: range
    teacher: FerdModel
    card: dict  # the teacher's model card
    state: RunState


def start_round(cfg: FerdConfig, stage: str, round_index: int, out_dir: str | os.PathLike[str],
                **inputs: str | os.PathLike[str] | None) -> RoundStart:
    """``stage``'s round ``round_index``: inputs checked (:func:`.artifacts.check_inputs`) before any work."""
    started = utc_now()
    epochs = round_epochs(cfg, round_index)
    check_inputs(cfg, stage, round_index, out_dir, **inputs)
    teacher, card = load_teacher(cfg, inputs["teacher"])
    set_memory_format(teacher, cfg.compute.channels_last)
    return RoundStart(started, epochs, teacher, card, RunState.initial(resolve(cfg)))
