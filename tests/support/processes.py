"""Processes a fault test acts on: descendants of a process, and one frozen by ``FERD_STOP_AT``."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first)."""
    out, todo = [], [pid]
    while todo:
        children = subprocess.run(["pgrep", "-P", str(todo.pop())], capture_output=True, text=True).stdout.split()
        out += [int(c) for c in children]
        todo += [int(c) for c in children]
    return out


def state(pid: int) -> str | None:
    """The one-letter state of ``pid`` (``T`` stopped, ``Z`` zombie), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (FileNotFoundError, IndexError):
        return None


def wait_for_stopped(root: subprocess.Popen, deadline_s: float = 600) -> int:
    """The pid of the descendant of ``root`` (or ``root`` itself) that stopped itself at a named point
    (:mod:`ferd.core.kill_points`). Waits on the state, not on a delay: the deadline only bounds a hang, and
    ``root`` ending first fails at once."""
    deadline = time.monotonic() + deadline_s
    while True:
        for pid in (root.pid, *descendants(root.pid)):
            if state(pid) == "T":
                return pid
        assert root.poll() is None, f"{root.args!r} ended (status {root.returncode}) before reaching its stop point"
        assert time.monotonic() < deadline, f"no process of {root.args!r} stopped within {deadline_s} s"
        time.sleep(0.1)
