"""Storage that gives out and outputs ferd cannot write: one line, a status, nothing partial left.

A full disk, a file-size limit or a quota mid-run (ENOSPC, EFBIG, EDQUOT) ends the command with status 4
and ``storage error: <file>: <reason>``; the atomic writes leave no partial file and the same command
resumes once there is room. An ``s3://`` URL given to a command that writes only locally (everything but
``ferd stage``) is refused with status 2 before any work.
"""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from ferd.cli import main
from support.cli import status
from support.faultlog import record

ROOT = Path(__file__).resolve().parents[2]
CI = str(ROOT / "params" / "ci.yaml")
FERD = str(Path(sys.executable).parent / "ferd")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

LOCAL_ONLY = {
    "run": ["run", "--params", CI, "--out", "s3://bucket/run"],
    "compare": ["compare", "--preset", "compare-smoke", "--out", "s3://bucket/cmp"],
    "compare --write-dvc-yaml": ["compare", "--preset", "compare-smoke", "--write-dvc-yaml", "s3://bucket/cmp"],
    "bench": ["bench", "--preset", CI, "--out", "s3://bucket/bench.json"],
    "evaluate": ["evaluate", "--teacher", "t.safetensors", "--teacher-arch", "cnn-8", "--dataset", "digits",
                 "--out", "s3://bucket/eval"],
    "pipeline run-local": ["pipeline", "run-local", "--params", CI, "--out", "s3://bucket/p"],
}


@pytest.mark.parametrize("command", sorted(LOCAL_ONLY))
def test_an_s3_out_is_refused_where_only_local_outputs_are_written(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rc = status(LOCAL_ONLY[command])
    err = capsys.readouterr().err
    assert rc == 2 and "s3://bucket/" in err and "expected a local directory" in err, err
    assert list(tmp_path.iterdir()) == []  # no ./s3:/… tree, nothing written
    record(f"`ferd {command} --out s3://…`", "an object-store URL where ferd writes locally", True, 0)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_a_full_disk_is_one_line_naming_the_file_status_4(code, tmp_path, monkeypatch, capsys):
    import ferd.core.checkpoint

    def full(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(ferd.core.checkpoint.os, "fsync", full)
    params = tmp_path / "params.yaml"
    assert main(["params", "use", "ci", "--params", str(params), "--dvc-yaml", str(tmp_path / "dvc.yaml")]) == 4
    err = capsys.readouterr().err.strip()
    assert err == f"ferd params: storage error: {params}: {os.strerror(code)} (nothing partial was kept: make room, " \
                  "then run the same command again)"
    assert list(tmp_path.iterdir()) == []  # the temporary file removed


def test_a_file_size_limit_during_a_pool_write_stops_cleanly_and_the_same_command_resumes(tmp_path):
    """RLIMIT_FSIZE below a pool shard's size (the CI preset's are ~170 KB, every earlier file smaller):
    the pool write fails with EFBIG (Python ignores SIGXFSZ)."""
    out = tmp_path / "run"
    cmd = [FERD, "run", "--params", CI, "--threads", "1", "--no-progress", "--out", str(out)]
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))  # noqa: E731
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, preexec_fn=limit)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert lines[-1].startswith(f"ferd run: storage error: {out}/pool/round=0/part-0.parquet: ") and \
        "File too large" in lines[-1] and "Traceback" not in proc.stderr
    leftovers = [p for p in out.rglob(".*") if ".tmp" in p.name]
    assert leftovers == [] and not (out / "pool" / "round=0" / "part-0.parquet").exists()
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "metrics.json").is_file()
    record("file-size limit during a pool write", "RLIMIT_FSIZE 100 kB (EFBIG), then the same command", True, 0)
