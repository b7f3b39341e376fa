"""The FAE pool: exact Parquet round trip, idempotent append, seeded sampling."""

from __future__ import annotations

import pyarrow.parquet as pq
import torch

from ferd.data.pool import FaePool, Shard


def _shard(r: int, n: int = 5) -> Shard:
    g = torch.Generator().manual_seed(r)
    return Shard(round=r, images=torch.rand(n, 3, 4, 4, generator=g), labels=torch.randint(0, 3, (n,), generator=g),
                 teacher_logits=torch.randn(n, 3, generator=g), class_weight=torch.rand(n, generator=g).double(),
                 epochs=torch.full((n,), r, dtype=torch.int32))


def test_round_trip_is_bit_exact(tmp_path):
    pool = FaePool()
    pool.append(_shard(0))
    pool.append(_shard(1, 3))
    paths = pool.save(tmp_path)
    assert [p.parent.name for p in paths] == ["round=0", "round=1"]
    meta = pq.read_schema(paths[0]).metadata
    assert meta[b"ferd.image_shape"] == b"[3, 4, 4]"
    back = FaePool.load(tmp_path)
    for a, b in zip(pool.tensors(), back.tensors()):
        assert torch.equal(a, b)
    assert torch.equal(back.shard(1).class_weight, pool.shard(1).class_weight)


def test_append_same_round_does_not_duplicate(tmp_path):
    pool = FaePool()
    pool.append(_shard(0))
    pool.append(_shard(0))
    assert len(pool) == 5
    pool.save(tmp_path)
    pool.save(tmp_path)
    assert len(FaePool.load(tmp_path)) == 5


def test_sampling_is_seeded():
    pool = FaePool()
    pool.append(_shard(0, 50))
    a = pool.sample_indices(8, torch.Generator().manual_seed(3))
    b = pool.sample_indices(8, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.max() < 50
