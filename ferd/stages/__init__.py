"""The five stages of FERD: one module each, one function each, one signature.

One code path, three front doors: ``ferd stage <name>`` (:mod:`ferd.cli.stage`, what
``dvc.yaml`` calls), the Kubeflow components in ``components/<stage>/`` and ``ferd run``
(:mod:`ferd.stages.run`: the whole graph in one process, each stage by its module's ``step`` on the
in-memory round state) all run the same ``generation_round`` /
``distillation_round`` on the same round state (:mod:`ferd.algorithm.round_state`).

=================  ==================================  ==============================================
stage              function                            output directory
=================  ==================================  ==============================================
teacher fetch      :func:`.teacher_fetch.teacher_fetch`  ``teacher.safetensors``, ``model_card.json``
synthesis (r)      :func:`.synthesis.synthesis`          FAE shard, generator, p, scores, margins
pool storage (r)   :func:`.pool_store.pool_store`        the pool (Parquet partitioned by round)
distillation (r)   :func:`.distillation.distillation`    student, optimiser, scheduler, RNG note
evaluation         :func:`.evaluation.evaluation`        ``metrics.json``, ``eval/`` report
=================  ==================================  ==============================================

Every stage is ``ferd.stages.<component>.<component>(cfg, out_dir, *, [round_index,] <inputs>,
progress)``, its inputs named as in the graph (:mod:`ferd.plan.graph`), so :func:`run_task` runs any stage
the graph declares: a new stage is its module here and its entry in the graph (on Kubeflow the generic
``components/stage`` runs it until it gets a component folder of its own).
Every output directory carries a ``manifest.json`` (:mod:`ferd.stages.artifacts`); every input
artifact is checked (stage, round, parameter fingerprint, sha256 of each file) before it is used.
:func:`run_stages` chains them in one process, as the DAG does.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from ..settings.config import FerdConfig
from ..plan import graph
from ..plan.graph import Stage, unroll
from ..core.checkpoint import atomic_write_json
from .artifacts import (MANIFEST, RUN_TIME_PARAMS, ArtifactError, config_from_text, node_overrides, params_fingerprint,
                        run_time_overrides, run_time_values)
from .distillation import DistillationArtifact, distillation, student_card
from .evaluation import EvaluationArtifact, evaluation
from .executor import execute
from .pool_store import PoolArtifact, pool_store
from .layout import shard_path
from .synthesis import SynthesisArtifact, synthesis
from .teacher_fetch import TeacherArtifact, load_teacher, teacher_fetch

Artifact = TeacherArtifact | SynthesisArtifact | PoolArtifact | DistillationArtifact | EvaluationArtifact
PathLike = str | os.PathLike[str]


def _stage_module(stage: Stage):
    return importlib.import_module(f"{__name__}.{stage.component}")


def stage_function(stage: Stage) -> Callable[..., Artifact]:
    """``ferd.stages.<component>.<component>``: the function that runs ``stage``."""
    return getattr(_stage_module(stage), stage.component)


def stage_step(stage: Stage) -> Callable[..., object]:
    """``ferd.stages.<component>.step(ctx, round_index, inputs)``: the stage on the in-memory round state
    (:class:`ferd.stages.executor.InProcess`), as ``ferd run`` runs it (:mod:`ferd.stages.run`)."""
    module = _stage_module(stage)
    if not hasattr(module, "step"):
        raise NotImplementedError(f"stage {stage.name}: {module.__name__} has no in-process step for `ferd run`")
    return module.step


def run_task(cfg: FerdConfig, stage: str, round_index: int | None, inputs: dict[str, PathLike | None],
             out_dir: PathLike, progress: bool = False, live: PathLike | None = None) -> Artifact:
    """Run one stage of the graph (:mod:`ferd.plan.graph`): ``inputs`` by the stage's input flags (``teacher``,
    ``student``, ``synthesis``, ``pool``, ``previous``; None where absent, as in round 0). ``live``: the DVCLive
    directory of a stage that tracks its epochs (``Stage.tracked``; :mod:`ferd.core.tracking`)."""
    if stage not in graph.BY_NAME:
        raise ValueError(f"stage: expected one of {list(graph.BY_NAME)}, got {stage!r}")
    st = graph.BY_NAME[stage]
    per_round = {"round_index": round_index} if st.per_round else {}
    if live is not None and not st.tracked:
        raise ValueError(f"--live: stage {stage} logs no epochs; only {[s.name for s in graph.STAGES if s.tracked]} do")
    tracking = {"live": live} if st.tracked else {}
    claimed = claim_output(cfg, st, round_index, out_dir, inputs.get("previous"))
    artifact = stage_function(st)(cfg, out_dir, **per_round, **{i.flag: inputs.get(i.flag) for i in st.inputs},
                                  progress=progress, **tracking)
    if claimed is not None:
        claimed.unlink(missing_ok=True)
    return artifact


TASK_MARKER = ".ferd-task.json"  # hidden: never listed in a manifest


def claim_output(cfg: FerdConfig, st: Stage, round_index: int | None, out_dir: PathLike,
                 previous: PathLike | None = None) -> Path | None:
    """Decide, before the stage writes anything, whether ``out_dir`` may receive this task's artifact: it
    is empty, or it holds this very task's artifact or its interrupted attempt (same stage, round and
    parameter fingerprint: rerun in place); anything else is another run's and is refused. Leaves a hidden
    marker naming the task (removed when the stage has finished) and returns its path; None for the pool
    kept in place (``--previous`` = ``--out``), which manages its own rounds."""
    out = Path(out_dir)
    if previous is not None and out.exists() and Path(previous).resolve() == out.resolve():
        return None
    mine = {"stage": st.scope, "round": round_index, "params_fingerprint": params_fingerprint(cfg, st.scope)}
    visible = [p for p in out.iterdir() if not p.name.startswith(".")] if out.is_dir() else []
    if visible:
        found = {}
        for name in (MANIFEST, TASK_MARKER):
            try:
                found = json.loads((out / name).read_text())
                break
            except (OSError, ValueError):
                continue
        if not isinstance(found, dict) or {k: found.get(k) for k in mine} != mine:
            what = (f"a {found.get('stage')} artifact (round {found.get('round')}) made with other parameters"
                    if isinstance(found, dict) and found.get("stage") else "files that are no ferd artifact")
            raise ArtifactError(f"out: {out} holds {what}; use an empty directory for this {st.name} stage")
    out.mkdir(parents=True, exist_ok=True)
    marker = out / TASK_MARKER
    atomic_write_json(marker, mine)
    return marker


def run_stages(cfg: FerdConfig, out_dir: str | os.PathLike[str], *, evaluate: bool = True,
               progress: bool = False) -> dict[str, Path]:
    """Every task of the unrolled graph in order (:func:`ferd.plan.graph.unroll`), each into its own directory
    under ``out_dir`` (``teacher/``, ``round-<r>/{synthesis,pool,distillation}/``, ``evaluation/``); what
    the DAG runs. With ``storage.uri`` each artifact is also published there as soon as it is written.
    Returns the last directory of each stage, by stage name (``teacher-fetch``, ``synthesis``, ``pool-store``,
    ``distillation``, ``evaluation``)."""
    from .io import StageIO

    io, out = StageIO(cfg), str(out_dir)
    tasks = [t for t in unroll(cfg.num_rounds) if evaluate or not t.stage.final]

    def run_one(task: graph.Task, inputs: dict) -> Path:
        artifact = run_task(cfg, task.stage.name, task.round, inputs, io.output(task.dir(out)), progress)
        io.publish(artifact.dir)
        return artifact.dir

    dirs = execute(tasks, run_one)
    return {t.stage.name: dirs[t.id] for t in tasks}


__all__ = ["Artifact", "ArtifactError", "DistillationArtifact", "EvaluationArtifact", "PoolArtifact",
           "RUN_TIME_PARAMS", "SynthesisArtifact", "TeacherArtifact", "config_from_text", "distillation", "evaluation",
           "load_teacher", "node_overrides", "params_fingerprint", "pool_store", "run_stages", "run_task", "run_time_overrides",
           "run_time_values", "shard_path", "stage_function", "stage_step", "student_card", "synthesis", "teacher_fetch"]
