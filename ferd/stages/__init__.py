"""The five stages of FERD as plain functions with typed inputs and outputs.

One code path, three front doors: ``ferd stage <name>`` (:mod:`ferd.cli.stage`, what
``dvc.yaml`` calls), the Kubeflow components in ``components/<stage>/`` and
:func:`ferd.algorithm.run_algorithm1` (``ferd run``) all run the same
``generation_round`` / ``distillation_round``.

=================  ===========================  ==============================================
stage              function                     output directory
=================  ===========================  ==============================================
teacher fetch      :func:`teacher_fetch`        ``teacher.safetensors``, ``model_card.json``
synthesis (r)      :func:`synthesis`            FAE shard, generator, p, scores, margins
pool storage (r)   :func:`pool_store`           the pool (Parquet partitioned by round)
distillation (r)   :func:`distillation`         student, optimiser, scheduler, RNG note
evaluation         :func:`evaluation`           ``metrics.json``, ``eval/`` report
=================  ===========================  ==============================================

Every output directory carries a ``manifest.json`` (:mod:`ferd.stages.artifacts`); every
input artifact is checked (stage, round, parameter fingerprint, sha256 of each file)
before it is used. :func:`run_stages` chains them in one process, as the DAG does.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import FerdConfig
from .artifacts import ArtifactError, config_from_text, params_fingerprint
from .evaluation import EvaluationArtifact, evaluation
from .rounds import (DistillationArtifact, PoolArtifact, SynthesisArtifact, distillation, pool_store, shard_path,
                     synthesis)
from .teacher_fetch import TeacherArtifact, load_teacher, teacher_fetch

STAGES = ("teacher-fetch", "synthesis", "pool-store", "distillation", "evaluation")


def run_stages(cfg: FerdConfig, out_dir: str | os.PathLike[str], *, evaluate: bool = True,
               progress: bool = False) -> dict[str, Path]:
    """Every stage in order, each into its own directory under ``out_dir`` (``teacher/``,
    ``round-<r>/{synthesis,pool,distillation}/``, ``evaluation/``); what the DAG runs. With
    ``storage.uri`` each artifact is also published there as soon as it is written."""
    from .io import StageIO

    io = StageIO(cfg)

    def done(path: Path) -> Path:
        io.publish(path)
        return path

    out = Path(out_dir)
    teacher = done(teacher_fetch(cfg, io.output(out / "teacher"), progress=progress).dir)
    synth = pool = student = None
    for r in range(cfg.num_rounds):
        d = out / f"round-{r}"
        new_synth = done(synthesis(cfg, r, teacher, io.output(d / "synthesis"), student_dir=student,
                                   previous_dir=synth, progress=progress).dir)
        pool = done(pool_store(cfg, r, new_synth, io.output(d / "pool"), previous_dir=pool).dir)
        student = done(distillation(cfg, r, teacher, new_synth, pool, io.output(d / "distillation"),
                                    previous_dir=student, progress=progress).dir)
        synth = new_synth
    paths = {"teacher": teacher, "synthesis": synth, "pool": pool, "student": student}
    if evaluate:
        paths["evaluation"] = done(evaluation(cfg, teacher, student, io.output(out / "evaluation"),
                                              progress=progress).dir)
    return paths


__all__ = ["STAGES", "ArtifactError", "DistillationArtifact", "EvaluationArtifact", "PoolArtifact",
           "SynthesisArtifact", "TeacherArtifact", "config_from_text", "distillation", "evaluation",
           "load_teacher", "params_fingerprint", "pool_store", "run_stages", "shard_path",
           "synthesis", "teacher_fetch"]
