"""Seeded random streams.

Every random choice in ferd comes from a ``torch.Generator`` derived from the run's
seed, a stream name and (for per-epoch work) the epoch index. Deriving instead of
carrying generator state means a run split into stages, or resumed after a kill,
draws exactly the same numbers as one uninterrupted process: nothing but the seed
has to travel between stages.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import torch


def derive_seed(seed: int, *keys: object) -> int:
    """A 63-bit seed from ``seed`` and any keys (stable across processes and Python versions)."""
    text = ":".join([str(seed), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, *keys: object, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded by :func:`derive_seed`."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *keys))
    return g


@contextlib.contextmanager
def seeded(seed: int, *keys: object) -> Iterator[None]:
    """Run a block (e.g. a model constructor's weight init) under a derived global seed,
    restoring the global RNG state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, *keys))
        yield
