"""The generic stage component: interface, and pool-store of round 1 run through it equals the stage's output."""

import torch

from ferd.components.conftest import run_locally, stage_pipeline
from ferd.components.stage.component import MAX_INPUTS, stage
from ferd.stages.pool_store import load_pool


def test_interface():
    spec = stage.component_spec
    assert {k: v.type for k, v in spec.inputs.items()} == {
        "name": "String", "params_yaml": "String", "overrides": "List", "round_index": "Integer",
        "device": "String", "flags": "List", **{f"input_{i}": "system.Artifact@0.0.1" for i in range(MAX_INPUTS)}}
    assert {k for k, v in spec.inputs.items() if v.optional} == {f"input_{i}" for i in range(MAX_INPUTS)}
    assert {k: v.type for k, v in spec.outputs.items()} == {"output": "system.Artifact@0.0.1"}


def test_pool_store_through_the_generic_component_equals_the_stage(tmp_path, ci_params_yaml, stage_artifacts,
                                                                    ci_cfg):
    a = stage_artifacts

    p = stage_pipeline("pool-store", a, 2, 1, "stage-test", generic=True)
    run_locally(p, tmp_path, params_yaml=ci_params_yaml, overrides=[])
    (out,) = tmp_path.glob("stage-test-*/stage/output")
    got, ref = load_pool(ci_cfg, out), load_pool(ci_cfg, a / "round-1" / "pool")
    assert got.rounds == [0, 1] and all(torch.equal(x, y) for x, y in zip(got.tensors(), ref.tensors()))
