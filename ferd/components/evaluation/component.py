"""Kubeflow component of stage 5, evaluation (:func:`ferd.stages.evaluation`)."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Input, Markdown, Metrics, Model, Output

from ferd.components import base_image


@dsl.component(base_image=base_image(), install_kfp_package=False)
def evaluation(params_yaml: str, overrides: list, device: str, teacher: Input[Model], student: Input[Model],
               metrics: Output[Metrics], report: Output[Artifact], summary: Output[Markdown],
               confusion: Output[ClassificationMetrics], html: Output[HTML]):
    """Per-class robustness of teacher and final student (``evaluation.attacks``, e.g. AutoAttack).

    ``report`` holds metrics.json, eval/ (tables, figures, report.md), history.json and
    class_weights.json. For the Kubeflow UI: ``metrics`` the flat metrics, ``summary`` report.md (per-class
    tables of every attack) with its figures inlined, ``html`` the same as one self-contained HTML page,
    ``confusion`` the student's confusion matrix under the last attack evaluated (the strongest of
    ``evaluation.attacks`` as usually listed; every attack's is in ``report``).
    """
    import math

    from ferd.evaluation.portable import inline_images, render_html
    from ferd.stages import config_from_text, node_overrides
    from ferd.stages import evaluation as evaluate

    cfg = config_from_text(params_yaml, node_overrides(overrides, device))
    artifact = evaluate(cfg, report.path, teacher=teacher.path, student=student.path)
    for key, value in sorted(artifact.metrics.items()):
        if value is not None and math.isfinite(value):  # NaN (e.g. a class with no example) stays in metrics.json
            metrics.log_metric(key, float(value))
    text = inline_images(artifact.report.read_text(encoding="utf-8"), artifact.report.parent, root=artifact.dir)
    with open(summary.path, "w", encoding="utf-8") as f:
        f.write(text)
    with open(html.path, "w", encoding="utf-8") as f:
        f.write(render_html(text, "ferd evaluation report"))
    attack = artifact.evaluated_attacks()[-1]
    categories, matrix = artifact.confusion(attack)
    confusion.log_confusion_matrix(categories, matrix)
    confusion.metadata["attack"] = attack
