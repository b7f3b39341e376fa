"""Named kill points: where the fault suite kills or stops a process, deterministically.

``FERD_KILL_AT=<point>:<n>`` makes the process send itself SIGKILL the ``n``-th time it reaches the
named point (counted per process, from 1); ``FERD_STOP_AT`` (same syntax) sends SIGSTOP instead, so
a test can act on a process frozen at a known instant (kill its client, its launcher). A suffix
``@<rank>`` limits either to the process of that rank under torchrun (``RANK``). It is how the fault
suite proves "a kill at any instant loses nothing" at the instants that matter (between the two
renames of a checkpoint swap, in the middle of a student epoch, just before a manifest is written)
without timing a kill against a reference run. Unset, :func:`kill_point` is two dictionary lookups.
A malformed value is refused by :func:`ferd.core.environment.check` (``ferd``'s entry point) with one
line, before any work.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

KILL_ENV = "FERD_KILL_AT"
STOP_ENV = "FERD_STOP_AT"
SIGNALS = {KILL_ENV: signal.SIGKILL, STOP_ENV: signal.SIGSTOP}

POINTS = {
    "generator.iteration": "after each generator iteration of a synthesis epoch",
    "student.iteration": "after each student iteration of a distillation epoch",
    "checkpoint.written": "ferd run: the next checkpoint is whole in checkpoint.partial/, nothing swapped yet",
    "checkpoint.between-renames": "ferd run: checkpoint/ renamed to checkpoint.old/, checkpoint.partial/ not yet in place",
    "checkpoint.saved": "ferd run: a round's checkpoint is in place",
    "manifest.before-write": "a stage's files are written, its manifest.json not yet",
    "evaluation.attack": "after each (model, attack) of an evaluation is kept in its .partial folder",
    "evaluation.written": "an evaluation's report is written, its result not yet recorded (its .partial folder kept)",
}

_reached: Counter[str] = Counter()


def parse(spec: str, variable: str = KILL_ENV) -> tuple[str, int, int | None]:
    """``"<point>:<n>[@<rank>]"`` → ``(point, n, rank or None)``; ValueError naming the variable and what
    it expects."""
    head, _, rank = spec.partition("@")
    point, _, count = head.rpartition(":")
    if point not in POINTS or not count.isdigit() or int(count) < 1 or (rank and not rank.isdigit()):
        raise ValueError(f"{variable}={spec!r}: expected <point>:<n>[@<rank>] with n >= 1 and point one of "
                         f"{', '.join(sorted(POINTS))}")
    return point, int(count), int(rank) if rank else None


def kill_point(point: str) -> None:
    """Signal this process if ``FERD_KILL_AT``/``FERD_STOP_AT`` names ``point`` (and this process's rank)
    and this is its n-th arrival here."""
    assert point in POINTS, point
    specs = [(v, s) for v in SIGNALS if (s := os.environ.get(v))]
    if not specs:
        return
    _reached[point] += 1
    for variable, spec in specs:
        target, count, rank = parse(spec, variable)
        if target == point and _reached[point] == count and rank in (None, int(os.environ.get("RANK", "0"))):
            os.kill(os.getpid(), SIGNALS[variable])
