"""The distillation component: interface, and round 1 run locally from imported artifacts."""

import json

import torch
from kfp import dsl

from components.conftest import check_component, run_locally
from components.distillation.component import distillation
from ferd.checkpoint import load_state_dict


def test_interface():
    check_component(distillation, inputs={"params_yaml": "String", "overrides": "List", "round_index": "Integer",
                                          "device": "String", "teacher": "system.Model@0.0.1",
                                          "generation": "system.Artifact@0.0.1", "pool": "system.Dataset@0.0.1",
                                          "previous_student": "system.Model@0.0.1"},
                    outputs={"student": "system.Model@0.0.1"}, optional={"previous_student"})


def test_round_1_runs_locally_and_matches_the_stage(tmp_path, ci_params_yaml, stage_artifacts):
    a = stage_artifacts

    @dsl.pipeline(name="distillation-test")
    def p(params_yaml: str, overrides: list):
        teacher = dsl.importer(artifact_uri=str(a / "teacher"), artifact_class=dsl.Model).output
        generation = dsl.importer(artifact_uri=str(a / "round-1" / "synthesis"), artifact_class=dsl.Artifact).output
        pool = dsl.importer(artifact_uri=str(a / "round-1" / "pool"), artifact_class=dsl.Dataset).output
        previous = dsl.importer(artifact_uri=str(a / "round-0" / "distillation"), artifact_class=dsl.Model).output
        distillation(params_yaml=params_yaml, overrides=overrides, round_index=1, device="cpu", teacher=teacher,
                     generation=generation, pool=pool, previous_student=previous)

    run_locally(p, tmp_path, params_yaml=ci_params_yaml, overrides=[])
    (out,) = tmp_path.glob("distillation-test-*/distillation/student")
    got, ref = (load_state_dict(d / "student.safetensors") for d in (out, a / "round-1" / "distillation"))
    assert all(torch.equal(got[k], ref[k]) for k in ref)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["next_round"] == 2
