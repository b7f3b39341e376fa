"""ferd.core.kill_points: the fault suite's named, deterministic kills."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ferd.cli import main
from ferd.core.kill_points import KILL_ENV, STOP_ENV, parse

ROOT = Path(__file__).resolve().parents[2]
COUNT_TO_THREE = ("from ferd.core.kill_points import kill_point\n"
                  "for i in range(3):\n    print(i, flush=True)\n    kill_point('student.iteration')\n")


def test_parse():
    assert parse("student.iteration:3") == ("student.iteration", 3, None)
    assert parse("checkpoint.saved:1@0") == ("checkpoint.saved", 1, 0)
    for bad in ("student.iteration", "student.iteration:0", "nowhere:1", "student.iteration:x", "checkpoint.saved:1@a"):
        with pytest.raises(ValueError, match=rf"{KILL_ENV}=.*expected <point>:<n>\[@<rank>\]"):
            parse(bad)


@pytest.mark.parametrize("variable", [KILL_ENV, STOP_ENV])
def test_a_malformed_value_is_refused_before_any_work(variable, monkeypatch, capsys):
    monkeypatch.setenv(variable, "student.iteration:-1")
    assert main(["params", "check", "--params", str(ROOT / "params" / "ci.yaml")]) == 2
    assert f"error: {variable}='student.iteration:-1': expected" in capsys.readouterr().err


@pytest.mark.parametrize("spec, printed, status", [
    ("student.iteration:2", "0\n1\n", -signal.SIGKILL),  # killed at its second arrival, not before
    ("student.iteration:2@1", "0\n1\n2\n", 0),            # another rank's point
    ("generator.iteration:1", "0\n1\n2\n", 0),            # another point
])
def test_the_process_is_killed_at_the_nth_arrival_at_its_point(spec, printed, status):
    proc = subprocess.run([sys.executable, "-c", COUNT_TO_THREE], env={KILL_ENV: spec, "RANK": "0"},
                          capture_output=True, text=True)
    assert (proc.stdout, proc.returncode) == (printed, status), proc.stderr
