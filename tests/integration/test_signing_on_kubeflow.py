"""Signing with a ``distributed`` block on Kubeflow (issue 34, item 6): every process of a stage's job gets
``$FERD_SIGNING_KEY`` from the cluster's signing secret, by reference, as the S3 credentials; the task copies
the job's artifact into its output only once it verified (manifest checksum, signature, stage, round,
fingerprint, file hashes), else refuses naming the artifact and copies nothing. Against the local stand-in
of the Kubernetes API (``tests/support/k8s_standin.py``); rows of the fault suite table."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import threading
from pathlib import Path

import pytest
import yaml

from ferd.stages.launch import Launch, run_stage_job, stage_job, submit
from ferd.pipeline.dag import DEFAULT_CLUSTER, compile_pipeline, load_cluster, params_text
from ferd.stages.artifacts import config_from_text, read_manifest, write_manifest
from support.faultlog import record
from support.images import IMAGE, TEST_IMAGE
from support.k8s_standin import RUNTIME, K8sStandIn

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "params" / "ci.yaml"
KEY = "kubeflow signing key, " + "k" * 24
SIGNING = {"name": "ferd-signing-key", "key": "signing-key"}
SECRETS = {"ferd-signing-key": {"signing-key": KEY},
           "ferd-s3-credentials": {"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}}
REF = {"name": "FERD_SIGNING_KEY", "valueFrom": {"secretKeyRef": {"name": "ferd-signing-key", "key": "signing-key"}}}
INPUTS = {"teacher": "s3://ferd/run/teacher", "synthesis": "s3://ferd/run/round-1/synthesis",
          "pool": "s3://ferd/run/round-1/pool", "previous": "s3://ferd/run/round-0/distillation"}

pytestmark = pytest.mark.usefixtures("single_thread")


def _cluster_file(tmp_path: Path, **changes) -> Path:
    cluster = yaml.safe_load(DEFAULT_CLUSTER.read_text())
    cluster.update({"signing_secret": SIGNING, "distributed": {"namespace": "ferd", "scratch_uri": "s3://ferd/jobs",
                                                               "nodes": 2, "gpus_per_node": 4}}, **changes)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(cluster))
    return path


def _launch(tmp_path: Path, engine: str = "pytorchjob", scratch: str | None = None) -> Launch:
    """The cluster's ``distributed`` block as its tasks receive it, writing under ``scratch``."""
    launch = Launch.from_json(load_cluster(_cluster_file(tmp_path)).launch())
    return dataclasses.replace(launch, engine=engine, scratch_uri=scratch or str(tmp_path / "scratch"), poll_s=0.05)


@pytest.fixture
def params_yaml() -> str:
    return params_text(CI)[0]


