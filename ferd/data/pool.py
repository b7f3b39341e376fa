"""The FAE pool D of Algorithm 1 (line 11: D ← D ∪ {x_F*}).

In memory the pool is a list of per-round shards, concatenated lazily; on disk it is a
Parquet dataset partitioned by round (``round=<r>/part-0.parquet``), one row per FAE:

=================  ==========================================================
column             content
=================  ==========================================================
image              float32 C×H×W, little-endian bytes (shape in schema metadata);
                   exact, no 8-bit quantisation (a pitfall of the datafree pool)
label              int64 y drawn from p at generation
round              int32, the round (DAG stage run) that made it
epoch              int32, the generation epoch that made it (= round when rounds = epochs)
index              int32, the row's position in its round
teacher_logits     list<float32>, f^T(x_F), computed once when the FAE enters the pool
class_weight       float64, p_y at generation time
utae               (only with ``distill.utae.cache: pool``) float32 K×C×H×W: the K
                   cached UTAEs of the FAE (Eq. 10 against the teacher), K in the
                   schema metadata
=================  ==========================================================

Appending a round that is already present replaces it, so re-running a round never
duplicates rows. Sampling draws indices uniformly with replacement from a seeded
generator (Fast / CMI sample uniformly from every image kept so far).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..core.checkpoint import atomic_path

SCHEMA_VERSION = "1"


@dataclass
class Shard:
    """The FAEs one round adds to the pool (one generation epoch each when rounds = epochs)."""

    round: int
    images: torch.Tensor          # N×C×H×W float32 in [0, 1]
    labels: torch.Tensor          # N int64
    teacher_logits: torch.Tensor  # N×K float32
    class_weight: torch.Tensor    # N float64
    epochs: torch.Tensor          # N int32: the generation epoch of each row
    utaes: torch.Tensor | None = None  # N×K×C×H×W float32: cached UTAEs (distill.utae.cache: pool)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        for name in ("labels", "teacher_logits", "class_weight", "epochs", *(("utaes",) if self.utaes is not None
                                                                              else ())):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"shard.{name}: expected {n} rows, got {getattr(self, name).shape[0]}")


class FaePool:
    """An ordered set of shards, one per round, with uniform sampling."""

    def __init__(self) -> None:
        self._shards: dict[int, Shard] = {}
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._utae_cache: torch.Tensor | None = None

    def append(self, shard: Shard) -> None:
        """Add (or replace) the shard of ``shard.round``."""
        self._shards[shard.round] = shard
        self._shards = dict(sorted(self._shards.items()))
        self._cache = self._utae_cache = None

    def drop_rounds_from(self, first: int) -> None:
        """Forget every round ≥ ``first`` (rounds a killed run wrote after its last checkpoint)."""
        self._shards = {r: s for r, s in self._shards.items() if r < first}
        self._cache = self._utae_cache = None

    @property
    def rounds(self) -> list[int]:
        return list(self._shards)

    def shard(self, round_: int) -> Shard:
        return self._shards[round_]

    def __len__(self) -> int:
        return sum(s.images.shape[0] for s in self._shards.values())

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images, labels, teacher_logits) of the whole pool, in round order."""
        if self._cache is None:
            if not self._shards:
                raise ValueError("the FAE pool is empty: run a generation stage first")
            shards = list(self._shards.values())
            self._cache = (torch.cat([s.images for s in shards]), torch.cat([s.labels for s in shards]),
                           torch.cat([s.teacher_logits for s in shards]))
        return self._cache

    def utaes(self) -> torch.Tensor:
        """The cached UTAEs of the whole pool (N×K×C×H×W), in round order."""
        missing = [r for r, s in self._shards.items() if s.utaes is None]
        if missing:
            raise ValueError(f"the pool has no cached UTAEs for rounds {missing}: it was made with "
                             "distill.utae.cache: recompute")
        if self._utae_cache is None:
            self._utae_cache = torch.cat([s.utaes for s in self._shards.values()])
        return self._utae_cache

    def sample_indices(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """``batch_size`` indices drawn uniformly with replacement."""
        return torch.randint(0, len(self), (batch_size,), generator=generator)

    # ---- Parquet persistence -------------------------------------------------------------
    def save(self, root: str | Path, rounds: Iterable[int] | None = None) -> list[Path]:
        """Write the shards of ``rounds`` (default: all) under ``root`` (see :func:`write_shard`)."""
        wanted = set(self._shards) if rounds is None else set(rounds)
        return [write_shard(s, root) for r, s in self._shards.items() if r in wanted]

    @classmethod
    def load(cls, root: str | Path) -> FaePool:
        pool = cls()
        for path in shards_under(root).values():
            pool.append(read_shard(path))
        return pool


def shard_table(shard: Shard) -> pa.Table:
    """The Arrow table of one shard (schema metadata: image shape and dtype)."""
    n, *shape = shard.images.shape
    images = np.ascontiguousarray(shard.images.detach().cpu().numpy().astype("<f4"))
    width = int(np.prod(shape)) * 4
    image_col = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(images.tobytes())])
    logits = shard.teacher_logits.detach().cpu().numpy().astype("<f4")
    columns = {
        "image": image_col,
        "label": pa.array(shard.labels.cpu().numpy().astype(np.int64)),
        "round": pa.array(np.full(n, shard.round, dtype=np.int32)),
        "epoch": pa.array(shard.epochs.cpu().numpy().astype(np.int32)),
        "index": pa.array(np.arange(n, dtype=np.int32)),
        "teacher_logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1)), logits.shape[1]),
        "class_weight": pa.array(shard.class_weight.cpu().numpy().astype(np.float64)),
    }
    meta = {"ferd.image_shape": json.dumps(shape), "ferd.image_dtype": "float32",
            "ferd.schema_version": SCHEMA_VERSION}
    if shard.utaes is not None:
        utaes = np.ascontiguousarray(shard.utaes.detach().cpu().numpy().astype("<f4"))
        columns["utae"] = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width * utaes.shape[1]), n,
                                                               [None, pa.py_buffer(utaes.tobytes())])
        meta["ferd.utae_starts"] = str(utaes.shape[1])
    table = pa.table(columns)
    return table.replace_schema_metadata(meta)


