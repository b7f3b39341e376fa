"""The distillation component: interface, and round 1 run locally from imported artifacts."""

import json
import os
from pathlib import Path

import torch
from kfp import dsl

from components.conftest import check_component, run_locally
from components.distillation.component import distillation
from ferd.checkpoint import load_state_dict


def test_interface():
    check_component(distillation, inputs={"params_yaml": "String", "overrides": "List", "round_index": "Integer",
                                          "device": "String", "teacher": "system.Model@0.0.1",
                                          "generation": "system.Artifact@0.0.1", "pool": "system.Dataset@0.0.1",
                                          "previous_student": "system.Model@0.0.1", "launch": "String"},
                    outputs={"student": "system.Model@0.0.1"}, optional={"previous_student", "launch"})


def _round_1(a: Path, name: str, **launch: str):
    """A test pipeline: round 1's distillation task on the imported stage artifacts under ``a``."""

    @dsl.pipeline(name=name)
    def p(params_yaml: str, overrides: list):
        teacher = dsl.importer(artifact_uri=str(a / "teacher"), artifact_class=dsl.Model).output
        generation = dsl.importer(artifact_uri=str(a / "round-1" / "synthesis"), artifact_class=dsl.Artifact).output
        pool = dsl.importer(artifact_uri=str(a / "round-1" / "pool"), artifact_class=dsl.Dataset).output
        previous = dsl.importer(artifact_uri=str(a / "round-0" / "distillation"), artifact_class=dsl.Model).output
        distillation(params_yaml=params_yaml, overrides=overrides, round_index=1, device="cpu", teacher=teacher,
                     generation=generation, pool=pool, previous_student=previous, **launch)

    return p


def test_round_1_runs_locally_and_matches_the_stage(tmp_path, ci_params_yaml, stage_artifacts):
    a = stage_artifacts
    run_locally(_round_1(a, "distillation-test"), tmp_path, params_yaml=ci_params_yaml, overrides=[])
    (out,) = tmp_path.glob("distillation-test-*/distillation/student")
    got, ref = (load_state_dict(d / "student.safetensors") for d in (out, a / "round-1" / "distillation"))
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["next_round"] == 2


def test_round_1_launched_as_a_two_process_trainjob_matches_the_stage(tmp_path, monkeypatch, ci_params_yaml,
                                                                       stage_artifacts):
    """With the cluster's ``distributed`` block the task submits the stage as a Kubeflow Trainer TrainJob
    (here to a local stand-in of the Kubernetes API that runs the job's command as one node with 2
    processes), waits, and copies its verified artifact: the student of the one-process stage."""
    import sys
    import threading

    from ferd.launch import Launch

    a = stage_artifacts
    root = Path(__file__).resolve().parents[2]
    monkeypatch.syspath_prepend(str(root / "tests"))
    from k8s_standin import K8sStandIn
    bindir = Path(sys.executable).parent
    api = K8sStandIn(execute={"PET_NPROC_PER_NODE": "2", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root),
                              "PATH": f"{bindir}:{os.environ['PATH']}", "TMPDIR": str(tmp_path)})
    threading.Thread(target=api.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "standin", "cluster": {"server": api.url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "standin", "user": "u", "namespace": "ferd"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("FERD_IMAGE", "ghcr.io/ferd/ferd:test")
    launch = Launch(namespace="ferd", scratch_uri=str(tmp_path / "scratch"), gpus_per_node=0, poll_s=1).to_json()

    try:
        run_locally(_round_1(a, "distillation-launch-test", launch=launch), tmp_path, params_yaml=ci_params_yaml,
                    overrides=[])
    finally:
        api.shutdown()
        api.server_close()
    assert not api.errors, api.errors
    (job,) = [k for k in api.created if k.startswith("trainjobs/")]
    assert api.exit_status[job.split("/")[1]] == 0
    (out,) = tmp_path.glob("distillation-launch-test-*/distillation/student")
    got, ref = (load_state_dict(d / "student.safetensors") for d in (out, a / "round-1" / "distillation"))
    worst = max(float((got[k] - ref[k]).abs().max() / ref[k].abs().max().clamp_min(1e-12))
                for k in ref if ref[k].is_floating_point())
    assert worst < 1e-3  # 2 processes against 1: float rounding only
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["next_round"] == 2
