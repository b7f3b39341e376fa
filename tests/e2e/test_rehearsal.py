"""Issue 18's rehearsal of the paper preset (``params/cifar10-rehearsal.yaml``): the 22-round stage graph of
``cifar10-resnet18`` with the CIFAR-10 test set and the teacher in an S3 bucket (a moto server), tiny budgets.
As a Kubeflow pipeline (``kfp.local``), as ``dvc repro`` and as ``ferd run``: the same student, bit for bit,
and the same metrics. 68 tasks twice over, so opt-in: ``FERD_ACCEPTANCE=1 pytest tests/e2e/test_rehearsal.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ferd.core.checkpoint import load_state_dict
from ferd.cli import main
from ferd.plan.resolve import load_config
from ferd.plan.graph import unroll

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
PRESET = ROOT / "params" / "cifar10-rehearsal.yaml"
TEACHER = SHARED / "models" / "wrn-16-2_cifar10_linf.safetensors"
pytestmark = [pytest.mark.acceptance, pytest.mark.shared, pytest.mark.slow]


def _metrics(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if k != "run.seconds"}


def _equal_students(a: Path, b: Path) -> bool:
    x, y = load_state_dict(a), load_state_dict(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_the_rehearsal_runs_through_every_front_door_from_s3(s3, tmp_path, monkeypatch):
    if not (TEACHER.is_file() and (SHARED / "data" / "cifar10_test.npz").is_file()):
        pytest.skip("needs ../shared (the CIFAR-10 test set and the WRN-16-2 teacher)")
    cfg = load_config(PRESET)
    assert len(unroll(cfg.num_rounds)) == len(unroll(load_config(ROOT / "params" / "cifar10-resnet18.yaml",
                                                                    ["teacher.source=train:cifar10"]).num_rounds)) == 68
    monkeypatch.setenv("FERD_CACHE", str(tmp_path / "cache"))
    s3.client().create_bucket(Bucket="ferd-rehearsal")
    assert main(["data", "pack", "--dataset", "cifar10", "--from", str(SHARED / "data" / "cifar10_test.npz"),
                 "--split", "test", "--to", cfg.data_root]) == 0
    s3.client().upload_file(str(TEACHER), "ferd-rehearsal", "teachers/" + TEACHER.name)

    from ferd.stages.run import run
    from ferd.pipeline.local import run_local

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(cfg, tmp_path / "single", progress=False)
    finally:
        torch.set_num_threads(n)
    single = tmp_path / "single"

    kfp = run_local(PRESET, tmp_path / "kfp", threads=1)
    assert _equal_students(single / "student.safetensors", kfp.student / "student.safetensors")
    assert _metrics(kfp.report / "metrics.json") == _metrics(single / "metrics.json")
    assert sorted(p.name for p in kfp.pool.glob("round=*")) == ["round=21"]  # one shard per pool artifact

    repo = tmp_path / "project"
    (repo / "params").mkdir(parents=True)
    shutil.copy(PRESET, repo / "params" / PRESET.name)
    shutil.copy(ROOT / ".dvcignore", repo / ".dvcignore")
    shutil.copytree(ROOT / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))
    bin_ = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    for cmd in (["git", "init", "-q"], [str(bin_ / "ferd"), "params", "use", "cifar10-rehearsal"],
                ["git", "add", "-A"], ["git", "commit", "-qm", "rehearsal"], [str(bin_ / "dvc"), "repro"]):
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=3600)
        assert proc.returncode == 0, f"{' '.join(cmd)}:\n{(proc.stdout + proc.stderr)[-4000:]}"
    last = repo / "out" / "round-21"
    assert _equal_students(single / "student.safetensors", last / "distillation" / "student.safetensors")
    assert _metrics(repo / "out" / "evaluation" / "metrics.json") == _metrics(single / "metrics.json")
    pools = sorted((repo / "out").glob("round-*/pool"))
    assert len(pools) == 22 and all(len(list(d.glob("round=*"))) == 1 for d in pools)