def partition(round_index: int | str) -> str:
    """The pool's partition of round r, ``round=<r>`` (``partition("*")``: every round's, as a glob)."""
    return f"round={round_index}"


def shard_file(round_index: int | str) -> str:
    """Round r's shard under a pool root: ``round=<r>/part-0.parquet``."""
    return f"{partition(round_index)}/part-0.parquet"


def shards_under(root: str | Path) -> dict[int, Path]:
    """Every shard under ``root`` by its partition's round, in round order."""
    found = {int(p.parent.name.removeprefix(partition(""))): p for p in Path(root).glob(shard_file("*"))}
    return dict(sorted(found.items()))


def write_shard(shard: Shard, root: str | Path) -> Path:
    """Write ``root/round=<r>/part-0.parquet`` atomically: a temporary name unique to the writer, fsync,
    rename (:func:`ferd.core.checkpoint.atomic_path`), so two writers never mix their bytes and a reader
    sees one whole shard; temporaries left by writers that died are removed."""
    path = Path(root) / shard_file(shard.round)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    with atomic_path(path) as tmp:
        pq.write_table(shard_table(shard), tmp, compression="zstd")
    return path


def read_shard(path: str | Path) -> Shard:
    """Read one shard written by :func:`write_shard`, bit-exact, refusing (ValueError naming the file) one
    that is no ferd shard, or whose rows break the pool's invariants: one round per shard and that of its
    ``round=<r>`` partition, images in [0, 1], labels in [0, C) for C teacher logits, finite logits."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise ValueError(f"{path}: not a readable Parquet pool shard ({type(exc).__name__})") from None
    meta = table.schema.metadata or {}
    if meta.get(b"ferd.schema_version") != SCHEMA_VERSION.encode():
        raise ValueError(f"{path}: not a ferd pool shard (schema version {str(meta.get(b'ferd.schema_version'))[:40]})")
    try:
        shard = _shard_from_table(table, meta)
    except (KeyError, ValueError, TypeError, pa.ArrowException) as exc:
        raise ValueError(f"{path}: a malformed ferd pool shard ({type(exc).__name__}: {str(exc)[:120]})") from None
    _check_shard(shard, Path(path), table.column("round").to_numpy())
    return shard


def _check_shard(shard: Shard, path: Path, rounds: np.ndarray) -> None:
    n = shard.images.shape[0]
    if n and (rounds != rounds[0]).any():
        raise ValueError(f"{path}: rows of several rounds in one shard")
    part = path.parent.name
    if n and part.startswith(partition("")) and part != partition(shard.round):
        raise ValueError(f"{path}: holds round {shard.round} in partition {part}")
    if n and not (float(shard.images.min()) >= 0.0 and float(shard.images.max()) <= 1.0):
        raise ValueError(f"{path}: images outside [0, 1] (range {float(shard.images.min()):.4g} to "
                         f"{float(shard.images.max()):.4g})")
    c = shard.teacher_logits.shape[1] if shard.teacher_logits.ndim == 2 else 0
    if n and (int(shard.labels.min()) < 0 or int(shard.labels.max()) >= c):
        raise ValueError(f"{path}: labels outside [0, {c})")
    if n and not bool(torch.isfinite(shard.teacher_logits).all()):
        raise ValueError(f"{path}: non-finite teacher logits")


def remove_stale_temporaries(path: Path) -> None:
    """Temporaries of ``path`` (``.<name>.tmp-<pid>-<id>``) whose writer process is gone."""
    for tmp in path.parent.glob(f".{path.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit(".tmp-", 1)[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


def _shard_from_table(table: pa.Table, meta: dict) -> Shard:
    shape = json.loads(meta[b"ferd.image_shape"])
    n = table.num_rows
    raw = table.column("image").combine_chunks().buffers()[1]
    images = np.frombuffer(raw, dtype="<f4", count=n * int(np.prod(shape))).reshape(n, *shape)
    logits = np.stack(table.column("teacher_logits").to_numpy(zero_copy_only=False)) if n else np.zeros((0, 0))
    rounds = table.column("round").to_numpy()
    utaes = None
    if b"ferd.utae_starts" in meta:
        k = int(meta[b"ferd.utae_starts"])
        raw_u = table.column("utae").combine_chunks().buffers()[1]
        utaes = torch.from_numpy(np.frombuffer(raw_u, dtype="<f4", count=n * k * int(np.prod(shape)))
                                 .reshape(n, k, *shape).copy())
    return Shard(round=int(rounds[0]) if n else -1, images=torch.from_numpy(images.copy()),
                 labels=torch.from_numpy(table.column("label").to_numpy().copy()),
                 teacher_logits=torch.from_numpy(logits.astype(np.float32)),
                 class_weight=torch.from_numpy(table.column("class_weight").to_numpy().copy()),
                 epochs=torch.from_numpy(table.column("epoch").to_numpy().copy()), utaes=utaes)
