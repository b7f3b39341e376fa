"""``dvc repro`` as the main job: the DAG, params, metrics, a no-op rerun, selective reruns, an S3 remote.

Runs DVC (a subprocess, as users do) in a fresh git repository with the CI preset (2 rounds,
seconds per stage). The embedded default itself (`make run`) is timed in the README.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support import golden
from ferd.plan.resolve import load_config
from ferd.stages.dvc_yaml import dvc_stages, mismatches, render
from ferd.plan.presets import render_params
from ferd.plan.fingerprint import scope_keys

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str], ok: bool = True) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    if ok:
        assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-4000:]}"
    return out


@pytest.fixture
def project(tmp_path) -> tuple[Path, dict[str, str]]:
    repo = tmp_path / "project"
    (repo / "params").mkdir(parents=True)
    shutil.copy(ROOT / "params" / "ci.yaml", repo / "params" / "ci.yaml")
    for name in (".dvcignore",):
        shutil.copy(ROOT / name, repo / name)
    shutil.copytree(ROOT / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    _run(["git", "init", "-q"], repo, env)
    _run([str(BIN / "ferd"), "params", "use", "ci"], repo, env)
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "ci preset"], repo, env)
    return repo, env


def _ran(output: str) -> list[str]:
    """The stages DVC ran, by name (a round's stage is ``rounds/round-NN/dvc.yaml:<name>`` in DVC's output)."""
    return re.findall(r"Running stage '(?:[^':]*:)?([^']+)'", output)


def test_repro_metrics_noop_and_selective_rerun(project):
    repo, env = project
    dvc = str(BIN / "dvc")
    first = _ran(_run([str(BIN / "ferd"), "warm", "--", dvc, "repro"], repo, env))  # as `make run` does
    assert first[0] == "teacher-fetch" and first[-1] == "evaluation" and len(first) == 2 + 3 * 2
    assert golden.stages_fingerprint(repo / "out") == golden.load()["stages"]  # forked stages: the same bytes
    metrics = _run([dvc, "metrics", "show"], repo, env)
    written = json.loads((repo / "out" / "evaluation" / "metrics.json").read_text())
    for attack in ("clean", "pgd20"):
        for stat in ("avg", "worst", "nsd"):  # DVC shows no column for a null (undefined) value
            key = f"student.{attack}.{stat}"
            assert key in written and (written[key] is None or key in metrics)
    assert _ran(_run([dvc, "repro"], repo, env)) == []  # a no-op
    assert "up to date" in _run([dvc, "status"], repo, env)
    plots = _run([dvc, "plots", "show", "--json"], repo, env)
    assert "per_class_pgd20.csv" in plots and "class-weights" in plots and "predictions_student_pgd20.csv" in plots
    shown, _ = json.JSONDecoder().raw_decode(plots)  # stdout first; any warning follows on stderr
    assert not shown.get("errors"), shown.get("errors")
    for r in range(2):  # each round's grid of kept synthetic images, as an image plot
        assert [p["type"] for p in shown["data"][f"out/round-{r}/synthesis/samples.png"]] == ["image"]
    curves = {k.removeprefix("out/live/plots/metrics/") for k in shown["data"] if k.startswith("out/live/plots/")}
    assert {"generator/gen.tsv", "generator/adv.tsv", "student/loss.tsv"} <= curves  # the DVCLive loss curves
    dag = _run([dvc, "dag", "--dot"], repo, env)
    r0, r1 = "rounds/round-00/dvc.yaml:", "rounds/round-01/dvc.yaml:"
    assert f'"teacher-fetch" -> "{r0}synthesis-r0"' in dag and f'"{r0}distillation-r0" -> "{r1}synthesis-r1"' in dag
    assert f'"{r1}distillation-r1" -> "evaluation"' in dag  # one graph across the files
    _run(["git", "add", "-A"], repo, env)
    _run(["git", "commit", "-qm", "first run"], repo, env)
    # a synthesis parameter: synthesis and everything after it, never the teacher
    rerun = _ran(_run([dvc, "exp", "run", "-S", "synthesis.lambda_uni=2.0"], repo, env))
    assert "teacher-fetch" not in rerun
    assert set(rerun) == set(first) - {"teacher-fetch"}
    # an evaluation parameter: only the evaluation
    assert _ran(_run([dvc, "exp", "run", "-S", "evaluation.n_examples=40"], repo, env)) == ["evaluation"]
    # a baseline's parameter: nothing of a FERD run
    assert _ran(_run([dvc, "exp", "run", "-S", "baseline.cmi.lr=0.01"], repo, env)) == []
    # another number of rounds, another method or another teacher source needs another dvc.yaml: a stage whose entry
    # it changes is refused, with the fix, before DVC runs anything after it (issue 18; the stages it does not
    # change run as parameters say); a failed experiment leaves its parameters in the workspace, so restore them
    r0 = ["synthesis-r0", "pool-store-r0", "distillation-r0"]
    for change, ran in (("rounds=1", [*r0, "synthesis-r1"]), ("method=cmi", ["synthesis-r0"]),
                        ("teacher.source=teachers/t.safetensors", ["teacher-fetch"]),
                        ("data_root=elsewhere", ["teacher-fetch"])):  # in no fingerprint, but a param of the stage
        out = _run([dvc, "exp", "run", "-S", change], repo, env, ok=False)
        assert _ran(out) == ran, change
        assert "the stage graph (dvc.yaml) was made from parameters that shape this stage otherwise" in out, change
        assert "regenerate it with `ferd params dvc-yaml`" in out, change
        _run(["git", "checkout", "params.yaml"], repo, env)


def test_replacing_a_local_teacher_file_reruns_the_teacher_stage(tmp_path):
    """Issue 18: the teacher checkpoint (when a local file) is a dependency of the teacher stage."""
    import torch

    from ferd.core.checkpoint import save_state_dict
    from ferd.models import create_model

    repo = tmp_path / "project"
    (repo / "teachers").mkdir(parents=True)
    shutil.copytree(ROOT / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}

    def teacher(seed: int) -> None:
        torch.manual_seed(seed)
        save_state_dict(create_model("cnn-4", num_classes=10).state_dict(), repo / "teachers" / "t.safetensors")

    teacher(0)
    _run(["git", "init", "-q"], repo, env)
    _run([str(BIN / "ferd"), "params", "use", str(ROOT / "params" / "ci.yaml"), "-S",
          "teacher.source=teachers/t.safetensors", "-S", "teacher.arch=cnn-4"], repo, env)
    dvc = str(BIN / "dvc")
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    assert "teachers/t.safetensors" in stages["teacher-fetch"]["deps"]
    assert _ran(_run([dvc, "repro", "teacher-fetch"], repo, env)) == ["teacher-fetch"]
    assert "teacher-fetch" not in _run([dvc, "status", "teacher-fetch"], repo, env)
    teacher(1)
    status = _run([dvc, "status", "teacher-fetch"], repo, env)
    assert "teacher-fetch" in status and "modified:" in status and "t.safetensors" in status


def test_push_pull_through_an_s3_remote_then_verify(project, s3):
    repo, env = project
    env = {**env, "AWS_ENDPOINT_URL": s3.endpoint, **{k: os.environ[k] for k in os.environ if k.startswith("AWS_")}}
    dvc, ferd = str(BIN / "dvc"), str(BIN / "ferd")
    _run([dvc, "repro"], repo, env)
    _run([dvc, "remote", "add", "-d", "store", "s3://ferd/dvcstore"], repo, env)
    _run([dvc, "remote", "modify", "store", "endpointurl", s3.endpoint], repo, env)
    _run([dvc, "push"], repo, env)
    assert s3.keys("ferd", "dvcstore/")
    _run(["git", "add", "-A"], repo, env)  # the metrics and plots are outside DVC's cache (cache: false): in git
    _run(["git", "commit", "-qm", "run"], repo, env)
    shutil.rmtree(repo / "out")
    shutil.rmtree(repo / ".dvc" / "cache")
    _run(["git", "checkout", "--", "out"], repo, env)
    _run([dvc, "pull"], repo, env)
    out = _run([ferd, "lineage", "verify", "out"], repo, env)
    assert "OK: 8 artifacts" in out
    assert _ran(_run([dvc, "repro"], repo, env)) == []


def test_committed_dvc_yaml_matches_params_yaml_and_params_yaml_is_the_embedded_default():
    cfg = load_config(ROOT / "params.yaml")
    assert cfg == load_config(ROOT / "params" / "embedded.yaml")
    assert (ROOT / "params.yaml").read_text() == render_params(cfg, "params/embedded.yaml")
    assert not mismatches(cfg, ROOT / "dvc.yaml"), "run `ferd params use embedded`"
    stages = {}
    for path in render(cfg):
        stages.update(yaml.safe_load((ROOT / path).read_text())["stages"])
    assert sorted(stages) == sorted(dvc_stages(cfg))
    for name, stage in stages.items():
        kind = {"teacher-fetch": "teacher", "pool-store": "pool"}.get(name.rsplit("-r", 1)[0], name.rsplit("-r", 1)[0])
        keys = list(scope_keys(kind, cfg.method))  # the fingerprint's, then where the data lies and what runs it
        reads_data = name == "evaluation" or (name == "teacher-fetch" and cfg.teacher.source.startswith("train:"))
        assert stage["params"] == [*keys, *(["data_root"] if reads_data else []), "container"], name
        assert not any(k.startswith("baseline") for k in stage["params"]), name  # FERD reads no baseline group


def test_each_round_has_its_own_file_and_fewer_rounds_remove_the_others(tmp_path):
    """A lock per round keeps DVC's per-stage rewrite of dvc.lock constant (docs/results/embedded-default.md, "What
    the stage split costs"); ``ferd params dvc-yaml`` after a smaller ``rounds`` leaves no stale round behind."""
    from ferd.stages.dvc_yaml import write_dvc_yaml

    three = load_config(ROOT / "params" / "ci.yaml", ["epochs=3", "rounds=3"])
    written = write_dvc_yaml(three, tmp_path / "dvc.yaml")
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        "dvc.yaml", "rounds/round-00/dvc.yaml", "rounds/round-01/dvc.yaml", "rounds/round-02/dvc.yaml"]
    r2 = yaml.safe_load((tmp_path / "rounds/round-02/dvc.yaml").read_text())["stages"]
    assert list(r2) == ["synthesis-r2", "pool-store-r2", "distillation-r2"]
    assert all(st["wdir"] == "../.." for st in r2.values())
    assert list(yaml.safe_load((tmp_path / "dvc.yaml").read_text())["stages"]) == ["teacher-fetch", "evaluation"]
    (tmp_path / "rounds/round-02/dvc.lock").write_text("schema: '2.0'\n")
    two = load_config(ROOT / "params" / "ci.yaml")
    assert mismatches(two, tmp_path / "dvc.yaml") == [str(tmp_path / "dvc.yaml"), str(tmp_path / "rounds/round-00/dvc.yaml"),
                                                       str(tmp_path / "rounds/round-01/dvc.yaml"),
                                                       str(tmp_path / "rounds/round-02/dvc.yaml")]
    write_dvc_yaml(two, tmp_path / "dvc.yaml")
    assert not (tmp_path / "rounds/round-02").exists()
    assert mismatches(two, tmp_path / "dvc.yaml") == []


def test_params_check_names_the_file_that_differs(tmp_path, capsys):
    from ferd.cli import main

    files = ["--params", str(tmp_path / "params.yaml"), "--dvc-yaml", str(tmp_path / "dvc.yaml")]
    assert main(["params", "use", "ci", *files]) == 0
    assert main(["params", "check", *files]) == 0
    (tmp_path / "rounds" / "round-01" / "dvc.yaml").unlink()
    capsys.readouterr()
    assert main(["params", "check", *files]) == 1
    assert capsys.readouterr().out.strip() == (f"{tmp_path / 'rounds' / 'round-01' / 'dvc.yaml'} does not match "
                                               f"{tmp_path / 'params.yaml'}: run `ferd params dvc-yaml`")


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "params").glob("*.yaml")
                                           if not p.stem.startswith("compare-")))  # tests/e2e/test_compare.py
def test_every_preset_is_valid(preset):
    cfg = load_config(ROOT / "params" / f"{preset}.yaml")
    assert render_params(cfg, preset)  # round-trips (checked inside)
