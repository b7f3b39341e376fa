"""The stage graph declared once (ferd.plan.graph) and what is generated from it."""

from __future__ import annotations

import yaml

from ferd.plan.resolve import load_config
from ferd.stages.dvc_yaml import dvc_stages
from ferd.plan.graph import COMPONENTS, STAGES, final_task, unroll


def test_two_rounds_unroll_to_the_dag_of_algorithm_1():
    tasks = unroll(2)
    assert [t.id for t in tasks] == ["teacher-fetch", "synthesis-r0", "pool-store-r0", "distillation-r0",
                                     "synthesis-r1", "pool-store-r1", "distillation-r1", "evaluation"]
    by_id = {t.id: {inp.flag: p for inp, p in t.inputs} for t in tasks}
    assert by_id["synthesis-r0"] == {"teacher": "teacher-fetch"}  # round 0 starts from the initial state
    assert by_id["synthesis-r1"] == {"teacher": "teacher-fetch", "student": "distillation-r0",
                                     "previous": "synthesis-r0"}
    assert by_id["pool-store-r1"] == {"synthesis": "synthesis-r1", "previous": "pool-store-r0"}
    assert by_id["distillation-r1"] == {"teacher": "teacher-fetch", "synthesis": "synthesis-r1",
                                        "pool": "pool-store-r1", "previous": "distillation-r0"}
    assert by_id["evaluation"] == {"teacher": "teacher-fetch", "student": "distillation-r1"}
    assert [t.dir("out") for t in tasks][:2] == ["out/teacher", "out/round-0/synthesis"]
    assert COMPONENTS == ("teacher_fetch", "synthesis", "pool_store", "distillation", "evaluation")


def test_the_traits_name_the_teacher_fetch_and_the_final_stage():
    """The stages the generated files and commands single out are found by their traits, not their names."""
    assert [s.name for s in STAGES if s.fetches_teacher] == ["teacher-fetch"]
    assert [s.name for s in STAGES if s.final] == ["evaluation"]
    assert final_task(3) == unroll(3)[-1]


def test_the_generated_paths_follow_the_graph(monkeypatch):
    """A stage's directory is its graph entry's: changed there, every path of the DVC files that is in it
    follows (the evaluation's outputs, metrics and plots, the student of the model registry)."""
    from dataclasses import replace

    from ferd.plan import graph
    from ferd.stages.dvc_yaml import dvc_files

    moved = tuple(replace(s, subdir=f"{s.subdir}-x") for s in graph.STAGES)
    monkeypatch.setattr(graph, "STAGES", moved)
    monkeypatch.setattr(graph, "BY_NAME", {s.name: s for s in moved})
    cfg = load_config("params/ci.yaml")
    files = dvc_files(cfg)
    text = yaml.safe_dump(files)
    assert "out/evaluation/" not in text and "out/teacher " not in text and "/distillation/" not in text
    assert {"out/evaluation-x/metrics.json": {"cache": False}} in files["dvc.yaml"]["stages"]["evaluation"]["metrics"]
    assert files["dvc.yaml"]["artifacts"]["student"]["path"] == (
        f"out/round-{cfg.num_rounds - 1}/distillation-x/student.safetensors")
    assert any("out/evaluation-x/plots/" in str(p) for p in files["dvc.yaml"]["plots"])


def test_dvc_yaml_is_the_graph():
    cfg = load_config("params/ci.yaml")
    stages = dvc_stages(cfg)
    assert list(stages) == [t.id for t in unroll(cfg.num_rounds)]
    # the distillation reads every round's pool artifact (each holds one shard): all are deps
    assert stages["distillation-r1"]["deps"] == ["out/teacher", "out/round-1/synthesis", "out/round-0/pool",
                                                 "out/round-1/pool", "out/round-0/distillation"]
    assert stages["pool-store-r1"]["deps"] == ["out/round-1/synthesis", "out/round-0/pool"]
    assert "--previous out/round-0/distillation" in stages["distillation-r1"]["cmd"]
    assert "deps" not in stages["teacher-fetch"]


def test_the_kubeflow_dag_runs_every_task_of_the_graph():
    from ferd.pipeline.dag import COMPILED

    spec = next(yaml.safe_load_all(COMPILED.read_text()))
    cfg = load_config("params/embedded.yaml")
    tasks = spec["root"]["dag"]["tasks"]
    assert len(tasks) == len(unroll(cfg.num_rounds)) + 1  # + run-params, which resolves the parameters first
    names = {t["taskInfo"]["name"] for t in tasks.values()}
    assert {"teacher fetch", "evaluation", f"distillation round {cfg.num_rounds - 1}"} <= names
    assert len(STAGES) == 5


def test_every_stage_component_takes_exactly_what_the_graph_wires():
    """Each component's signature, checked against its stage's declaration: the parameters, ``round_index`` per
    round, ``device`` on GPU stages, ``launch`` on data-parallel ones, one input per graph input (optional when
    absent in round 0), and the output the graph's consumers read."""
    from ferd.pipeline.dag import component_function, generic_stage

    for stage in STAGES:
        fn = component_function(stage)
        if fn is generic_stage:
            continue
        spec = fn.component_spec
        want = {"params_yaml", "overrides", *(["round_index"] if stage.per_round else []),
                *(["device"] if stage.gpu_device else []), *(["launch"] if stage.data_parallel else []),
                *(inp.kfp for inp in stage.inputs)}
        assert set(spec.inputs) == want, stage.name
        optional = {k for k, v in spec.inputs.items() if v.optional}
        assert optional == {inp.kfp for inp in stage.inputs if inp.of == "previous"} | (
            {"launch"} if stage.data_parallel else set()), stage.name
        assert stage.output in spec.outputs, stage.name
