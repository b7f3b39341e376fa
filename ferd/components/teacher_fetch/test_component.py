"""The teacher-fetch component: interface, and a local run equal to the stage function's output."""

import json

import torch
from kfp import dsl

from ferd.components.conftest import check_component, run_locally
from ferd.components.teacher_fetch.component import teacher_fetch
from ferd.core.checkpoint import load_state_dict


def test_interface():
    check_component(teacher_fetch, inputs={"params_yaml": "String", "overrides": "List"},
                    outputs={"teacher": "system.Model@0.0.1"})


def test_runs_locally_and_matches_the_stage(tmp_path, ci_params_yaml, stage_artifacts):
    @dsl.pipeline(name="teacher-fetch-test")
    def p(params_yaml: str, overrides: list):
        teacher_fetch(params_yaml=params_yaml, overrides=overrides)

    task = run_locally(p, tmp_path, params_yaml=ci_params_yaml, overrides=[])
    del task
    (out,) = tmp_path.glob("teacher-fetch-test-*/teacher-fetch/teacher")
    card = json.loads((out / "model_card.json").read_text())
    got, ref = (load_state_dict(d / "teacher.safetensors") for d in (out, stage_artifacts / "teacher"))
    assert all(torch.equal(got[k], ref[k]) for k in ref)  # the same teacher, trained deterministically
    # (not the files' sha256: safetensors 0.8 writes multi-key metadata in a per-process hash order)
    assert card["source"] == "train:digits" and card["arch"] == "cnn-8"
    assert json.loads((out / "manifest.json").read_text())["stage"] == "teacher"
    (executed,) = tmp_path.glob("teacher-fetch-test-*/teacher-fetch/executor_output.json")
    meta = json.loads(executed.read_text())["artifacts"]["teacher"]["artifacts"][0]["metadata"]
    assert {k: meta[k] for k in ("arch", "num_classes", "sha256", "source", "mean", "std")} == \
        {k: card[k] for k in ("arch", "num_classes", "sha256", "source", "mean", "std")}  # the Model says what it is
