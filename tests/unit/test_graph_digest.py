"""The stage graph's digest (:func:`ferd.stages.dvc_yaml.graph_digest`): every stage command of ``dvc.yaml``
carries it, and ``ferd stage`` refuses parameters that would make another graph, so ``dvc exp run -S`` of a
parameter that shapes the pipeline files never runs a stale graph."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ferd.plan.resolve import load_config
from ferd.stages.dvc_yaml import dvc_stages, graph_digest

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "params" / "ci.yaml"
IMAGE = "registry.example/ferd@sha256:" + "a" * 64


def _digest(*overrides: str) -> str:
    return graph_digest(load_config(CI, list(overrides)))


@pytest.mark.parametrize("change", ["rounds=1", "method=cmi", "teacher.source=teachers/t.safetensors",
                                    "data_root=data/elsewhere", "evaluation.attacks=[clean, fgsm]",
                                    f"container.image={IMAGE}"])
def test_a_parameter_that_shapes_the_files_changes_the_digest(change):
    assert _digest(change) != _digest()


@pytest.mark.parametrize("change", ["epochs=4", "synthesis.lambda_uni=2.0", "seed=7", "evaluation.n_examples=40"])
def test_a_parameter_that_does_not_shape_them_keeps_it(change):
    assert _digest(change) == _digest()


def test_every_command_carries_the_same_digest_wherever_ferd_is_installed(tmp_path):
    cfg = load_config(CI)
    want = graph_digest(cfg)
    assert re.fullmatch(r"[0-9a-f]{16}", want)
    for root in (ROOT, tmp_path):  # ferd inside the project (code deps) or outside it (the version pin)
        for name, stage in dvc_stages(cfg, root=root).items():
            assert f" --graph-digest {want} " in stage["cmd"], (root, name)


def test_a_stage_refuses_parameters_that_give_another_graph_before_any_work(tmp_path, capsys):
    from ferd.cli import main

    theirs = _digest("rounds=1")
    assert main(["stage", "teacher-fetch", "--params", str(CI), "--graph-digest", theirs, "--out",
                 str(tmp_path / "t")]) == 2
    assert not (tmp_path / "t").exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"graph {theirs}" in err and f"give {_digest()}" in err and "ferd params dvc-yaml" in err
