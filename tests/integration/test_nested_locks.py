"""Nested output directories exclude each other (issue 34, item 7): ``ferd run --out cx`` and
``ferd stage teacher-fetch -S seed=7 --out cx/teacher`` started together must not both run, or a seed-7
teacher ends up beside a student distilled from another teacher. The holder is a real process frozen at a
named point (``FERD_STOP_AT``, :mod:`ferd.core.kill_points`) while the other command starts: no timing.
Rows of the fault suite table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from support.faultlog import record
from support.processes import wait_for_stopped
from ferd.core.checkpoint import sha256_file
from ferd.cli import main
from ferd.core.kill_points import STOP_ENV

ROOT = Path(__file__).resolve().parents[2]
CI = str(ROOT / "params" / "ci.yaml")
FERD = str(Path(sys.executable).parent / "ferd")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

pytestmark = pytest.mark.usefixtures("single_thread")


def _stage(out: Path, *extra: str) -> list[str]:
    return ["stage", "teacher-fetch", "--params", CI, *extra, "--out", str(out), "--no-progress"]


def _run(out: Path) -> list[str]:
    return ["run", "--params", CI, "--out", str(out), "--no-progress"]


@contextmanager
def _stopped(args: list[str], point: str) -> Iterator[subprocess.Popen]:
    """``ferd <args>`` frozen at ``point`` (its first arrival) for the block; the caller continues or kills it."""
    proc = subprocess.Popen([FERD, *args], env={**ENV, STOP_ENV: f"{point}:1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for_stopped(proc) == proc.pid
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _files(d: Path) -> dict[str, str]:
    """Every file under ``d``, hidden ones (lock files) included, by sha256."""
    return {str(p.relative_to(d)): sha256_file(p) for p in sorted(d.rglob("*")) if p.is_file()}


def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("ferd ")]


def test_a_stage_into_a_running_runs_directory_is_refused(tmp_path, capsys):
    cx = tmp_path / "cx"
    with _stopped(_run(cx), "generator.iteration") as run:  # ferd run holds cx, its teacher fetched
        before = _files(tmp_path)
        rc = main(_stage(cx / "teacher", "-S", "seed=7"))
        err = _errors(capsys.readouterr().err)
        run.kill()
    ok = rc == 2 and _files(tmp_path) == before
    record("`ferd stage` into the --out of a running `ferd run`", "run on cx, teacher-fetch seed 7 on cx/teacher",
           ok, 0 if ok else 1)
    assert rc == 2 and len(err) == 1, err
    assert f"{cx / 'teacher'} is inside {cx}, which another ferd process (pid {run.pid}) holds" in err[0], err
    assert _files(tmp_path) == before  # refused before anything is written


def test_a_run_over_a_running_stages_directory_is_refused(tmp_path, capsys):
    cx = tmp_path / "cx"
    with _stopped(_stage(cx / "teacher", "-S", "seed=7"), "manifest.before-write") as stage:
        before = _files(tmp_path)
        rc = main(_run(cx))
        err = _errors(capsys.readouterr().err)
        assert _files(tmp_path) == before  # refused before anything is written
        stage.send_signal(signal.SIGCONT)
        assert stage.communicate()[1] is not None and stage.returncode == 0  # the stage it spared finishes
    ok = rc == 2 and (cx / "teacher" / "manifest.json").is_file()
    record("`ferd run` over the --out of a running `ferd stage`", "teacher-fetch on cx/teacher, run on cx", ok,
           0 if ok else 1)
    assert rc == 2 and len(err) == 1, err
    assert f"{cx} contains {cx / 'teacher'}, which another ferd process (pid {stage.pid}) holds" in err[0], err


def test_stages_in_sibling_directories_run_side_by_side(tmp_path, capsys):
    """What a DVC pipeline does: stages of one root each write their own subdirectory, at the same time."""
    cx = tmp_path / "cx"
    with _stopped(_stage(cx / "a"), "manifest.before-write") as first:
        rc = main(_stage(cx / "b", "-S", "seed=7"))
        first.send_signal(signal.SIGCONT)
        assert first.communicate()[1] is not None and first.returncode == 0
    ok = rc == 0 and all((cx / d / "manifest.json").is_file() for d in ("a", "b"))
    record("two stages in sibling directories of one root", "teacher-fetch on cx/a and cx/b at once", ok, 0)
    assert ok, capsys.readouterr().err
