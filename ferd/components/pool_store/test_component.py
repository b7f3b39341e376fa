"""The pool-store component: interface, and round 1 run locally from imported artifacts."""

import torch

from ferd.components.conftest import check_component, run_locally, stage_pipeline
from ferd.components.pool_store.component import pool_store
from ferd.stages.pool_store import load_pool


def test_interface():
    check_component(pool_store, inputs={"params_yaml": "String", "overrides": "List", "round_index": "Integer",
                                        "generation": "system.Artifact@0.0.1",
                                        "previous_pool": "system.Dataset@0.0.1"},
                    outputs={"pool": "system.Dataset@0.0.1"}, optional={"previous_pool"})


def test_round_1_runs_locally_and_matches_the_stage(tmp_path, ci_params_yaml, stage_artifacts, ci_cfg):
    a = stage_artifacts
    p = stage_pipeline("pool-store", a, 2, 1, "pool-test")
    task = run_locally(p, tmp_path, params_yaml=ci_params_yaml, overrides=[])
    del task
    (out,) = tmp_path.glob("pool-test-*/pool-store/pool")
    got, ref = load_pool(ci_cfg, out), load_pool(ci_cfg, a / "round-1" / "pool")
    assert got.rounds == [0, 1] and len(got) == len(ref)
    assert all(torch.equal(x, y) for x, y in zip(got.tensors(), ref.tensors()))
