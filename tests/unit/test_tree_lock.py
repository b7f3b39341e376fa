"""One owner per directory tree (issue 34, item 7): :func:`ferd.algorithm.run_dir.owned` on a directory excludes its
ancestors and descendants, in this process as in another; sibling directories stay independent. The
refused side holds its lock in the test itself, so nothing here depends on timing."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support.faultlog import record
from ferd.algorithm import run_dir
from ferd.algorithm.run_dir import RunDirError, owned


def _everything(d: Path) -> list[str]:
    """Every path under ``d``, hidden ones included (a refusal must create none)."""
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def test_a_directory_inside_a_held_one_is_refused_naming_both(tmp_path):
    cx = tmp_path / "cx"
    with owned(cx):
        before = _everything(tmp_path)
        with pytest.raises(RunDirError) as err:
            with owned(cx / "teacher"):
                pass
        assert _everything(tmp_path) == before  # refused before anything is written
    message = str(err.value)
    assert "\n" not in message and f"{cx / 'teacher'} is inside {cx}," in message, message


def test_a_directory_containing_a_held_one_is_refused_naming_both(tmp_path):
    cx = tmp_path / "cx"
    with owned(cx / "round-0" / "teacher"):  # the held directory need not exist yet
        with pytest.raises(RunDirError, match=rf"{cx} contains {cx / 'round-0' / 'teacher'}, which another ferd"):
            with owned(cx):
                pass


def test_sibling_directories_and_a_released_tree_are_independent(tmp_path):
    cx = tmp_path / "cx"
    with owned(cx / "a"), owned(cx / "b"), owned(tmp_path / "cxy"):  # siblings, and a name sharing a prefix
        pass
    with owned(cx / "a"):
        pass
    with owned(cx):  # released: the whole tree is free again
        pass


@pytest.mark.parametrize("first", ["ancestor", "descendant"])
def test_two_starts_at_the_same_instant_never_both_hold(tmp_path, monkeypatch, first):
    """The interleaving a race can produce, forced: the other start takes its lock after this start's first
    check and before this start's own lock. This start's second check (after its lock) must refuse it."""
    cx = tmp_path / "cx"
    mine, theirs = (cx, cx / "teacher") if first == "descendant" else (cx / "teacher", cx)
    checks, held = [], contextlib.ExitStack()
    real_check = run_dir._refuse_if_tree_held

    def check_then_let_the_other_start_in(directory, real, what):
        real_check(directory, real, what)
        if directory != mine:  # the other start's own checks
            return
        checks.append(real)
        if len(checks) == 1:  # between this start's first check and its own lock
            held.enter_context(owned(theirs))

    monkeypatch.setattr(run_dir, "_refuse_if_tree_held", check_then_let_the_other_start_in)
    with held, pytest.raises(RunDirError, match="which another ferd process"):
        with owned(mine):
            pass
    ok = len(checks) == 1  # the second check refused
    record("two nested --out started at one instant", f"{first} locked between the other's check and lock", ok, 0)
    assert ok


# ---- red team ------------------------------------------------------------------------------------------
def test_a_symlink_into_a_held_directory_is_refused(tmp_path):
    cx = tmp_path / "cx"
    (cx / "teacher").mkdir(parents=True)
    (tmp_path / "link").symlink_to(cx)
    (tmp_path / "teacher-link").symlink_to(cx / "teacher")
    with owned(cx):
        with pytest.raises(RunDirError, match=f"is inside {cx},"):
            with owned(tmp_path / "link" / "teacher"):
                pass
    with owned(cx / "teacher"):
        with pytest.raises(RunDirError, match="in use by another ferd process"):
            with owned(tmp_path / "teacher-link"):  # the same directory under another name
                pass
    record("--out through a symlink into a held directory", "link/teacher, link → the held cx", True, 0)


def test_dot_dot_components_resolving_into_a_held_directory_are_refused(tmp_path):
    cx = tmp_path / "cx"
    (tmp_path / "other").mkdir()
    (cx / "teacher").mkdir(parents=True)
    with owned(cx):
        with pytest.raises(RunDirError, match=f"is inside {cx},"):
            with owned(tmp_path / "other" / ".." / "cx" / "teacher"):
                pass
        with pytest.raises(RunDirError, match="in use by another ferd process"):
            with owned(cx / "teacher" / ".."):  # cx itself
                pass
    record("--out with .. components resolving into a held directory", "other/../cx/teacher and cx/teacher/..",
           True, 0)


def test_a_lock_file_left_by_a_killed_process_is_no_lock(tmp_path):
    cx = tmp_path / "cx"
    code = ("import os, signal; from ferd.algorithm.run_dir import owned\n"
            f"with owned({str(cx)!r}):\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert killed.returncode == -signal.SIGKILL
    assert run_dir.lock_path(cx).read_text().isdigit()  # left behind, naming the dead holder
    with owned(cx / "teacher"), owned(cx / "pool"):  # the dead holder's file guards nothing
        pass
    with owned(cx):
        pass
    record("a lock file left by a killed process", "holder of cx SIGKILLed, then cx/teacher and cx", True, 0)


def test_wait_waits_for_the_holder_of_the_directory_itself_and_still_refuses_its_tree(tmp_path, caplog):
    """``owned(…, wait=True)`` blocks while another process holds the directory, says so naming it, and enters
    once it lets go; an ancestor's holder is still refused, and so is a wait on this process's own lock (which
    would never end). The waiting side is observed by its log line and the lock, never by a delay."""
    import logging
    import threading

    teacher, entered, waiting = tmp_path / "cx" / "teacher", threading.Event(), threading.Event()
    code = ("import sys; from ferd.algorithm.run_dir import owned\n"
            f"with owned({str(teacher)!r}):\n    print('held', flush=True); sys.stdin.readline()\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "waiting for the ferd process" in record.getMessage():
                waiting.set()

    def second_start() -> None:
        with owned(teacher, "teacher", wait=True):
            entered.set()

    seen = Seen()
    logging.getLogger(run_dir.__name__).addHandler(seen)
    try:
        assert holder.stdout.readline().strip() == "held"
        with caplog.at_level(logging.INFO, logger=run_dir.__name__):
            other = threading.Thread(target=second_start)
            other.start()
            assert waiting.wait(120), "the second start neither waited nor said so"
            assert not entered.is_set()  # the other process still holds the lock: it cannot have entered
            holder.communicate("go\n", timeout=120)  # the holder lets go and exits
            other.join(120)
        assert entered.is_set() and not other.is_alive()
    finally:
        logging.getLogger(run_dir.__name__).removeHandler(seen)
        holder.kill()
    assert f"teacher: waiting for the ferd process (pid {holder.pid}) that holds {teacher}" in caplog.text
    with owned(tmp_path / "cx"), pytest.raises(RunDirError, match="is inside"):
        with owned(teacher, "teacher", wait=True):
            pass
    with owned(teacher), pytest.raises(RunDirError, match=rf"already held by this process \(pid {os.getpid()}\)"):
        with owned(teacher, "teacher", wait=True):  # this process's own lock: refused, not waited for
            pass


def test_a_comparison_prepares_its_shared_teacher_holding_the_teacher_folder(tmp_path, monkeypatch):
    """Arms of one ``--out`` started together: the teacher is prepared under its folder's lock (the others wait
    for it, :func:`test_wait_waits_for_the_holder_of_the_directory_itself_and_still_refuses_its_tree`)."""
    from ferd.compare import runner
    from ferd.compare.config import load_compare

    holders = []
    monkeypatch.setattr(runner, "prepare_teacher_dir", lambda cfg, d, *a: holders.append(
        run_dir._holder(run_dir.lock_path(d))) or ("teacher.safetensors", "0" * 64))
    runner.prepare_teacher(load_compare("compare-smoke"), tmp_path)
    assert holders == [str(os.getpid())]
