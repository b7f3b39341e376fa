"""The names and places of the stage artifacts, in one module: the name each stage's manifest records
(its fingerprint scope in :data:`ferd.plan.graph.STAGES`) and the paths inside an artifact that another stage
reads. (The files of Algorithm 1's round state, ``student.safetensors`` and ``history.json``, are named in
:mod:`ferd.algorithm.round_state`, a run's ``metrics.json`` in :mod:`ferd.algorithm.run_dir`: the layer below.)"""

from __future__ import annotations

import os
from pathlib import Path

from ..plan.graph import BY_NAME
from ..data.pool import shard_file

TEACHER, SYNTHESIS, POOL, DISTILLATION, EVALUATION = (
    BY_NAME[name].scope for name in ("teacher-fetch", "synthesis", "pool-store", "distillation", "evaluation"))
TEACHER_DIR = BY_NAME["teacher-fetch"].subdir  # the teacher artifact in a stage layout, a `ferd run` or a comparison
POOL_INDEX = "pool.json"  # the pool artifact's index of every round's shard
SHARD_DIR = "shard"  # the synthesis artifact's FAE shard, partitioned as the pool (ferd.data.pool)
CLASS_WEIGHTS_FILE = "class_weights.json"  # p per epoch: synthesis, distillation and evaluation artifacts
REPORT_DIR, PLOTS_DIR = "eval", "plots"  # the evaluation's report (ferd.evaluation.quick), its DVC plot data
AA_REPORT_DIR = f"{REPORT_DIR}-aa"  # AutoAttack on its own subset: ferd.evaluation.quick names it after the report
LIVE_DIR = "live"  # the run's per-epoch curves in DVCLive (ferd.core.tracking), beside the stages' directories


def shard_path(synthesis_dir: str | os.PathLike[str], round_index: int) -> Path:
    """The FAE shard a synthesis artifact holds (the pool's partition layout, :mod:`ferd.data.pool`)."""
    return Path(synthesis_dir) / SHARD_DIR / shard_file(round_index)
