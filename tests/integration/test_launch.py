"""A data-parallel stage's job on Kubernetes (ferd/stages/launch.py): the TrainJob the kubeflow SDK posts and the
PyTorchJob manifest against golden files, and submit/wait against a local stand-in of the Kubernetes API.

Regenerate the golden files deliberately: ``PYTHONPATH=tests python tests/integration/test_launch.py``.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from ferd.stages.launch import JobSpec, pytorchjob_manifest, stage_command, submit, wait
from support.k8s_standin import K8sStandIn

GOLDEN = Path(__file__).with_name("launch_golden.json")
SPEC = JobSpec(name="ferd-distillation-r3", namespace="ferd", image="ghcr.io/ferd/ferd:0.1.0",
               command=stage_command("distillation", ["--params", "/params/params.yaml", "--round", "3",
                                                      "--teacher", "s3://ferd/run/teacher",
                                                      "--out", "s3://ferd/run/round-3/distillation"]),
               nodes=2, gpus_per_node=4, env={"AWS_ENDPOINT_URL": "http://minio:9000"},
               secret_env={"AWS_ACCESS_KEY_ID": ("ferd-s3-credentials", "AWS_ACCESS_KEY_ID"),
                           "AWS_SECRET_ACCESS_KEY": ("ferd-s3-credentials", "AWS_SECRET_ACCESS_KEY")})


@pytest.fixture
def api(request):
    server = K8sStandIn(getattr(request, "param", "succeeded"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()
    assert not server.errors, server.errors


def _trainjob_posted() -> dict:
    server = K8sStandIn()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        submit(SPEC, "trainer", server.configuration())
        return server.created[f"trainjobs/{SPEC.name}"]
    finally:
        server.shutdown()
        server.server_close()


def test_the_jobs_match_the_golden_manifests(api):
    golden = json.loads(GOLDEN.read_text())
    assert submit(SPEC, "trainer", api.configuration()) == SPEC.name
    assert api.created[f"trainjobs/{SPEC.name}"] == golden["trainjob"]
    assert pytorchjob_manifest(SPEC) == golden["pytorchjob"]
    trainer = golden["trainjob"]["spec"]["trainer"]
    assert trainer["command"][:4] == ["torchrun", "--no-python", "ferd", "stage"] and trainer["numNodes"] == 2
    assert trainer["resourcesPerNode"] == {"limits": {"nvidia.com/gpu": 4.0}, "requests": {"nvidia.com/gpu": 4.0}}
    assert golden["trainjob"]["spec"]["runtimeRef"]["name"] == "torch-distributed"
    # the S3 credentials by reference only: no secret value in either job object
    text = json.dumps(golden)
    assert text.count('"secretKeyRef"') == 2 + 2 * 2 and "AKIA" not in text  # TrainJob patch; PyTorchJob × 2
    patch = golden["trainjob"]["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    env = patch["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0] == {"name": "AWS_ACCESS_KEY_ID",
                      "valueFrom": {"secretKeyRef": {"name": "ferd-s3-credentials", "key": "AWS_ACCESS_KEY_ID"}}}


@pytest.mark.parametrize("engine", ["trainer", "pytorchjob"])
def test_a_job_is_submitted_and_awaited(api, engine):
    assert submit(SPEC, engine, api.configuration()) == SPEC.name
    wait(SPEC, engine, timeout_s=30, poll_s=0.05, configuration=api.configuration())
    plural = "trainjobs" if engine == "trainer" else "pytorchjobs"
    assert api.reads[f"{plural}/{SPEC.name}"] >= 2  # polled until it finished


@pytest.mark.parametrize("api", ["failed"], indirect=True)
@pytest.mark.parametrize("engine", ["trainer", "pytorchjob"])
def test_a_failed_job_fails_the_wait(api, engine):
    submit(SPEC, engine, api.configuration())
    with pytest.raises(RuntimeError):
        wait(SPEC, engine, timeout_s=30, poll_s=0.05, configuration=api.configuration())


def test_a_job_spec_refuses_no_nodes():
    with pytest.raises(ValueError, match="distributed: expected nodes >= 1"):
        JobSpec(name="x", namespace="ferd", image="i", command=("true",), nodes=0)


if __name__ == "__main__":  # regenerate the golden files (deliberately)
    GOLDEN.write_text(json.dumps({"trainjob": _trainjob_posted(), "pytorchjob": pytorchjob_manifest(SPEC)},
                                 indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
