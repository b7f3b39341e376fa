"""Stage 4, UTAE distillation: the distillation stage of round r (Algorithm 1 lines 13-17 for each of
the round's epochs, ``cfg.round_schedule[r]``).

In: the teacher, the synthesis artifact of r (history), the pool artifact of r; for r > 0 the
distillation artifact of r−1 (student, optimiser, scheduler). It runs the same
:func:`ferd.algorithm.rounds.distillation_round` as ``ferd run``.

Out: the distillation part of the round state (:mod:`ferd.algorithm.round_state`: ``student.safetensors``,
``trainer.pt`` with the SGD and LR-scheduler state), ``rng.json`` (the seed and next epoch every stream
is derived from), ``history.json``, ``class_weights.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..compute import distributed
from ..algorithm.rounds import distillation_round
from ..settings.config import FerdConfig
from ..models import FerdModel
from ..compute.numerics import saving_debug_batch
from ..core.tracking import live_tracker
from ..algorithm.round_state import STUDENT_FILE, class_weights, load_distillation, load_history, save_distillation, save_history
from ..core.checkpoint import read_metadata
from .artifacts import (MANIFEST, ArtifactError, RoundArtifact, read_json, write_json,
                        write_manifest)
from .executor import InProcess
from .layout import CLASS_WEIGHTS_FILE, DISTILLATION
from .pool_store import load_pool
from .round_start import start_round

RNG_STREAMS = ("labels", "latent", "bottleneck", "generator", "reweight", "pool-sample", "utae", "augment")
PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class DistillationArtifact(RoundArtifact):
    student: Path
    complete: bool  # the last round: the student is Algorithm 1's output
    losses: dict[int, dict]


def distillation(cfg: FerdConfig, out_dir: PathLike, *, round_index: int, teacher: PathLike, synthesis: PathLike,
                 pool: PathLike, previous: PathLike | None = None, progress: bool = False,
                 live: PathLike | None = None) -> DistillationArtifact:
    """The distillation stage of round ``round_index``; ``live``: a DVCLive directory for its curves
    (:mod:`ferd.core.tracking`)."""
    start = start_round(cfg, "distillation", round_index, out_dir, teacher=teacher, synthesis=synthesis, pool=pool,
                        previous=previous)
    started, epochs, teacher_model, card, state = (start.started, start.epochs, start.teacher, start.card,
                                                   start.state)
    if round_index > 0:
        load_distillation(state, previous)
    load_history(state, synthesis)
    state.pool = load_pool(cfg, pool)
    if state.pool.rounds != list(range(round_index + 1)):
        raise ArtifactError(f"pool: {pool} holds rounds {state.pool.rounds}, expected 0..{round_index}")
    tracker = live_tracker(live, state.history) if distributed.is_main() else None
    with saving_debug_batch(out_dir):
        distillation_round(state, teacher_model, epochs, progress=progress, on_epoch=tracker)
    state.next_round = round_index + 1

    out = Path(out_dir)
    complete = state.next_round == cfg.num_rounds
    save_distillation(state, out, metadata={"arch": cfg.student.arch, "num_classes": str(cfg.num_classes),
                                            "teacher_sha256": card["sha256"], "round": str(round_index),
                                            "complete": str(complete).lower()},
                      round=round_index, next_epoch=epochs.stop)
    write_json(out / "rng.json", {"seed": cfg.seed, "next_epoch": epochs.stop, "streams": list(RNG_STREAMS),
                                  "derivation": "ferd.core.rng.derive_seed(seed, stream, epoch): no generator state "
                                                "crosses a round; the next round derives its streams from the "
                                                "seed and its epochs"})
    save_history(state, out)
    write_json(out / CLASS_WEIGHTS_FILE, class_weights(state.history))
    write_manifest(out, DISTILLATION, cfg, round_index=round_index, started=started,
                   inputs={"teacher": teacher, "synthesis": synthesis, "pool": pool, "previous": previous},
                   extra={"epochs": [epochs.start, epochs.stop], "next_round": state.next_round,
                          "complete": complete})
    losses = {h["epoch"]: h.get("distill", {}) for h in state.history if h["epoch"] in epochs}
    return DistillationArtifact(out, round_index, epochs, out / STUDENT_FILE, complete, losses)


def student_card(directory: PathLike) -> dict:
    """What a distillation artifact says of its student (for a Kubeflow ``Model``'s metadata): ``arch``,
    ``num_classes`` and ``teacher_sha256`` as the student file's metadata records them, ``method`` and
    ``dataset`` as its manifest's parameters do."""
    d = Path(directory)
    made, params = read_metadata(d / STUDENT_FILE), read_json(d / MANIFEST).get("params", {})
    missing = [k for k in ("arch", "num_classes", "teacher_sha256") if k not in made]
    missing += [f"params.{k}" for k in ("method", "dataset") if k not in params]
    if missing:
        raise ArtifactError(f"{d}: the distillation artifact records no {', '.join(missing)}")
    return {"arch": made["arch"], "num_classes": int(made["num_classes"]), "teacher_sha256": made["teacher_sha256"],
            "method": params["method"], "dataset": params["dataset"]}


def step(ctx: InProcess, round_index: int, inputs: dict) -> FerdModel:
    """The stage in memory (``ferd run``, :mod:`ferd.stages.executor`): the student after the round."""
    state = ctx.state
    distillation_round(state, inputs["teacher"], state.cfg.round_schedule[round_index], progress=ctx.progress,
                       on_epoch=ctx.on_epoch)
    return state.student
