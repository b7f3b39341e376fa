"""Shared fixtures of the component tests: the CI parameters and real stage artifacts to import."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from kfp import dsl

from ferd.plan.resolve import load_config
from ferd.plan.presets import PRESETS

ROOT = Path(__file__).resolve().parents[2]  # the checkout (tests/ beside ferd/)
CI = PRESETS / "ci.yaml"


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the component subprocesses inherit it
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def ci_cfg():
    return load_config(CI)


@pytest.fixture(scope="session")
def ci_params_yaml() -> str:
    from ferd.pipeline.dag import params_text

    return params_text(CI)[0]


@pytest.fixture(scope="session")
def stage_artifacts(tmp_path_factory, ci_cfg) -> Path:
    """Every stage of the CI parameters run in-process: DIR/teacher, DIR/round-<r>/{synthesis,pool,distillation}."""
    from ferd.stages import run_stages

    out = tmp_path_factory.mktemp("stages")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_stages(ci_cfg, out, evaluate=False)
    finally:
        torch.set_num_threads(n)
    return out


def run_locally(pipeline_func, root: Path, **arguments):
    """Run a (test) pipeline with kfp.local.SubprocessRunner(use_venv=False); returns its task."""
    from kfp import local

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(base image|no effect in the current local runner).*")
        return pipeline_func(**arguments)


def stage_pipeline(stage: str, artifacts: Path, rounds: int, round_index: int | None, name: str,
                   generic: bool = False, **extra):
    """A test pipeline of one graph task (``stage``, round ``round_index``; None for a stage that runs once) wired
    as :mod:`ferd.pipeline.dag` wires it, from the graph: each input imported from its producer's directory under
    ``artifacts`` (``ferd stage all``'s layout), as the artifact class the component declares; ``generic``: through
    the generic ``stage`` component instead of the stage's own. ``extra`` goes to the component (``launch``)."""
    from ferd.pipeline.dag import component_function, generic_stage
    from ferd.plan.graph import unroll

    tasks = {t.id: t for t in unroll(rounds)}
    task = tasks[stage if round_index is None else f"{stage}-r{round_index}"]
    fn = generic_stage if generic else component_function(task.stage)
    classes = {"system.Model": dsl.Model, "system.Artifact": dsl.Artifact, "system.Dataset": dsl.Dataset}
    declared = {k: v.type.split("@")[0] for k, v in fn.component_spec.inputs.items()}

    def p(params_yaml, overrides):
        def imported(inp, producer: str):
            cls = dsl.Artifact if generic else classes[declared[inp.kfp]]
            return dsl.importer(artifact_uri=tasks[producer].dir(str(artifacts)), artifact_class=cls).output

        kwargs = {"params_yaml": params_yaml, "overrides": overrides}
        if generic:
            kwargs.update(name=task.stage.name, round_index=-1 if round_index is None else round_index,
                          device="cpu" if task.stage.gpu_device else "", flags=[inp.flag for inp, _ in task.inputs],
                          **{f"input_{i}": imported(inp, producer) for i, (inp, producer) in enumerate(task.inputs)})
        else:
            if round_index is not None:
                kwargs["round_index"] = round_index
            if task.stage.gpu_device:
                kwargs["device"] = "cpu"
            kwargs.update({inp.kfp: imported(inp, producer) for inp, producer in task.inputs})
        fn(**kwargs, **extra)

    p.__annotations__ = {"params_yaml": str, "overrides": list}  # types, not this module's postponed strings
    return dsl.pipeline(name=name)(p)


def check_component(component, inputs: dict[str, str], outputs: dict[str, str], optional: set[str] = frozenset(),
                    library: str = "ferd.stages"):
    """The component's interface, image and command: a thin lightweight component over ``library``."""
    from ferd.core.image import PLACEHOLDER

    spec = component.component_spec
    got_in = {k: v.type for k, v in spec.inputs.items()}
    assert got_in == inputs
    assert {k: v.type for k, v in spec.outputs.items()} == outputs
    assert {k for k, v in spec.inputs.items() if v.optional} == set(optional)
    c = spec.implementation.container
    assert c.image == PLACEHOLDER
    script = " ".join(c.command)
    assert "pip install" not in script  # install_kfp_package=False: the image has kfp and ferd
    assert f"from {library} import" in script


@pytest.fixture
def trainjob_runner(tmp_path, monkeypatch):
    """A local stand-in of the Kubernetes API (``tests/support/k8s_standin.py``) that runs every TrainJob's command
    as one node with 2 processes, KUBECONFIG pointing at it, and the ``launch`` JSON of a ``distributed``
    block writing under ``tmp_path/scratch``. Yields (stand-in, launch); checks afterwards that every job
    was submitted properly and exited 0."""
    import json
    import os
    import sys
    import threading

    from ferd.stages.launch import Launch

    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    from support.k8s_standin import K8sStandIn

    api = K8sStandIn(execute={"PET_NPROC_PER_NODE": "2", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
                              "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "TMPDIR": str(tmp_path)})
    threading.Thread(target=api.serve_forever, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "standin", "cluster": {"server": api.url}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "standin", "user": "u", "namespace": "ferd"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("FERD_IMAGE", "ghcr.io/ferd/ferd@sha256:" + "0" * 64)
    try:
        yield api, Launch(namespace="ferd", scratch_uri=str(tmp_path / "scratch"), gpus_per_node=0, poll_s=1).to_json()
    finally:
        api.shutdown()
        api.server_close()
    assert not api.errors, api.errors
    jobs = [k.split("/")[1] for k in api.created if k.startswith("trainjobs/")]
    assert jobs and all(api.exit_status[j] == 0 for j in jobs)
