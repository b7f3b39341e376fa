"""Kubeflow component: one arm of a comparison, a whole ``ferd run`` (:func:`ferd.compare.runner.run_arm_dir`)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from ferd.components import base_image


@dsl.component(base_image=base_image(), install_kfp_package=False)
def compare_run(arm: dict, device: str, teacher: Input[Model], run: Output[Artifact]):
    """``arm`` = {method, student, seed, params_json}: the run's resolved parameters (the teacher is
    replaced by the shared one)."""
    import json
    from pathlib import Path

    from ferd.compare.config import Arm
    from ferd.compare.runner import run_arm_dir
    from ferd.plan.resolve import parse_config

    params = json.loads(arm["params_json"])
    params["device"] = device or params["device"]
    card = json.loads((Path(teacher.path) / "model_card.json").read_text())
    params["teacher"] = dict(params["teacher"], source=str(Path(teacher.path) / card["checkpoint"]),
                             sha256=card["sha256"])
    a = Arm(arm["method"], arm["student"], int(arm["seed"]))
    metrics = run_arm_dir(parse_config(params), a, Path(run.path))
    run.metadata.update({"method": a.method, "student": a.student, "seed": a.seed,
                         "pgd20_worst": metrics.get("student.pgd20.worst")})
