"""ferd's image, built for real (``make image``: image/build.sh) and every stage run in it, through both front
doors: the Kubeflow DAG under ``kfp.local.DockerRunner`` and ``dvc repro`` with ``container:`` set. Both give the
golden bytes of ``ferd run`` on the CI preset (one thread, the AVX2 kernel pins of ``conftest.py``, passed into
the containers), and the stage manifests written in the container name the image by digest (and carry the
signature of the caller's ``FERD_SIGNING_KEY``, which reaches the containers).

The build runs first (minutes from nothing: podman from the OS packages when no engine works, a Debian base
from the package mirror when no registry answers, torch's CUDA wheels; seconds when its layers are cached).
Where no engine works and none can be installed (not root, no apt-get), the module is skipped with that reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import golden

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow
PINS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _engine_possible() -> bool:
    works = any(shutil.which(e) and subprocess.run([e, "info"], capture_output=True).returncode == 0
                for e in ("podman", "docker"))
    return works or (os.getuid() == 0 and shutil.which("apt-get") is not None)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERD_")}
    env.setdefault("CONTAINERS_CONF", str(ROOT / "image" / "containers.conf"))  # what image/build.sh uses
    env.update(PINS, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", **extra)
    return env


@pytest.fixture(scope="module")
def image() -> dict:
    if not _engine_possible():
        pytest.skip("no working podman/docker here, and podman cannot be installed (needs root and apt-get)")
    res = subprocess.run(["bash", "image/build.sh"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=3600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    print(res.stdout[-600:])  # build time, size, digest
    return json.loads((ROOT / "build" / "image.json").read_text())


def _in_image(image: dict, *args: str, entrypoint: str | None = None) -> str:
    cmd = [image["engine"], "run", "--rm", *(["--entrypoint", entrypoint] if entrypoint else []), image["ref"], *args]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, check=True).stdout


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_image_runs_ferd_as_a_non_root_user_and_carries_its_revision(image):
    assert image["ref"].endswith(image["digest"]) and image["digest"].startswith("sha256:")
    assert _in_image(image, "--version").strip() == "ferd 0.1.0"
    assert "teacher-fetch" in _in_image(image, "stage", "--help")
    assert _in_image(image, "-u", entrypoint="id").strip() == "1000"
    inspect = subprocess.run([image["engine"], "image", "inspect", image["ref"]], env=_env(), capture_output=True,
                             text=True, check=True)
    labels = json.loads(inspect.stdout)[0]["Config"]["Labels"]
    assert labels["org.opencontainers.image.revision"] == image["revision"] == _git_head()
    # the CA bundle of the build (a build secret) is in no layer and no configuration
    shown = _in_image(image, "-c", "ls -A /run/secrets 2>/dev/null; pip config list; echo $PIP_CERT", entrypoint="sh")
    assert "cert" not in shown.lower() and "/run/secrets/ca" not in shown, shown


def _git_head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def test_the_kubeflow_dag_in_containers_gives_ferd_runs_bytes(image, tmp_path):
    out = tmp_path / "kfp-docker"
    res = subprocess.run([str(BIN / "ferd"), "pipeline", "run-local", "--runner", "docker", "--image-from-build",
                          "--params", str(ROOT / "params" / "ci.yaml"), "--out", str(out), "--threads", "1"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    got = json.loads(res.stdout[res.stdout.rindex('{\n "out"'):])  # after the tasks' logs
    assert Path(got["report_md"]).read_text().startswith("#")  # the report a user opens, named last
    # the stage split's bytes: ferd run's tensors and metrics, in a stage's student file (its metadata says
    # round and completeness); the golden tests hold the two equal
    want = golden.load()["stages"]
    assert golden.metrics_sha(Path(got["report"]) / "metrics.json") == want["metrics"] == golden.load()["run"]["metrics"]
    assert _sha(Path(got["student"]) / "student.safetensors") == want["student"]
    shards = {f"pool/{p.parent.name}/{p.name}": _sha(p) for p in out.glob("kfp/*/pool-store*/pool/round=*/*.parquet")}
    assert shards == {k: v for k, v in want.items() if k.startswith("pool/")}
    manifest = json.loads((Path(got["report"]) / "manifest.json").read_text())
    code = manifest["code"]
    assert (code["image"], code["image_digest"]) == (image["ref"], image["digest"])
    assert code["git_commit"] == image["revision"]  # from the image (FERD_GIT_COMMIT), not a checkout


def test_a_task_failing_in_its_container_fails_the_run(image, tmp_path):
    """A stage that fails at once inside its container (a teacher file this machine has but the container does
    not see) is a FAILURE, not the SUCCESS kfp reads from a container already removed."""
    teacher = tmp_path / "host-only.safetensors"
    teacher.write_bytes(b"not a checkpoint")
    res = subprocess.run([str(BIN / "ferd"), "pipeline", "run-local", "--runner", "docker", "--image-from-build",
                          "--params", str(ROOT / "params" / "ci.yaml"), "-S", f"teacher.source={teacher}",
                          "--out", str(tmp_path / "out"), "--threads", "1"],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert res.returncode == 2
    assert "Inner task failed" in res.stderr and "teacher-fetch" in res.stderr.splitlines()[-1]
    assert "teacher.source: checkpoint not found" in res.stdout + res.stderr  # the task's own error, in its log
    assert not list((tmp_path / "out").glob("kfp/*/evaluation"))


def test_dvc_repro_with_stages_in_the_image_gives_the_same_bytes(image, tmp_path):
    repo = tmp_path / "project"
    repo.mkdir()
    shutil.copy(ROOT / ".dvcignore", repo / ".dvcignore")
    env = _env(DVC_NO_ANALYTICS="1", FERD_SIGNING_KEY="container-test-key-" + "k" * 24)  # reaches every stage
    run = lambda *cmd: subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=1800)  # noqa: E731
    res = run(str(BIN / "ferd"), "params", "use", "ci", "-S", f"container.image={image['ref']}", "-S",
              f"container.engine={image['engine']}")
    assert res.returncode == 0, res.stderr
    assert f"{image['engine']} run --rm" in (repo / "dvc.yaml").read_text()
    assert run(str(BIN / "dvc"), "init", "--no-scm", "-q").returncode == 0
    res = run(str(BIN / "dvc"), "repro")
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert golden.stages_fingerprint(repo / "out") == golden.load()["stages"]
    manifest = json.loads((repo / "out" / "evaluation" / "manifest.json").read_text())
    assert manifest["code"]["image"] == image["ref"]
    assert manifest["signature"].startswith("hmac-sha256:")  # signed in the container with the caller's key
    verified = run(str(BIN / "ferd"), "lineage", "verify", "out")
    assert verified.returncode == 0, verified.stdout + verified.stderr  # and verified here with it
