"""Kubeflow component of stage 5, evaluation (:func:`ferd.stages.evaluation`)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from components import base_image


@dsl.component(base_image=base_image(), install_kfp_package=False)
def evaluation(params_yaml: str, overrides: list, device: str, teacher: Input[Model], student: Input[Model],
               metrics: Output[Metrics], report: Output[Artifact]):
    """Per-class robustness of teacher and final student (``evaluation.attacks``, e.g. AutoAttack).

    ``report`` holds metrics.json, eval/ (tables, figures, report.md), history.json and
    class_weights.json; ``metrics`` the flat metrics for the Kubeflow UI.
    """
    import math

    from ferd.stages import config_from_text
    from ferd.stages import evaluation as evaluate

    cfg = config_from_text(params_yaml, list(overrides) + ([f"device={device}"] if device else []))
    artifact = evaluate(cfg, report.path, teacher=teacher.path, student=student.path)
    for key, value in sorted(artifact.metrics.items()):
        if value is not None and math.isfinite(value):  # NaN (e.g. a class with no example) stays in metrics.json
            metrics.log_metric(key, float(value))
