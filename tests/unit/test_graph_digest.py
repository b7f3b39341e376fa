"""Each stage's digest (:func:`ferd.stages.dvc_yaml.stage_digests`): every stage command of ``dvc.yaml`` carries
the digest of its own entry, and ``ferd stage`` refuses parameters that would give that entry otherwise, so
``dvc exp run -S`` of a parameter that shapes the pipeline files never runs a stale stage, and regenerating the
files changes the commands (and reruns the stages) whose entries changed, no others."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ferd.plan.resolve import load_config
from ferd.stages.dvc_yaml import dvc_stages, stage_digests

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "params" / "ci.yaml"  # 2 rounds, method ferd, a teacher trained on digits
IMAGE = "registry.example/ferd@sha256:" + "a" * 64
ROUNDS = {f"{s}-r{r}" for r in (0, 1) for s in ("synthesis", "pool-store", "distillation")}
EVERY = {"teacher-fetch", "evaluation", *ROUNDS}


def _changed(*overrides: str) -> set[str]:
    """The tasks whose digest ``overrides`` change (a task the graph no longer has counts as changed)."""
    before, after = stage_digests(load_config(CI)), stage_digests(load_config(CI, list(overrides)))
    return {task for task in before if after.get(task) != before[task]}


@pytest.mark.parametrize("change, tasks", [
    ("rounds=1", {"evaluation", "synthesis-r1", "pool-store-r1", "distillation-r1"}),  # r0 is the same stage
    ("method=cmi", EVERY - {"teacher-fetch"}),  # their params lists; the teacher's has no method
    ("teacher.source=teachers/t.safetensors", {"teacher-fetch"}),  # the file becomes its dependency
    ("data_root=data/elsewhere", {"teacher-fetch", "evaluation"}),  # the stages that read the dataset
    ("evaluation.attacks=[clean, fgsm]", {"evaluation"}),  # its plots
    (f"container.image={IMAGE}", EVERY),  # every command runs in the image
])
def test_a_parameter_changes_the_digests_of_the_entries_it_shapes_and_no_other(change, tasks):
    assert _changed(change) == tasks


@pytest.mark.parametrize("change", ["epochs=4", "synthesis.lambda_uni=2.0", "seed=7", "evaluation.n_examples=40",
                                    "device=cuda", "student.arch=resnet18", "teacher.arch=resnet18", "dataset=cifar10"])
def test_a_parameter_that_shapes_no_entry_changes_no_digest(change):
    """The architectures and the dataset change only the labels of the final stage's plots and artifact, not what
    it runs, reads or writes: experiments over them run as before."""
    assert _changed(change) == set()


def test_every_command_carries_its_digest_wherever_ferd_is_installed(tmp_path):
    cfg = load_config(CI)
    want = stage_digests(cfg)
    assert set(want) == EVERY and all(re.fullmatch(r"[0-9a-f]{16}", d) for d in want.values())
    assert len(set(want.values())) == len(want)
    for root in (ROOT, tmp_path):  # ferd inside the project (code deps) or outside it (the version pin)
        for task, stage in dvc_stages(cfg, root=root).items():
            assert f" --graph-digest {want[task]} " in stage["cmd"], (root, task)


def test_a_stage_refuses_parameters_that_give_it_another_entry_before_any_work(tmp_path, capsys):
    from ferd.cli import main

    theirs = stage_digests(load_config(CI, ["data_root=data/elsewhere"]))["teacher-fetch"]
    assert main(["stage", "teacher-fetch", "--params", str(CI), "--graph-digest", theirs, "--out",
                 str(tmp_path / "t")]) == 2
    assert not (tmp_path / "t").exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"its digest {theirs}" in err and f"give it {stage_digests(load_config(CI))['teacher-fetch']}" in err
    assert "ferd params dvc-yaml" in err


def test_a_stage_the_parameters_graph_lacks_is_refused(tmp_path, capsys):
    from ferd.cli import main

    cfg2 = load_config(CI)
    one_round = tmp_path / "one.yaml"
    one_round.write_text(CI.read_text().replace("rounds: 2", "rounds: 1"))
    assert main(["stage", "synthesis", "--params", str(one_round), "--round", "1", "--teacher", str(tmp_path / "t"),
                 "--student", str(tmp_path / "d"), "--previous", str(tmp_path / "s"),
                 "--graph-digest", stage_digests(cfg2)["synthesis-r1"], "--out", str(tmp_path / "s1")]) == 2
    assert not (tmp_path / "s1").exists()
    assert "have no such stage (1 round)" in capsys.readouterr().err


def test_data_root_and_container_are_params_of_the_stages_they_shape():
    """In no fingerprint, but DVC must run the stages they shape when `dvc exp run -S` changes them, for the
    digest check to stop them."""
    stages = dvc_stages(load_config(CI))
    assert all(st["params"][-1] == "container" for st in stages.values())
    assert {task for task, st in stages.items() if "data_root" in st["params"]} == {"teacher-fetch", "evaluation"}


def test_ferd_stage_all_has_no_graph_digest_and_still_reads_its_parameters(tmp_path, capsys):
    """`ferd stage all` is no graph stage: no --graph-digest, and its parameters are read as before (here up to the
    device check that follows them)."""
    from ferd.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["stage", "all", "--params", str(CI), "--out", str(tmp_path / "o"), "--graph-digest", "0" * 16])
    assert stop.value.code == 2
    assert "unrecognized arguments: --graph-digest" in capsys.readouterr().err
    assert main(["stage", "all", "--params", str(CI), "--out", str(tmp_path / "o"), "--device", "cuda:0"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
