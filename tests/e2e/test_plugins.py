"""Extension points (issue 33): a method with its own synthesiser and student side is one module, and goes
through every front door — ``ferd run``, ``ferd stage all``, ``ferd compare`` — with nothing else changed."""

from __future__ import annotations

import importlib
import json
import sys

import pytest
import yaml

from ferd.cli import main
from ferd.settings.method import METHODS

CI = ["--params", "params/ci.yaml", "--threads", "1"]


@pytest.fixture
def throwaway():
    """Imports tests/support/throwaway_method.py (which registers ``pixel-ce``) and unregisters it afterwards."""
    module = importlib.import_module("support.throwaway_method")
    yield module
    METHODS.pop("pixel-ce", None)
    sys.modules.pop("support.throwaway_method", None)


@pytest.mark.slow
def test_a_method_from_one_module_runs_through_every_front_door(throwaway, tmp_path):
    from ferd.plan.resolve import load_config, resolve

    plan = resolve(load_config("params/ci.yaml", ["method=pixel-ce"]))
    assert plan.method is throwaway.PixelCE and plan.reweighting is None and plan.groups == ()
    assert isinstance(plan.side(), throwaway.CleanDistillation)

    assert main(["run", *CI, "-S", "method=pixel-ce", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    run = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert json.loads((tmp_path / "run" / "params.json").read_text())["method"] == "pixel-ce"
    assert main(["stage", "all", *CI, "-S", "method=pixel-ce", "--out", str(tmp_path / "stages")]) == 0
    split = json.loads((tmp_path / "stages" / "evaluation" / "metrics.json").read_text())
    strip = lambda m: {k: v for k, v in m.items() if k != "run.seconds"}  # noqa: E731
    assert strip(split) == strip(run)  # the stage split and ferd run train the same student

    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump({"base": "ci", "students": ["cnn-8"], "seeds": [0],
                                      "methods": {"ferd": [], "pixel-ce": ["method=pixel-ce"]}}))
    assert main(["compare", "--preset", str(preset), "--out", str(tmp_path / "cmp"), "--threads", "1",
                 "--no-progress"]) == 0
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| pixel-ce |" in table and "clean distillation only" in table


def test_the_throwaway_method_runs_in_the_shared_generation_loop(throwaway):
    """Its generation, written as one class, runs through the loop every method shares."""
    import torch

    from ferd.models import create_model
    from ferd.plan.resolve import load_config, resolve

    plan = resolve(load_config("params/ci.yaml", ["method=pixel-ce", "synthesis.iterations=3",
                                                  "synthesis.batch_size=8"]))
    teacher = create_model("cnn-8", num_classes=10).eval()
    out = plan.synthesizer(10, 32).run_epoch(teacher, teacher, torch.full((10,), 0.1, dtype=torch.float64), 0)
    assert out.images.shape == (8, 3, 32, 32) and len(out.history) == 3
    assert 0.0 <= float(out.images.min()) and float(out.images.max()) <= 1.0
    assert out.best_loss <= out.history[0]["gen"]


def test_an_unknown_method_is_refused_with_the_known_ones(capsys, tmp_path):
    assert main(["run", *CI, "-S", "method=pixel-ce", "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert "method: expected one of ['cmi', 'deepinv', 'dfhl', 'fast', 'ferd', 'zskt'], got 'pixel-ce'" in err
    assert not (tmp_path / "never").exists()


@pytest.fixture
def extensions(monkeypatch):
    """A throwaway per-round stage and a throwaway attack (tests/support/throwaway_extensions.py), removed afterwards."""
    module = importlib.import_module("support.throwaway_extensions")
    module.install(monkeypatch)
    yield module
    module.remove()


@pytest.mark.slow
def test_a_stage_and_an_attack_from_one_module_each_run_through_every_front_door(extensions, tmp_path):
    attacks = "evaluation.attacks=[clean,pgd20,corner]"
    assert main(["run", *CI, "-S", attacks, "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert extensions.SEEN == [(0, 16), (1, 32)]  # the stage ran in memory after every round
    run = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert 0.0 <= run["student.corner.avg"] <= 1.0

    assert main(["stage", "all", *CI, "-S", attacks, "--out", str(tmp_path / "stages")]) == 0
    for r, rows in ((0, 16), (1, 32)):
        assert json.loads((tmp_path / "stages" / f"round-{r}" / "pool-rows" / "rows.json").read_text()) == {"rows": rows}
    split = json.loads((tmp_path / "stages" / "evaluation" / "metrics.json").read_text())
    assert split["student.corner.avg"] == run["student.corner.avg"]

    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump({"base": "ci", "students": ["cnn-8"], "seeds": [0], "set": [attacks],
                                      "methods": {"ferd": [], "fast": ["method=fast"]}}))
    extensions.SEEN.clear()
    assert main(["compare", "--preset", str(preset), "--out", str(tmp_path / "cmp"), "--threads", "1",
                 "--no-progress"]) == 0
    assert sorted(extensions.SEEN) == [(0, 16), (0, 16), (1, 32), (1, 32)]  # the stage ran in both arms' rounds
    assert (tmp_path / "cmp" / "per_class_corner.png").is_file()
    preset.write_text(yaml.safe_dump({"base": "ci", "students": ["cnn-8"], "seeds": [0],
                                      "set": ["evaluation.attacks=[clean,corner]"], "methods": {"ferd": []}}))
    assert main(["compare", "--preset", str(preset), "--out", str(tmp_path / "never")]) == 2  # the report pairs PGD-20
    assert "corner" in (tmp_path / "cmp" / "comparison.md").read_text().lower()


def test_a_stage_from_one_module_is_in_dvc_yaml_and_the_kubeflow_dag(extensions):
    """The throwaway stage needs no other file: the generated dvc.yaml runs it after each round's pool, and the
    Kubeflow DAG runs it through the generic stage component."""
    from ferd.pipeline.dag import build_pipeline
    from ferd.plan.resolve import load_config
    from ferd.stages.dvc_yaml import dvc_stages

    stages = dvc_stages(load_config(CI[1]))
    assert stages["pool-rows-r1"]["deps"][-1] == "out/round-1/pool" and "ferd stage pool-rows" in stages[
        "pool-rows-r1"]["cmd"]
    spec = build_pipeline(CI[1]).pipeline_spec
    assert {"pool-rows-r0", "pool-rows-r1"} <= {t.task_info.name.replace("pool rows round ", "pool-rows-r")
                                                for t in spec.root.dag.tasks.values()}
