"""The names and places of the stage artifacts, in one module: the name each stage's manifest records
(its fingerprint scope in :data:`ferd.plan.graph.STAGES`) and the paths inside an artifact that another stage
reads."""

from __future__ import annotations

import os
from pathlib import Path

from ..plan.graph import BY_NAME
from ..data.pool import shard_file

TEACHER, SYNTHESIS, POOL, DISTILLATION, EVALUATION = (
    BY_NAME[name].scope for name in ("teacher-fetch", "synthesis", "pool-store", "distillation", "evaluation"))
POOL_INDEX = "pool.json"  # the pool artifact's index of every round's shard


def shard_path(synthesis_dir: str | os.PathLike[str], round_index: int) -> Path:
    """The FAE shard a synthesis artifact holds (the pool's partition layout, :mod:`ferd.data.pool`)."""
    return Path(synthesis_dir) / "shard" / shard_file(round_index)
