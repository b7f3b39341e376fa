"""``ferd compare --write-dvc-yaml``: every stage of a comparison's DVC project depends on the ferd code
``ferd compare`` runs (:func:`ferd.stages.code_deps.code_deps`), so an edit to it makes ``dvc status`` there name the
stage instead of "up to date"."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ferd.cli import main
from ferd.compare.config import load_compare
from ferd.compare.dvc import compare_stages
from ferd.stages.code_deps import code_paths

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_every_compare_stage_lists_the_code_ferd_compare_runs(tmp_path):
    stages = compare_stages(load_compare("compare-cpu"), "compare-cpu", ROOT / "compare")["stages"]
    want = [f"../{p}" for p in code_paths("compare")]
    assert "../ferd/cli/compare.py" in want and any(p.startswith("../ferd/compare") for p in want)
    assert any(p.startswith("../ferd/stages") for p in want)  # the runs run the stages in memory
    for name in ("teacher", "run", "report"):
        assert stages[name]["deps"][-len(want):] == want, name
    committed = yaml.safe_load((ROOT / "compare" / "dvc.yaml").read_text())["stages"]
    assert all(set(want) <= set(committed[name]["deps"]) for name in ("teacher", "run", "report"))
    # a folder outside ferd's checkout: no paths into it (they would not travel with the folder)
    assert main(["compare", "--preset", "compare-cpu", "--write-dvc-yaml", str(tmp_path / "cmp")]) == 0
    assert "ferd/cli/compare.py" not in (tmp_path / "cmp" / "dvc.yaml").read_text()


@pytest.mark.slow
def test_an_edit_to_the_code_makes_dvc_status_name_the_stage(tmp_path):
    """A copy of ferd (imported from the copy through PYTHONPATH) in a fresh git repository with a comparison's
    DVC project inside it: after ``dvc repro teacher``, editing a module ``ferd compare`` runs changes the stage."""
    repo = tmp_path / "project"
    shutil.copytree(ROOT / "ferd", repo / "ferd", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(repo),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}

    def sh(*cmd: str, cwd: Path) -> str:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    sh("git", "init", "-q", cwd=repo)
    preset = repo / "p.yaml"
    preset.write_text(yaml.safe_dump({"base": str(ROOT / "params" / "ci.yaml"), "students": ["cnn-8"], "seeds": [0],
                                      "methods": {"ferd": []}}))
    sh(str(BIN / "ferd"), "compare", "--preset", str(preset), "--write-dvc-yaml", "cmp", cwd=repo)
    cmp = repo / "cmp"
    sh(str(BIN / "dvc"), "repro", "teacher", cwd=cmp)
    assert "up to date" in sh(str(BIN / "dvc"), "status", "teacher", cwd=cmp)
    source = repo / "ferd" / "compare" / "report.py"
    text = source.read_text()
    source.write_text(text + "# an edit\n")
    status = sh(str(BIN / "dvc"), "status", "teacher", cwd=cmp)
    assert re.search(r"^teacher:\s*$", status, flags=re.M) and "modified:" in status and "ferd/compare" in status, \
        status
    source.write_text(text)
    assert "up to date" in sh(str(BIN / "dvc"), "status", "teacher", cwd=cmp)