@pytest.fixture
def api(request):
    server = K8sStandIn(secrets=SECRETS, **getattr(request, "param", {}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()
    assert not server.errors, server.errors


@pytest.mark.parametrize("engine", ["trainer", "pytorchjob"])
def test_every_process_of_a_job_gets_the_signing_key_from_the_secret(api, tmp_path, params_yaml, engine,
                                                                     monkeypatch):
    monkeypatch.setenv("FERD_SIGNING_KEY", KEY)
    spec, _ = stage_job(_launch(tmp_path, engine), TEST_IMAGE, "distillation", params_yaml, [], 1, INPUTS)
    submit(spec, engine, api.configuration())
    body = api.created[f"{'trainjobs' if engine == 'trainer' else 'pytorchjobs'}/{spec.name}"]
    if engine == "trainer":  # the runtime patch of every replicated job of the runtime: every node runs it
        patched = {job["name"]: c["env"] for p in body["spec"]["runtimePatches"]
                   for job in p["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
                   for c in job["template"]["spec"]["template"]["spec"]["containers"]}
        replicas = {job["name"] for job in RUNTIME["spec"]["template"]["spec"]["replicatedJobs"]}
        assert body["spec"]["trainer"]["numNodes"] == 2
    else:
        patched = {kind: c["env"] for kind, r in body["spec"]["pytorchReplicaSpecs"].items()
                   for c in r["template"]["spec"]["containers"]}
        replicas = {"Master", "Worker"}
    assert set(patched) == replicas and all(REF in env for env in patched.values()), patched
    assert KEY not in json.dumps(body)  # by reference only: the key's value is never in the job object


def test_the_compiled_data_parallel_tasks_pass_the_signing_secret_to_their_jobs(tmp_path):
    docs = list(yaml.safe_load_all(compile_pipeline(tmp_path / "c.yaml", CI, _cluster_file(tmp_path), IMAGE)
                                   .read_text()))
    launches = [json.loads(t["inputs"]["parameters"]["launch"]["runtimeValue"]["constant"])
                for t in docs[0]["root"]["dag"]["tasks"].values() if "launch" in t.get("inputs", {}).get("parameters", {})]
    assert launches and all(s["secret_env"]["FERD_SIGNING_KEY"] == ["ferd-signing-key", "signing-key"]
                            for s in launches)


def _artifact(where: Path, params_yaml: str, key: str | None, stage: str = "distillation", round_index: int = 1,
              monkeypatch=None) -> Path:
    """A distillation artifact of round 1 as a job's rank 0 writes it, sealed under ``key`` (None: unsigned)."""
    cfg = config_from_text(params_yaml)
    where.mkdir(parents=True)
    (where / "student.safetensors").write_bytes(b"student weights " * 64)
    with monkeypatch.context() as m:
        m.delenv("FERD_SIGNING_KEY", raising=False)
        if key is not None:
            m.setenv("FERD_SIGNING_KEY", key)
        write_manifest(where, stage, cfg, round_index=round_index)
    return where


def _returns(api: K8sStandIn, scratch: Path, artifact: Path) -> None:
    """Every job created "returns" ``artifact``: it appears, as is, where the job writes its output."""
    api.on_create = lambda body: shutil.copytree(artifact, scratch / body["metadata"]["name"])


def _edit(path: Path, **fields) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def _run(api, tmp_path, params_yaml, engine: str = "pytorchjob") -> Path:
    out = tmp_path / "task-output" / "student"
    run_stage_job(_launch(tmp_path, engine), "distillation", params_yaml, [], 1, INPUTS, out, image=TEST_IMAGE,
                  configuration=api.configuration())
    return out


def test_a_signed_job_artifact_is_copied_and_nothing_it_does_not_list(api, tmp_path, params_yaml, monkeypatch):
    monkeypatch.setenv("FERD_SIGNING_KEY", KEY)
    artifact = _artifact(tmp_path / "made", params_yaml, KEY, monkeypatch=monkeypatch)
    (artifact / "extra.bin").write_bytes(b"not in the manifest")  # written after the manifest
    _returns(api, tmp_path / "scratch", artifact)
    out = _run(api, tmp_path, params_yaml)
    read_manifest(out, "distillation", config_from_text(params_yaml), round_index=1)
    copied = sorted(p.name for p in out.iterdir())
    assert copied == ["manifest.json", "student.safetensors"], copied
    record("a job returns a file its manifest does not list", "extra.bin beside a signed distillation artifact",
           copied == ["manifest.json", "student.safetensors"], 0)


CASES = {  # what the job returns, built from a signed artifact; the refusal expected
    "unsigned": (lambda d, p, m: _artifact(d, p, None, monkeypatch=m), "unsigned, and FERD_SIGNING_KEY is set"),
    "signed with another key": (lambda d, p, m: _artifact(d, p, "another key", monkeypatch=m),
                                "signature does not match"),
    "a file changed after signing": (
        lambda d, p, m: (a := _artifact(d, p, KEY, monkeypatch=m), (a / "student.safetensors").write_bytes(b"x"))[0],
        "student.safetensors: sha256 does not match"),
    "the manifest edited": (lambda d, p, m: (a := _artifact(d, p, KEY, monkeypatch=m),
                                             _edit(a / "manifest.json", finished_at="2000-01-01T00:00:00Z"))[0],
                            "checksum does not match"),
    "a manifest of another round": (lambda d, p, m: _artifact(d, p, KEY, round_index=0, monkeypatch=m),
                                    "is from round 0, expected round 1"),
    "a manifest of another stage": (lambda d, p, m: _artifact(d, p, KEY, stage="synthesis", monkeypatch=m),
                                    "holds a 'synthesis' artifact, expected 'distillation'"),
    "a manifest listing a path outside the artifact": (
        lambda d, p, m: (a := _artifact(d, p, KEY, monkeypatch=m),
                         _edit(a / "manifest.json", outputs={"../outside": {"sha256": "0" * 64, "bytes": 1}}))[0],
        "not a path inside the artifact"),
}


@pytest.mark.parametrize("case,engine", [(case, "pytorchjob") for case in CASES]  # past the job's end the
                         + [("unsigned", "trainer"), ("a file changed after signing", "trainer")])  # engine is moot
def test_a_job_artifact_that_does_not_verify_is_refused_and_nothing_is_copied(api, tmp_path, params_yaml,
                                                                             monkeypatch, case, engine):
    monkeypatch.setenv("FERD_SIGNING_KEY", KEY)
    make, expected = CASES[case]
    _returns(api, tmp_path / "scratch", make(tmp_path / "made", params_yaml, monkeypatch))
    out = tmp_path / "task-output" / "student"
    with pytest.raises(ValueError) as exc:
        _run(api, tmp_path, params_yaml, engine)
    (job,) = [k.split("/")[1] for k in api.created]
    message = str(exc.value)
    named = expected in message and f"job {job}" in message and "\n" not in message
    nothing = not out.exists() or not any(out.iterdir())
    record(f"a {engine} job returns {case}", "FERD_SIGNING_KEY set in the task; artifact placed at the job's output",
           named and nothing, 0)
    assert named, message
    assert nothing, sorted(out.iterdir())


@pytest.mark.parametrize("case", ["unsigned", "a file changed after signing"])
def test_a_job_artifact_in_s3_that_does_not_verify_is_refused_and_nothing_is_copied(s3, api, tmp_path, params_yaml,
                                                                                   monkeypatch, case):
    """The same with the jobs' scratch in S3 (what a cluster uses): a changed file fails its download's sha256
    check (a storage error naming the object), a wrong manifest fails verification; nothing reaches the task."""
    from ferd.core.storage import publish_dir

    monkeypatch.setenv("FERD_SIGNING_KEY", KEY)
    made = CASES[case][0](tmp_path / "made", params_yaml, monkeypatch)
    api.on_create = lambda body: publish_dir(made, f"s3://ferd/jobs/{body['metadata']['name']}")
    out = tmp_path / "task-output" / "student"
    with pytest.raises((ValueError, RuntimeError)) as exc:
        run_stage_job(_launch(tmp_path, scratch="s3://ferd/jobs"), "distillation", params_yaml, [], 1, INPUTS, out,
                      image=TEST_IMAGE, configuration=api.configuration())
    (job,) = [k.split("/")[1] for k in api.created]
    named = f"s3://ferd/jobs/{job}/" in str(exc.value) and {"unsigned": "unsigned, and FERD_SIGNING_KEY is set",
                                                             "a file changed after signing": "sha256 does not match"
                                                             }[case] in str(exc.value)
    nothing = not out.exists() or not any(out.iterdir())
    record(f"a job returns {case} to S3 scratch", "FERD_SIGNING_KEY set in the task", named and nothing, 0)
    assert named, str(exc.value)
    assert nothing, sorted(out.iterdir())


def test_a_job_that_returns_nothing_is_refused_naming_its_artifact(api, tmp_path, params_yaml):
    with pytest.raises(ValueError, match=r"job ferd-distillation-r1-\S+: distillation artifact: \S+/scratch/"
                                         r"ferd-distillation-r1-\S+ is not a ferd distillation artifact"):
        _run(api, tmp_path, params_yaml)
    record("a job succeeds but returns no artifact", "no output at the job's URI", True, 0)


@pytest.mark.parametrize("field,value,expected", [
    ("signing_secret", {"name": "Ferd_Signing_Key"}, "signing_secret.name: expected a Kubernetes secret name"),
    ("signing_secret", {"name": "ferd-signing-key", "key": "signing key"},
     "signing_secret.key: expected a key of a Kubernetes secret"),
    ("image_pull_secrets", ["registry/creds"], "image_pull_secrets.0: expected a Kubernetes secret name")])
def test_a_secret_name_kubernetes_would_refuse_is_refused_when_compiling(tmp_path, field, value, expected,
                                                                        capsys):
    from ferd.cli import main

    path = _cluster_file(tmp_path, **{field: value})
    rc = main(["pipeline", "compile", "--params", str(CI), "--cluster", str(path), "--image", TEST_IMAGE,
               "--out", str(tmp_path / "c.yaml")])
    err = capsys.readouterr().err
    ok = rc == 2 and f"{path}: {expected}" in err and len(err.strip().splitlines()) == 1
    record(f"cluster.yaml names an invalid {field}", f"{value!r}", ok and not (tmp_path / "c.yaml").exists(), 0)
    assert ok, err
    assert not (tmp_path / "c.yaml").exists()


@pytest.mark.parametrize("api", [{"execute": {"PET_NPROC_PER_NODE": "1", "OMP_NUM_THREADS": "1",
                                              "PYTHONPATH": str(ROOT),
                                              "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}}],
                         indirect=True)
def test_a_trainjob_signs_what_it_writes_with_the_key_from_the_secret(api, tmp_path, params_yaml, monkeypatch):
    """The job really runs (``ferd stage synthesis`` under torchrun, one node) with only what its spec gives:
    its manifest is signed under the driver's key and the task accepts it."""
    from ferd.cli import main

    monkeypatch.setenv("FERD_SIGNING_KEY", KEY)
    monkeypatch.setenv("FERD_CACHE", str(tmp_path / "cache"))
    teacher = tmp_path / "teacher"
    assert main(["stage", "teacher-fetch", "--params", str(CI), "--out", str(teacher), "--no-progress",
                 "--threads", "1"]) == 0
    out = tmp_path / "task-output" / "generation"
    run_stage_job(_launch(tmp_path, "trainer"), "synthesis", params_yaml, ["device=cpu"], 0,
                  {"teacher": str(teacher), "student": None, "previous": None}, out, image=TEST_IMAGE,
                  configuration=api.configuration())
    manifest = read_manifest(out, "synthesis", config_from_text(params_yaml), round_index=0)  # under KEY
    signed = manifest.get("signature", "").startswith("hmac-sha256:")
    record("signing_secret with a distributed TrainJob", "FERD_SIGNING_KEY only in the secret the job names",
           signed, 0)
    assert signed
