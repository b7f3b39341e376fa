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
from ..graph import STAGES, unroll
from .artifacts import ArtifactError, config_from_text, params_fingerprint
from .evaluation import EvaluationArtifact, evaluation
from .rounds import (DistillationArtifact, PoolArtifact, SynthesisArtifact, distillation, pool_store, shard_path,
                     synthesis)
from .teacher_fetch import TeacherArtifact, load_teacher, teacher_fetch

Artifact = TeacherArtifact | SynthesisArtifact | PoolArtifact | DistillationArtifact | EvaluationArtifact
PathLike = str | os.PathLike[str]


def run_task(cfg: FerdConfig, stage: str, round_index: int | None, inputs: dict[str, PathLike | None],
             out_dir: PathLike, progress: bool = False) -> Artifact:
    """Run one stage of the graph (:mod:`ferd.graph`): ``inputs`` by the stage's input flags (``teacher``,
    ``student``, ``synthesis``, ``pool``, ``previous``; None where absent, as in round 0)."""
    i, r = inputs, round_index
    if stage == "teacher-fetch":
        return teacher_fetch(cfg, out_dir, progress=progress)
    if stage == "synthesis":
        return synthesis(cfg, r, i["teacher"], out_dir, student_dir=i.get("student"), previous_dir=i.get("previous"),
                         progress=progress)
    if stage == "pool-store":
        return pool_store(cfg, r, i["synthesis"], out_dir, previous_dir=i.get("previous"))
    if stage == "distillation":
        return distillation(cfg, r, i["teacher"], i["synthesis"], i["pool"], out_dir, previous_dir=i.get("previous"),
                            progress=progress)
    if stage == "evaluation":
        return evaluation(cfg, i["teacher"], i["student"], out_dir, progress=progress)
    raise ValueError(f"stage: expected one of {[s.name for s in STAGES]}, got {stage!r}")


def run_stages(cfg: FerdConfig, out_dir: str | os.PathLike[str], *, evaluate: bool = True,
               progress: bool = False) -> dict[str, Path]:
    """Every task of the unrolled graph in order (:func:`ferd.graph.unroll`), each into its own directory
    under ``out_dir`` (``teacher/``, ``round-<r>/{synthesis,pool,distillation}/``, ``evaluation/``); what
    the DAG runs. With ``storage.uri`` each artifact is also published there as soon as it is written.
    Returns the last directory of each stage (``teacher``, ``synthesis``, ``pool``, ``student``,
    ``evaluation``)."""
    from .io import StageIO

    io, out, dirs = StageIO(cfg), str(out_dir), {}
    tasks = unroll(cfg.num_rounds)
    for task in tasks:
        if task.stage.name == "evaluation" and not evaluate:
            continue
        inputs = {inp.flag: dirs[producer] for inp, producer in task.inputs}
        artifact = run_task(cfg, task.stage.name, task.round, inputs, io.output(Path(task.dir(out))), progress)
        io.publish(artifact.dir)
        dirs[task.id] = artifact.dir
    last = {t.stage.subdir: dirs[t.id] for t in tasks if t.id in dirs}
    return {("student" if k == "distillation" else k): v for k, v in last.items()}


__all__ = ["Artifact", "ArtifactError", "DistillationArtifact", "EvaluationArtifact", "PoolArtifact",
           "SynthesisArtifact", "TeacherArtifact", "config_from_text", "distillation", "evaluation",
           "load_teacher", "params_fingerprint", "pool_store", "run_stages", "run_task", "shard_path",
           "synthesis", "teacher_fetch"]
