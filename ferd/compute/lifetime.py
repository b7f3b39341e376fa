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


STOP_GRACE_S = 20.0  # how long a stopped child may take to end its ranks' writes (Kubernetes grants 30 s in all)


def run_stopping_with_us(cmd: list[str]) -> int:
    """Run ``cmd`` (dying with this process) and return its status. Interrupted (Ctrl-C, or SIGTERM raised as
    :class:`ferd.cli.Terminated`), this passes SIGTERM on and waits up to :data:`STOP_GRACE_S` before SIGKILL, so
    the torchrun agent stops its ranks and their ``finally`` blocks run (``subprocess.run`` would SIGKILL it after
    a quarter of a second); then the interruption goes on."""
    import subprocess

    # a process group of its own: a terminal's Ctrl-C reaches this process only, and the child gets one SIGTERM
    # (torchrun's agent, given SIGINT and then SIGTERM, abandons its own shutdown half-way)
    proc = subprocess.Popen(cmd, preexec_fn=child_dies_with_us(), process_group=0)  # noqa: S603 - ferd's command
    try:
        return proc.wait()
    except BaseException:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except BaseException:  # the grace is over, or a second interruption: no more waiting
            proc.kill()
            proc.wait()
        raise
