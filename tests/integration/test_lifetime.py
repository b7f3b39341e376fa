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


def test_an_interrupted_parent_passes_sigterm_on_and_lets_the_child_finish(tmp_path):
    """``run_stopping_with_us`` (how ``ferd run`` starts torchrun): interrupted, it sends the child SIGTERM and waits
    for it — the child's handler (the ranks' own ``finally`` blocks) runs to its end — then the interruption goes
    on; the child is in a process group of its own, so a terminal's Ctrl-C reaches it only as that one SIGTERM
    (torchrun's agent abandons its shutdown on a second signal). The interruption arrives once the child says it is
    ready: an event, not a delay."""
    import threading

    from ferd.compute.lifetime import run_stopping_with_us

    done, ready = tmp_path / "done", tmp_path / "ready"
    child = textwrap.dedent(f"""
        import os, signal, sys, time
        def stop(*_):
            open({str(done)!r}, "w").write("finished its writes")
            sys.exit(143)
        signal.signal(signal.SIGTERM, stop)
        open({str(ready)!r}, "w").write(str(os.getpgid(0)))
        time.sleep(60)
    """)

    def interrupt_once_ready() -> None:
        while not ready.exists():  # the child creates it once its handler is in place
            time.sleep(0.01)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)  # Ctrl-C, into the main thread's wait

    threading.Thread(target=interrupt_once_ready, daemon=True).start()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # a pytest-xdist worker ignores SIGINT
    try:
        with pytest.raises(KeyboardInterrupt):
            run_stopping_with_us([sys.executable, "-c", child])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert done.read_text() == "finished its writes"
    assert int(ready.read_text()) != os.getpgrp()  # a group of its own: a terminal's Ctrl-C does not reach it too
