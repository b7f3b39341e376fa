"""A process-wide guard that forbids dataset access (FERD is data-free, §3-4).

Synthesis (Eq. 4-9) and distillation (Eq. 10-11) must never touch the original training
data; they run inside :func:`no_data_access`, and every :func:`ferd.data.load_split` call
made while any guard is active raises :class:`DataAccessError` naming the reason(s).

The guard is a module-level stack protected by a lock, so it is safe to enter from several
threads; it is process-wide on purpose (a worker thread of a guarded stage is guarded too).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOCK = threading.Lock()
_REASONS: list[str] = []


class DataAccessError(RuntimeError):
    """Raised when a dataset is loaded while :func:`no_data_access` is active."""


@contextmanager
def no_data_access(reason: str) -> Iterator[None]:
    """Forbid :func:`ferd.data.load_split` until the block exits (nests; thread-safe)."""
    if not reason or not isinstance(reason, str):
        raise ValueError(f"reason: expected a non-empty string, got {reason!r}")
    with _LOCK:
        _REASONS.append(reason)
    try:
        yield
    finally:
        with _LOCK:
            _REASONS.remove(reason)


def data_access_blocked() -> list[str]:
    """The reasons of the guards active now (empty when data access is allowed)."""
    with _LOCK:
        return list(_REASONS)


def check_data_access(what: str) -> None:
    """Raise :class:`DataAccessError` if a guard is active; ``what`` names the access attempted."""
    reasons = data_access_blocked()
    if reasons:
        raise DataAccessError(
            f"data access refused: {what} was requested while no_data_access is active "
            f"({'; '.join(reasons)}); FERD synthesis and distillation are data-free")
