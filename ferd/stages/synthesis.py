"""Stage 2, synthesis with reweighting: the generation stage of round r (Algorithm 1 lines 6-12 for each
of the round's epochs, ``cfg.round_schedule[r]``).

In: the teacher; for r > 0 the distillation artifact of r−1 (student, history) and the synthesis
artifact of r−1 (generator, p, scores). It loads them into :meth:`ferd.algorithm.round_state.RunState.initial`
and runs the same :func:`ferd.algorithm.rounds.generation_round` as ``ferd run``.

Out: ``shard/round=<r>/part-0.parquet`` (the round's FAEs); the generation part of the round state
(:mod:`ferd.algorithm.round_state`: ``generator.pt``, ``reweighting.pt`` with p, scores and, for the reader, p at
generation and the per-sample margins and labels of every epoch); ``class_weights.json`` (the same,
readable); ``samples.png`` (the round's kept images, a row per class, at most 20: :mod:`ferd.synthesis.samples`);
``history.json``; the manifest lists the round's synthesis figures (diversity within
labels, teacher confidence and accuracy, FAE mask fraction) per epoch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..compute import distributed
from ..algorithm.rounds import collapse_warnings, generation_round
from ..settings.config import FerdConfig
from ..core.dataset_catalog import dataset_info
from ..synthesis.samples import SAMPLES_FILE, write_grid
from ..compute.numerics import saving_debug_batch
from ..data.pool import Shard, write_shard
from ..algorithm.round_state import class_weights, load_generation, load_history, load_student, save_generation, save_history
from ..synthesis.diversity import synthesis_rows
from ..core.tracking import live_tracker
from .artifacts import RoundArtifact, write_json, write_manifest
from .executor import InProcess
from .layout import CLASS_WEIGHTS_FILE, SHARD_DIR, SYNTHESIS, shard_path
from .round_start import start_round

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class SynthesisArtifact(RoundArtifact):
    shard: Path
    rows: int
    p: list[float]


def synthesis(cfg: FerdConfig, out_dir: PathLike, *, round_index: int, teacher: PathLike,
              student: PathLike | None = None, previous: PathLike | None = None,
              progress: bool = False, live: PathLike | None = None) -> SynthesisArtifact:
    """The generation stage of round ``round_index``; ``live``: a DVCLive directory for its curves
    (:mod:`ferd.core.tracking`)."""
    start = start_round(cfg, "synthesis", round_index, out_dir, teacher=teacher, student=student, previous=previous)
    started, epochs, teacher_model, state = start.started, start.epochs, start.teacher, start.state
    if round_index > 0:
        load_student(state, student)
        load_generation(state, previous)
        load_history(state, student)
    per_sample: list[dict] = []
    tracker = live_tracker(live, state.history) if distributed.is_main() else None
    with saving_debug_batch(out_dir):
        shard = generation_round(state, teacher_model, round_index, epochs, progress=progress, per_sample=per_sample,
                                 on_epoch=tracker)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_shard(shard, out / SHARD_DIR)
    write_grid(out / SAMPLES_FILE, shard.images, shard.labels, dataset_info(cfg.dataset).class_names)
    new = [h for h in state.history if h["round"] == round_index]
    save_generation(state, out, round=round_index, epochs=torch.tensor(list(epochs), dtype=torch.int64),
                    p_generation=torch.tensor([h["p_generation"] for h in new], dtype=torch.float64),
                    margin_epochs=torch.tensor([m["epoch"] for m in per_sample], dtype=torch.int64),
                    margin_labels=[m["labels"] for m in per_sample], margins=[m["values"] for m in per_sample])
    by_epoch = {m["epoch"]: m for m in per_sample}
    write_json(out / CLASS_WEIGHTS_FILE, [{**c, "margin_by_class": _margin_by_class(by_epoch.get(c["epoch"]),
                                                                                      cfg.num_classes)}
                                          for c in class_weights(new)])
    save_history(state, out)
    write_manifest(out, SYNTHESIS, cfg, round_index=round_index, started=started,
                   inputs={"teacher": teacher, "student": student, "previous": previous},
                   extra={"epochs": [epochs.start, epochs.stop], "rows": len(shard.labels),
                          "warnings": collapse_warnings(new), "synthesis": synthesis_rows(new)})
    return SynthesisArtifact(out, round_index, epochs, shard_path(out, round_index), len(shard.labels),
                             state.p.tolist())


def step(ctx: InProcess, round_index: int, inputs: dict) -> Shard:
    """The stage in memory (``ferd run``, :mod:`ferd.stages.executor`): the round's shard."""
    state = ctx.state
    return generation_round(state, inputs["teacher"], round_index, state.cfg.round_schedule[round_index],
                            progress=ctx.progress, on_epoch=ctx.on_epoch)


def _margin_by_class(m: dict | None, num_classes: int) -> list[float | None] | None:
    """The mean per-sample value (margin, or least PGD steps) of each class in the epoch's batch."""
    if m is None:
        return None
    values, labels = m["values"].double(), m["labels"]
    return [float(values[labels == c].mean()) if bool((labels == c).any()) else None for c in range(num_classes)]
