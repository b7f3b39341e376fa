"""The distillation component: interface, and round 1 run locally from imported artifacts."""

import json
from pathlib import Path

import torch

from ferd.components.conftest import check_component, run_locally, stage_pipeline
from ferd.components.distillation.component import distillation
from ferd.core.checkpoint import load_state_dict


def test_interface():
    check_component(distillation, inputs={"params_yaml": "String", "overrides": "List", "round_index": "Integer",
                                          "device": "String", "teacher": "system.Model@0.0.1",
                                          "generation": "system.Artifact@0.0.1", "pool": "system.Dataset@0.0.1",
                                          "previous_student": "system.Model@0.0.1", "launch": "String"},
                    outputs={"student": "system.Model@0.0.1"}, optional={"previous_student", "launch"})


def _student_metadata(tmp_path: Path, name: str) -> dict:
    """The ``student`` Model artifact's metadata, as the task reported it to Kubeflow."""
    (out,) = tmp_path.glob(f"{name}-*/distillation/executor_output.json")
    return json.loads(out.read_text())["artifacts"]["student"]["artifacts"][0]["metadata"]


def test_round_1_runs_locally_and_matches_the_stage(tmp_path, ci_cfg, ci_params_yaml, stage_artifacts):
    a = stage_artifacts
    run_locally(stage_pipeline("distillation", a, 2, 1, "distillation-test"), tmp_path,
                params_yaml=ci_params_yaml, overrides=[])
    (out,) = tmp_path.glob("distillation-test-*/distillation/student")
    got, ref = (load_state_dict(d / "student.safetensors") for d in (out, a / "round-1" / "distillation"))
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["next_round"] == 2
    # the Model artifact says what model it is (from the student file the stage wrote), for the UI and lineage
    meta = _student_metadata(tmp_path, "distillation-test")
    teacher_sha = json.loads((a / "teacher" / "model_card.json").read_text())["sha256"]
    assert {k: meta[k] for k in ("arch", "num_classes", "teacher_sha256", "method", "dataset", "round", "complete")} \
        == {"arch": ci_cfg.student.arch, "num_classes": 10, "teacher_sha256": teacher_sha, "method": ci_cfg.method,
            "dataset": "digits", "round": 1, "complete": True}


def test_round_1_launched_as_a_two_process_trainjob_matches_the_stage(tmp_path, ci_cfg, ci_params_yaml,
                                                                       stage_artifacts, trainjob_runner):
    """With the cluster's ``distributed`` block the task submits the stage as a Kubeflow Trainer TrainJob
    (here to a local stand-in of the Kubernetes API that runs the job's command as one node with 2
    processes), waits, and copies its verified artifact: the student of the one-process stage."""
    a, (api, launch) = stage_artifacts, trainjob_runner
    run_locally(stage_pipeline("distillation", a, 2, 1, "distillation-launch-test", launch=launch), tmp_path,
                params_yaml=ci_params_yaml, overrides=[])
    assert len([k for k in api.created if k.startswith("trainjobs/")]) == 1
    (out,) = tmp_path.glob("distillation-launch-test-*/distillation/student")
    got, ref = (load_state_dict(d / "student.safetensors") for d in (out, a / "round-1" / "distillation"))
    worst = max(float((got[k] - ref[k]).abs().max() / ref[k].abs().max().clamp_min(1e-12))
                for k in ref if ref[k].is_floating_point())
    assert worst < 1e-3  # 2 processes against 1: float rounding only
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["next_round"] == 2
    meta = _student_metadata(tmp_path, "distillation-launch-test")
    assert meta["arch"] == ci_cfg.student.arch and meta["num_classes"] == 10 and meta["round"] == 1
