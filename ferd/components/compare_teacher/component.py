"""Kubeflow component: the shared teacher of a comparison (:func:`ferd.compare.runner.prepare_teacher_dir`)."""

from kfp import dsl
from kfp.dsl import Model, Output

from ferd.components import base_image


@dsl.component(base_image=base_image(), install_kfp_package=False)
def compare_teacher(params_json: str, evaluate: bool, teacher: Output[Model]):
    """Train or load the teacher every arm shares, and evaluate it once (``eval/``)."""
    import json
    from pathlib import Path

    from ferd.compare.runner import prepare_teacher_dir
    from ferd.plan.resolve import parse_config

    ckpt, sha = prepare_teacher_dir(parse_config(json.loads(params_json)), Path(teacher.path), evaluate=evaluate)
    teacher.metadata.update({"checkpoint": Path(ckpt).name, "sha256": sha})
