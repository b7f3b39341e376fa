"""Stage 3, FAE pool storage: append round r's shard to the pool (Algorithm 1 line 11).

In: the synthesis artifact of r; for r > 0 the pool artifact of r−1. Out: the pool after round r,
``round=<k>/part-0.parquet`` for k = 0..r (:mod:`ferd.pool`), ``pool.json``.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import copy_file
from ..config import FerdConfig
from ..pool import FaePool, read_shard
from ..provenance import utc_now
from .artifacts import (ArtifactError, StageArtifact, check_previous, read_manifest, round_epochs, write_json,
                        write_manifest)
from .synthesis import STAGE as SYNTHESIS, shard_path

log = logging.getLogger(__name__)

STAGE = "pool"
POOL_INDEX = "pool.json"
PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class PoolArtifact(StageArtifact):
    round: int
    rounds: list[int]
    rows: int


def pool_store(cfg: FerdConfig, out_dir: PathLike, *, round_index: int, synthesis: PathLike,
               previous: PathLike | None = None, progress: bool = False) -> PoolArtifact:
    """Append the round's shard to the pool (Parquet, partitioned by round). Idempotent: the
    round's partition is replaced, never duplicated; partitions of later rounds (left by an
    earlier run in the same directory) are removed, so the result is the pool after round r."""
    started = utc_now()
    round_epochs(cfg, round_index)
    check_previous(round_index, "previous pool", previous)
    read_manifest(synthesis, SYNTHESIS, cfg, round_index=round_index, what="synthesis")
    src = shard_path(synthesis, round_index)
    shard = read_shard(src)  # validates the schema and the round before anything is written
    if shard.round != round_index:
        raise ArtifactError(f"synthesis: {src} holds round {shard.round}, expected {round_index}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if previous is not None:
        previous = Path(previous)
        # in place (the previous pool is the output directory, e.g. a pool kept at one path) the
        # directory may already hold this round or later ones, from an earlier run: replaced below
        in_place = previous.resolve() == out.resolve()
        prev = read_manifest(previous, STAGE, cfg, round_index=None if in_place else round_index - 1,
                             what="previous pool")
        if prev.get("pool_rounds", [])[:round_index] != list(range(round_index)) or prev["round"] < round_index - 1:
            raise ArtifactError(f"previous pool: {previous} holds rounds {prev.get('pool_rounds')}, "
                                f"expected 0..{round_index - 1}")
        if not in_place:
            for k in range(round_index):
                rel = Path(f"round={k}") / "part-0.parquet"
                copy_file(previous / rel, out / rel)
    copy_file(src, out / f"round={round_index}" / "part-0.parquet")
    for stale in out.glob("round=*"):
        if int(stale.name.split("=", 1)[1]) > round_index:
            log.warning("pool: removing %s, left by a later round of an earlier run", stale)
            shutil.rmtree(stale)
    pool = FaePool.load(out)
    if pool.rounds != list(range(round_index + 1)):
        raise ArtifactError(f"pool: {out} holds rounds {pool.rounds} after round {round_index}; expected "
                            f"0..{round_index}")
    rows = {str(k): int(pool.shard(k).labels.shape[0]) for k in pool.rounds}
    write_json(out / POOL_INDEX, {"rounds": pool.rounds, "rows": rows, "total_rows": len(pool),
                                  "layout": "round=<r>/part-0.parquet", "columns": pool_columns(out, round_index)})
    write_manifest(out, STAGE, cfg, round_index=round_index, started=started,
                   inputs={"synthesis": synthesis, "previous": previous},
                   extra={"pool_rounds": pool.rounds, "rows": len(pool)})
    return PoolArtifact(out, round_index, pool.rounds, len(pool))


def pool_columns(pool_dir: Path, round_index: int) -> dict[str, str]:
    """Column name → Arrow type of the pool's Parquet files."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(pool_dir / f"round={round_index}" / "part-0.parquet")
    return {f.name: str(f.type) for f in schema}
