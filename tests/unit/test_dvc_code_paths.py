"""Issue 35 (6): each DVC stage depends on the ferd code it runs, computed from the sources; the
evaluation's metrics and plots are outputs outside the cache; the student is a DVC model artifact."""

from __future__ import annotations

from pathlib import Path

import yaml

from ferd import __version__
from ferd.stages import code_deps
from ferd.stages.code_deps import code_paths
from ferd.stages.dvc_yaml import dvc_files, dvc_stages, mismatches, render
from ferd.plan.graph import STAGES
from ferd.plan.resolve import load_config

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "params" / "ci.yaml"


def _under(paths: tuple[str, ...], prefix: str) -> bool:
    return any(p == prefix or p.startswith(f"{prefix}/") for p in paths)


def test_each_stage_depends_on_the_modules_it_imports_and_not_on_the_other_stages():
    paths = {s.name: code_paths(s.name) for s in STAGES}
    for s in STAGES:  # the command line and the stage's own module, always
        assert {"ferd/__init__.py", "ferd/cli/stage.py", f"ferd/stages/{s.component}.py"} <= set(paths[s.name]), s.name
    assert _under(paths["synthesis"], "ferd/synthesis")
    assert "ferd/attacks" in paths["evaluation"]  # a whole package, as its directory
    # every evaluation module but the Kubeflow report's rendering (ferd.evaluation.portable), which it does not run
    assert _under(paths["evaluation"], "ferd/evaluation") and "ferd/evaluation/portable.py" not in paths["evaluation"]
    assert "ferd/stages/teacher_fetch.py" in paths["evaluation"]  # it loads the teacher artifact
    assert "ferd/stages/pool_store.py" in paths["distillation"]  # it reads the pool
    for other in ("ferd/synthesis", "ferd/evaluation", "ferd/stages/synthesis.py", "ferd/stages/evaluation.py"):
        assert not _under(paths["teacher-fetch"], other), other  # the dispatcher's imports are not followed


def test_code_paths_are_sorted_existing_and_the_same_every_time():
    for s in STAGES:
        paths = code_paths(s.name)
        assert list(paths) == sorted(set(paths)) and all((ROOT / p).exists() for p in paths)
        code_deps.code_paths.cache_clear()
        code_deps.code_modules.cache_clear()
        assert code_paths(s.name) == paths
    cfg = load_config(CI)
    assert render(cfg, root=ROOT) == render(cfg, root=ROOT)


def test_computing_every_stage_reads_each_module_once(monkeypatch):
    """The cost is counted, not timed: every stage's code paths together parse each ferd module at most once."""
    for cached in (code_deps._modules, code_deps._imports, code_deps.code_modules, code_deps.code_paths):
        cached.cache_clear()
    parsed: list[str] = []
    real = code_deps.ast.parse
    monkeypatch.setattr(code_deps.ast, "parse", lambda source, filename, *a, **k: parsed.append(filename) or
                        real(source, filename, *a, **k))
    for s in STAGES:
        code_paths(s.name)
    assert parsed and len(parsed) == len(set(parsed)) <= len(code_deps._modules())


def test_the_committed_files_list_the_code_and_params_check_sees_a_new_import(monkeypatch):
    cfg = load_config(ROOT / "params.yaml")
    assert not mismatches(cfg, ROOT / "dvc.yaml")
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert _under(stages["evaluation"]["deps"], "ferd/evaluation")
    assert not _under(stages["teacher-fetch"]["deps"], "ferd/evaluation")
    real = code_deps.code_paths
    monkeypatch.setattr(code_deps, "code_paths", lambda stage: tuple(sorted({*real(stage), "ferd/algorithm/bench.py"})))
    assert str(ROOT / "dvc.yaml") in mismatches(cfg, ROOT / "dvc.yaml")  # as if a stage now imported ferd/algorithm/bench.py


def test_installed_elsewhere_the_command_pins_the_version_instead(tmp_path):
    cfg = load_config(CI)
    stages = dvc_stages(cfg, root=tmp_path)  # ferd is not inside tmp_path
    for name, stage in stages.items():
        assert f"--graph-ferd-version {__version__} " in stage["cmd"], name
        assert not any(d.startswith(("ferd/", "/")) for d in stage.get("deps", [])), name
    inside = dvc_stages(cfg, root=ROOT)
    assert "--graph-ferd-version" not in inside["evaluation"]["cmd"] and _under(inside["evaluation"]["deps"],
                                                                                "ferd/evaluation")
    sub = dvc_stages(cfg, root=ROOT / "compare")  # a project below the checkout: ferd is outside it
    assert "--graph-ferd-version" in sub["evaluation"]["cmd"]


def test_a_stage_refuses_another_ferd_version_than_the_graph_was_made_with(tmp_path, capsys):
    from ferd.cli import main

    assert main(["stage", "teacher-fetch", "--params", str(CI), "--graph-ferd-version", "0.0.0", "--out",
                 str(tmp_path / "t")]) == 2
    assert not (tmp_path / "t").exists()
    err = capsys.readouterr().err
    assert f"made with ferd 0.0.0 but ferd {__version__} is installed" in err and "ferd params dvc-yaml" in err


def test_metrics_and_plots_are_uncached_outputs_that_overlap_no_other():
    cfg = load_config(CI)
    ev = dvc_stages(cfg)["evaluation"]
    assert ev["metrics"] == [{"out/evaluation/metrics.json": {"cache": False}}, {"out/live/metrics.json": {"cache": False}}]
    assert {"out/evaluation/plots": {"cache": False}} in ev["outs"] and {"out/live/plots": {"cache": False}} in ev["outs"]
    paths = [next(iter(o)) if isinstance(o, dict) else o for o in ev["outs"] + ev["metrics"]]
    assert not any(a != b and (b + "/").startswith(a + "/") for a in paths for b in paths)
    assert "metrics" not in dvc_files(cfg)["dvc.yaml"]  # the stage declares them


def test_the_student_is_a_model_artifact():
    cfg = load_config(CI)
    art = dvc_files(cfg)["dvc.yaml"]["artifacts"]["student"]
    assert art["path"] == f"out/round-{cfg.num_rounds - 1}/distillation/student.safetensors"
    assert art["type"] == "model" and cfg.dataset in art["labels"] and art["desc"]


def test_the_tracked_stages_keep_one_live_directory_and_the_evaluation_owns_it():
    cfg = load_config(CI)
    stages = dvc_stages(cfg)
    tracked = sorted(name for name, st in stages.items() if "--live out/live " in st["cmd"])
    assert tracked == sorted(["evaluation", *(f"{s}-r{r}" for s in ("synthesis", "distillation")
                                              for r in range(cfg.num_rounds))])
    assert {"out/live/plots/metrics": {"x": "step"}} in dvc_files(cfg)["dvc.yaml"]["plots"]


def test_the_methods_loaded_by_name_are_code_of_every_stage_that_depends_on_the_method():
    from ferd.stages.code_deps import code_modules

    for stage in ("synthesis", "pool-store", "distillation", "evaluation", "compare"):
        mods = code_modules(stage)
        assert {"ferd.synthesis.ferd", "ferd.synthesis.epoch", "ferd.baselines.cmi", "ferd.baselines.dfhl"} <= mods
    assert not any(m.startswith(("ferd.baselines", "ferd.synthesis.ferd")) for m in code_modules("teacher-fetch"))
