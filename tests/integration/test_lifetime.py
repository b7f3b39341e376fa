"""No ferd child outlives its parent (ferd/compute/lifetime.py): a SIGKILLed parent takes its children along."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

# the parent starts a child in a session of its own (as torchrun starts its ranks), prints the child's
# pid and sleeps; ``how`` says which side arms the parent-death signal
PARENT = textwrap.dedent("""
    import subprocess, sys, time
    from ferd.compute.lifetime import child_dies_with_us
    how = sys.argv[1]
    child = "import time\\n" + ("from ferd.compute.lifetime import die_with_parent\\ndie_with_parent()\\n" if how == "child" else "")
    child += "print('armed', flush=True)\\ntime.sleep(60)"
    p = subprocess.Popen([sys.executable, "-c", child], start_new_session=True, stdout=subprocess.PIPE, text=True,
                         preexec_fn=child_dies_with_us() if how == "parent" else None)
    assert p.stdout.readline().strip() == "armed"
    print(p.pid, flush=True)
    time.sleep(60)
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _child_after_parent_killed(how: str) -> bool:
    """Kill the parent; whether its child is still alive 5 s later."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT, how], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 5
    while time.time() < deadline and _alive(child):
        time.sleep(0.05)
    alive = _alive(child)
    if alive:
        os.kill(child, signal.SIGKILL)
    return alive


@pytest.mark.parametrize("how", ["child", "parent"])
def test_a_child_armed_by_either_side_dies_with_its_parent(how):
    assert not _child_after_parent_killed(how)


def test_an_unarmed_child_would_outlive_its_parent():
    """The control: without ferd/compute/lifetime.py the child of a killed parent runs on."""
    assert _child_after_parent_killed("none")
