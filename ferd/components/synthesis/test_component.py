"""The synthesis component: interface, and round 1 run locally from imported round-0 artifacts."""

import torch

from ferd.components.conftest import check_component, run_locally, stage_pipeline
from ferd.components.synthesis.component import synthesis
from ferd.data.pool import read_shard


def test_interface():
    check_component(synthesis, inputs={"params_yaml": "String", "overrides": "List", "round_index": "Integer",
                                       "device": "String", "teacher": "system.Model@0.0.1",
                                       "student": "system.Model@0.0.1", "previous_generation": "system.Artifact@0.0.1",
                                       "launch": "String"},
                    outputs={"generation": "system.Artifact@0.0.1"},
                    optional={"student", "previous_generation", "launch"})


def test_round_1_runs_locally_and_matches_the_stage(tmp_path, ci_params_yaml, stage_artifacts):
    a = stage_artifacts
    run_locally(stage_pipeline("synthesis", a, 2, 1, "synthesis-test"), tmp_path,
                params_yaml=ci_params_yaml, overrides=[])
    (out,) = tmp_path.glob("synthesis-test-*/synthesis/generation")
    ref = a / "round-1" / "synthesis"
    got_shard, ref_shard = (read_shard(d / "shard" / "round=1" / "part-0.parquet") for d in (out, ref))
    assert torch.equal(got_shard.images, ref_shard.images) and torch.equal(got_shard.labels, ref_shard.labels)
    got, want = (torch.load(d / "reweighting.pt", weights_only=True) for d in (out, ref))
    assert torch.equal(got["p"], want["p"]) and torch.equal(got["scores"], want["scores"])


def test_round_1_launched_as_a_two_process_trainjob_matches_the_stage(tmp_path, ci_params_yaml, stage_artifacts,
                                                                       trainjob_runner):
    """The synthesis task with the ``distributed`` block: a TrainJob run by the Kubernetes stand-in on 2
    processes (the generator in DDP, each rank its rows); the kept batch and p of the one-process stage."""
    a, (api, launch) = stage_artifacts, trainjob_runner
    run_locally(stage_pipeline("synthesis", a, 2, 1, "synthesis-launch-test", launch=launch), tmp_path,
                params_yaml=ci_params_yaml, overrides=[])
    assert len([k for k in api.created if k.startswith("trainjobs/")]) == 1
    (out,) = tmp_path.glob("synthesis-launch-test-*/synthesis/generation")
    ref = a / "round-1" / "synthesis"
    got_shard, ref_shard = (read_shard(d / "shard" / "round=1" / "part-0.parquet") for d in (out, ref))
    assert torch.equal(got_shard.labels, ref_shard.labels)
    assert torch.allclose(got_shard.images, ref_shard.images, rtol=0, atol=5e-4)  # float rounding across ranks
    got, want = (torch.load(d / "reweighting.pt", weights_only=True) for d in (out, ref))
    assert torch.allclose(got["p"], want["p"], atol=1e-3)
