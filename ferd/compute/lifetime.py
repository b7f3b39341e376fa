"""No ferd process outlives the process that waits for it (Linux; elsewhere a no-op).

A killed parent leaves its children running: ``torchrun``'s ranks run in sessions of their own, so a
``kill -9`` of ``ferd run -S nproc_per_node=2`` (or an OOM kill of its launcher) would leave both ranks
training on, holding the run directory's lock and writing into it behind a rerun's back. Every child
ferd starts and waits for — a ``ferd warm`` stage, the ``torchrun`` agent, each rank — therefore asks the
kernel for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``); the run's files stay consistent
because every write is atomic and the run resumes from its last checkpoint.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[[int, int], int] | None:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


def die_with_parent() -> None:
    """This process gets SIGKILL when its parent dies; if the parent is already gone (adopted by init),
    it exits now, as it would have a moment later."""
    prctl = _prctl()
    if prctl is None:
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        os._exit(128 + signal.SIGKILL)


def child_dies_with_us() -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets SIGKILL when this process dies.

    The library function is looked up here, in the parent, so the forked child only makes the call."""
    prctl = _prctl()
    if prctl is None:
        return None
    return lambda: prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
