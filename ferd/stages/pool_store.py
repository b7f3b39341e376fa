"""Stage 3, FAE pool storage: add round r's shard to the pool (Algorithm 1 line 11).

In: the synthesis artifact of r; for r > 0 the pool artifact of r−1. Out: the pool after round r as
an index, ``pool.json``, plus the one shard the round adds, ``round=<r>/part-0.parquet``
(:mod:`ferd.data.pool`). Storage grows linearly with the rounds: the index names where every earlier shard
lives (the pool artifact of its round, by a path relative to this one) and pins it by sha256, so pool r
is the pool D after round r without holding a copy of rounds 0…r−1. :func:`load_pool` follows the index
and checks every shard; a shard whose artifact is not on this machine (another Kubeflow pod, a fresh
cache of an ``s3://`` run) is fetched from the object store the local path mirrors (:func:`ferd.stages.io.remote_of`).
Kept in place (``--previous`` = ``--out``) the pool is one directory holding every shard.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..core.checkpoint import copy_file, sha256_file
from ..settings.config import FerdConfig
from ..data.pool import FaePool, partition, read_shard, shard_file
from ..core.provenance import utc_now
from .io import StageIO
from .artifacts import (ArtifactError, StageArtifact, check_inputs, read_json, round_epochs, write_json,
                        write_manifest)
from .executor import InProcess
from .layout import POOL, POOL_INDEX, shard_path

log = logging.getLogger(__name__)

HERE = "."  # an index entry for a shard this artifact holds itself
PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class PoolArtifact(StageArtifact):
    round: int
    rounds: list[int]
    rows: int


def pool_store(cfg: FerdConfig, out_dir: PathLike, *, round_index: int, synthesis: PathLike,
               previous: PathLike | None = None, progress: bool = False) -> PoolArtifact:
    """Add the round's shard to the pool. Idempotent: the round's partition is replaced, never duplicated;
    partitions of later rounds (left by an earlier run in the same directory) are removed, so the result
    is the pool after round r. The previous pool's shards are referenced, not copied or read."""
    started = utc_now()
    round_epochs(cfg, round_index)
    manifests = check_inputs(cfg, "pool-store", round_index, out_dir, synthesis=synthesis, previous=previous)
    src = shard_path(synthesis, round_index)
    shard = read_shard(src)  # validates the schema and the round before anything is written
    if shard.round != round_index:
        raise ArtifactError(f"synthesis: {src} holds round {shard.round}, expected {round_index}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries: list[dict] = []
    if previous is not None:
        previous = Path(previous)
        # in place (the previous pool is the output directory, e.g. a pool kept at one path) the
        # directory may already hold this round or later ones, from an earlier run: replaced below
        in_place = previous.resolve() == out.resolve()
        prev = manifests["previous"]
        if prev.get("pool_rounds", [])[:round_index] != list(range(round_index)) or prev["round"] < round_index - 1:
            raise ArtifactError(f"previous pool: {previous} holds rounds {prev.get('pool_rounds')}, "
                                f"expected 0..{round_index - 1}")
        entries = [e for e in pool_index(previous) if e["round"] < round_index]
        if not in_place:
            moved = os.path.relpath(previous.resolve(), out.resolve())
            entries = [{**e, "dir": os.path.normpath(os.path.join(moved, e["dir"]))} for e in entries]
    target = out / shard_file(round_index)
    copy_file(src, target)
    entries.append({"round": round_index, "dir": HERE, "sha256": sha256_file(target), "rows": len(shard.labels)})
    kept_here = {partition(e["round"]) for e in entries if e["dir"] == HERE}
    for stale in out.glob(partition("*")):
        if stale.name not in kept_here:
            log.warning("pool: removing %s, left by another round of an earlier run", stale)
            shutil.rmtree(stale)
    rounds, total = [e["round"] for e in entries], sum(e["rows"] for e in entries)
    if rounds != list(range(round_index + 1)):
        raise ArtifactError(f"pool: {out} holds rounds {rounds} after round {round_index}; expected 0..{round_index}")
    write_json(out / POOL_INDEX, {"rounds": rounds, "rows": {str(e["round"]): e["rows"] for e in entries},
                                  "total_rows": total, "shards": entries,
                                  "layout": f"{shard_file('<r>')} under each shard's dir (relative to this "
                                            "artifact; '.' = here)",
                                  "columns": pool_columns(out, round_index)})
    write_manifest(out, POOL, cfg, round_index=round_index, started=started,
                   inputs={"synthesis": synthesis, "previous": previous},
                   extra={"pool_rounds": rounds, "rows": total})
    return PoolArtifact(out, round_index, rounds, total)


def step(ctx: InProcess, round_index: int, inputs: dict) -> FaePool:
    """The stage in memory (``ferd run``, :mod:`ferd.stages.executor`): the pool after the round."""
    ctx.state.pool.append(inputs["synthesis"])
    return ctx.state.pool


def pool_index(pool_dir: PathLike) -> list[dict]:
    """The shard entries of a pool artifact's index (round, dir, sha256, rows); a pool written before the
    index named its shards holds them all itself."""
    where = Path(pool_dir) / POOL_INDEX
    index = read_json(where)
    if isinstance(index, dict) and "shards" in index:
        shards = index["shards"]
    elif isinstance(index, dict) and isinstance(index.get("rows"), dict) and all(
            isinstance(r, str) and r.isdigit() for r in index["rows"]):
        shards = [{"round": int(r), "dir": HERE, "sha256": sha256_file(Path(pool_dir) / shard_file(int(r))),
                   "rows": n} for r, n in sorted(index["rows"].items(), key=lambda kv: int(kv[0]))]
    else:
        raise ArtifactError(f"{where}: expected a JSON object with a 'shards' list")
    if not isinstance(shards, list):
        raise ArtifactError(f"{where}: shards: expected a list")
    for i, e in enumerate(shards):
        if not (isinstance(e, dict) and type(e.get("round")) is int and e["round"] >= 0
                and isinstance(e.get("dir"), str) and e["dir"] and isinstance(e.get("sha256"), str)
                and type(e.get("rows")) is int and e["rows"] >= 0):
            raise ArtifactError(f"{where}: shards[{i}]: expected round (≥ 0), dir, sha256 and rows (≥ 0)")
    return list(shards)


def load_pool(cfg: FerdConfig, pool_dir: PathLike) -> FaePool:
    """The pool a pool artifact stands for: every shard its index names, each checked against its sha256
    (its artifact fetched first from the object store when it is not here: :meth:`StageIO.mirrored`)."""
    pool_dir, pool, io = Path(pool_dir), FaePool(), StageIO(cfg)
    for e in pool_index(pool_dir):
        where = Path(os.path.normpath(pool_dir / e["dir"]))
        if not (where / shard_file(e["round"])).is_file():
            where = io.mirrored(where) or where
        path = where / shard_file(e["round"])
        if not path.is_file():
            raise ArtifactError(f"pool: shard of round {e['round']} not found at {path} (named by "
                                f"{pool_dir / POOL_INDEX}); keep every round's pool artifact, or give the "
                                "pool as its s3:// URI")
        if sha256_file(path) != e["sha256"]:
            raise ArtifactError(f"pool: {path} does not match the sha256 pinned by {pool_dir / POOL_INDEX}")
        pool.append(read_shard(path))
    return pool


def pool_columns(pool_dir: Path, round_index: int) -> dict[str, str]:
    """Column name → Arrow type of the pool's Parquet files."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(pool_dir / shard_file(round_index))
    return {f.name: str(f.type) for f in schema}
