"""``ferd warm -- COMMAND``: stages forked from one warm worker behave as their own processes would.

The bytes are checked in tests/e2e/test_dvc.py (the CI preset's ``dvc repro`` under ``ferd warm`` gives
the golden student, shards and metrics); here the exit status, the fallback and the kill semantics.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ferd.core.kill_points import STOP_ENV
from support.processes import wait_for_stopped

ROOT = Path(__file__).resolve().parents[2]
FERD = str(Path(sys.executable).parent / "ferd")
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
       "OMP_NUM_THREADS": "1"}


def _warm(inner: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([FERD, "warm", "--", "bash", "-c", inner], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=300)


def test_status_and_error_line_pass_through_and_a_differing_environment_falls_back(tmp_path):
    bad = f"ferd stage pool-store --params {ROOT}/params/ci.yaml --round 0 --synthesis {tmp_path}/none --out {tmp_path}/o"
    proc = _warm(f"{bad}; echo rc=$?; exit 7", tmp_path)
    assert proc.returncode == 7 and "rc=2" in proc.stdout, proc.stderr
    assert "ferd stage: error: synthesis:" in proc.stderr and "ferd warm:" not in proc.stderr
    proc = _warm(f"OMP_NUM_THREADS=2 {bad}; echo rc=$?", tmp_path)
    assert "rc=2" in proc.stdout and "ferd stage: error: synthesis:" in proc.stderr
    assert "this stage runs in its own process: environment variable OMP_NUM_THREADS differs" in proc.stderr


def _children(pid: int) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _warm_stage_stopped_before_its_manifest(tmp_path: Path) -> tuple[subprocess.Popen, int, Path]:
    """``ferd warm`` running one teacher-fetch stage in the background (its pid in ``client.pid``, its status
    to ``rc``) whose fork stopped itself just before its manifest (ferd.core.kill_points): (warm, fork pid, out)."""
    out = tmp_path / "teacher"
    stage = f"ferd stage teacher-fetch --params {ROOT}/params/ci.yaml --out {out} --no-progress"
    warm = subprocess.Popen([FERD, "warm", "--", "bash", "-c", f"{stage} & echo $! > client.pid; wait $!; echo $? > rc"],
                            cwd=tmp_path, env={**ENV, STOP_ENV: "manifest.before-write:1"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    return warm, wait_for_stopped(warm), out


def test_killing_a_stage_process_kills_its_fork_and_leaves_no_artifact(tmp_path):
    warm, _, out = _warm_stage_stopped_before_its_manifest(tmp_path)  # then its client is killed
    forks = _children(warm.pid)
    assert len(forks) == 2
    os.kill(int((tmp_path / "client.pid").read_text()), 9)
    assert warm.wait(timeout=60) == 0
    assert (tmp_path / "rc").read_text().strip() == "137"
    for pid in forks:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not (out / "manifest.json").exists()


def _pending(pid: int, signum: int) -> bool:
    """Whether ``signum`` waits on ``pid`` (a stopped process keeps it pending until continued)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("ShdPnd:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


def test_a_signal_to_a_stage_process_reaches_its_fork_through_the_worker(tmp_path):
    warm, fork, out = _warm_stage_stopped_before_its_manifest(tmp_path)
    os.kill(int((tmp_path / "client.pid").read_text()), signal.SIGTERM)  # the client asks the worker to pass it on
    deadline = time.monotonic() + 60  # bounds a hang only: the wait is on the signal's arrival
    while not _pending(fork, signal.SIGTERM):
        assert time.monotonic() < deadline, "the worker did not pass SIGTERM on to the fork"
        time.sleep(0.05)
    os.kill(fork, signal.SIGCONT)
    assert warm.wait(timeout=60) == 0, warm.stderr.read()
    assert (tmp_path / "rc").read_text().strip() == str(128 + signal.SIGTERM)
    assert "ferd stage: terminated (SIGTERM); run the same command again" in warm.stderr.read()
    assert not (out / "manifest.json").exists()
