"""Issue 35 (3, 6), with real DVC: a ferd code change reruns the stages that run it (and ``dvc status`` says
so), the evaluation's metrics are outside the cache and shown by ``dvc metrics``, the per-epoch DVCLive
curves are listed by ``dvc exp show`` and drawn by ``dvc plots show``, and ``git status`` after ``dvc repro``
lists no lock file of ferd's.

A copy of the project (its ``ferd`` package included, imported from the copy through ``PYTHONPATH``) in
a fresh git repository, the CI preset, run once for the module as ``make run`` runs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-4000:]}"
    return out


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    repo = tmp_path_factory.mktemp("dvc-code") / "project"
    shutil.copytree(ROOT / "ferd", repo / "ferd", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "params").mkdir()
    shutil.copy(ROOT / "params" / "ci.yaml", repo / "params" / "ci.yaml")
    for name in (".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(repo),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    _run(["git", "init", "-q"], repo, env)
    _run([str(BIN / "ferd"), "params", "use", "ci"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "ci preset"], repo, env)
    _run([str(BIN / "ferd"), "warm", "--", str(BIN / "dvc"), "repro"], repo, env)  # as `make run` does
    return repo, env


def test_git_status_after_repro_lists_no_lock_file(project):
    repo, env = project
    assert (repo / "out" / ".teacher.lock").is_file()  # ferd's lock beside the directory it wrote
    listed = [line[3:] for line in _run(["git", "status", "--porcelain", "--untracked-files=all"], repo,
                                        env).splitlines()]
    assert not [p for p in listed if Path(p).name.startswith(".") and p.endswith(".lock")], listed
    assert not [p for p in listed if p.endswith(".ferd-task.json")], listed
    # what is left for git is what DVC asks to add: its lock files, .gitignore files, the uncached metrics and plots
    assert "out/evaluation/metrics.json" in listed and "dvc.lock" in listed
    assert all(p.endswith(("dvc.lock", ".gitignore")) or p.startswith(("out/evaluation/metrics.json",
                                                                          "out/evaluation/plots/", "out/live/"))
               for p in listed), listed


def test_metrics_are_outside_the_cache_and_shown_by_dvc(project):
    repo, env = project
    cache = repo / ".dvc" / "cache" / "files" / "md5"

    def cached(path: Path) -> bool:
        md5 = hashlib.md5(path.read_bytes()).hexdigest()
        return (cache / md5[:2] / md5[2:]).is_file()

    assert not cached(repo / "out" / "evaluation" / "metrics.json")
    assert not cached(repo / "out" / "evaluation" / "plots" / "per_class_pgd20.csv")
    assert cached(repo / "out" / "evaluation" / "history.json")  # the rest of the directory is cached
    shown = _run([str(BIN / "dvc"), "metrics", "show"], repo, env)
    assert "out/evaluation/metrics.json" in shown and "student.clean.avg" in shown
    assert "per_class_pgd20.csv" in _run([str(BIN / "dvc"), "plots", "show", "--json"], repo, env)
    assert "up to date" in _run([str(BIN / "dvc"), "status"], repo, env)


def test_editing_evaluation_code_changes_the_evaluation_stage_not_the_teacher(project):
    repo, env = project
    source = repo / "ferd" / "evaluation" / "metrics.py"
    text = source.read_text()
    try:
        source.write_text(text + "# an edit\n")
        status = _run([str(BIN / "dvc"), "status"], repo, env)
    finally:
        source.write_text(text)
    changed = re.findall(r"^(\S[^\n]*?):\s*$", status, flags=re.M)
    assert "evaluation" in changed and "modified:" in status and "ferd/evaluation" in status, status
    assert "teacher-fetch" not in changed and not any("synthesis" in c for c in changed), status
    assert "up to date" in _run([str(BIN / "dvc"), "status"], repo, env)


def test_metrics_json_is_strict_json(project):
    repo, _env = project

    def refuse(constant: str) -> None:
        raise ValueError(f"non-finite {constant} in metrics.json")

    metrics = json.loads((repo / "out" / "evaluation" / "metrics.json").read_text(), parse_constant=refuse)
    assert "student.pgd20.nsd" in metrics


def test_dvclive_curves_are_listed_by_exp_show_and_drawn_by_plots_show(project, tmp_path):
    repo, env = project
    epochs = len(json.loads((repo / "out" / "evaluation" / "history.json").read_text()))
    live = repo / "out" / "live"
    for name in ("student/loss", "student/kl_adv", "generator/gen", "p/max", "synthesis/within_label_share"):
        rows = (live / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()
        assert rows[0].split("\t") == ["step", name.split("/")[1]]
        assert [int(r.split("\t")[0]) for r in rows[1:]] == list(range(epochs)), name  # one row per epoch, none twice
    shown = json.loads(_run([str(BIN / "dvc"), "exp", "show", "--json"], repo, env))
    data = shown[0]["data"] if isinstance(shown, list) else shown
    metrics = json.dumps(data)
    assert "out/live/metrics.json" in metrics and "kl_adv" in metrics and "within_label_share" in metrics
    html = tmp_path / "plots"
    _run([str(BIN / "dvc"), "plots", "show", "-o", str(html)], repo, env)
    page = (html / "index.html").read_text()
    assert "out/live/plots/metrics/student/loss.tsv" in page and "out/live/plots/metrics/p/min.tsv" in page
    assert "up to date" in _run([str(BIN / "dvc"), "status"], repo, env)
