"""A user's own architecture (issue 35, "Your own model"): a module outside ferd, reached the way a user reaches
it — PYTHONPATH — runs ``ferd run`` end to end as the teacher (a FerdModel, so FERD can split it) and as the
student (a plain nn.Sequential), recorded as given; the same run without the module on the path is refused in one
line before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors import safe_open

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = ROOT / "tests" / "support"  # holds my_models/, a package ferd knows nothing of
FERD = Path(sys.executable).parent / "ferd"
OWN = ["-S", "teacher.arch=my_models.tiny:build", "-S", "student.arch=my_models.tiny:plain"]


def _ferd(out: Path, *, on_path: bool) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]  # e.g. a worktree's ferd
    env["PYTHONPATH"] = os.pathsep.join([*paths, *([str(SUPPORT)] if on_path else [])])
    return subprocess.run([str(FERD), "run", "--params", "params/ci.yaml", *OWN, "--out", str(out), "--threads", "1",
                           "--no-progress"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_an_own_teacher_and_student_from_pythonpath_run_end_to_end(tmp_path):
    out = tmp_path / "run"
    proc = _ferd(out, on_path=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["student.clean.avg"] <= 1.0 and 0.0 <= metrics["teacher.pgd20.avg"] <= 1.0
    params = json.loads((out / "params.json").read_text())
    assert (params["teacher"]["arch"], params["student"]["arch"]) == ("my_models.tiny:build", "my_models.tiny:plain")
    assert json.loads((out / "teacher" / "model_card.json").read_text())["arch"] == "my_models.tiny:build"
    with safe_open(str(out / "student.safetensors"), "pt") as f:  # the user's own layout: no wrapper prefix
        assert f.metadata()["arch"] == "my_models.tiny:plain"
        assert sorted(f.keys())[:2] == ["0.weight", "1.bias"]


def test_an_own_architecture_not_on_the_path_is_refused_in_one_line(tmp_path):
    out = tmp_path / "never"
    proc = _ferd(out, on_path=False)
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith("ferd run: error: invalid parameters: teacher.arch: 'my_models.tiny:build': cannot "
                           "import module 'my_models.tiny' (ModuleNotFoundError: No module named 'my_models')")
    assert not out.exists()
