"""Kubeflow component of stage 1, teacher fetch (:func:`ferd.stages.teacher_fetch`)."""

from kfp import dsl
from kfp.dsl import Model, Output

from ferd.components import base_image


@dsl.component(base_image=base_image(), install_kfp_package=False)
def teacher_fetch(params_yaml: str, overrides: list, teacher: Output[Model]):
    """Fetch (or train) the teacher named by ``teacher.source``: a verified checkpoint plus model card."""
    from ferd.stages import config_from_text
    from ferd.stages import teacher_fetch as fetch

    cfg = config_from_text(params_yaml, overrides)
    artifact = fetch(cfg, teacher.path)
    teacher.metadata.update({"arch": artifact.card["arch"], "num_classes": artifact.card["num_classes"],
                             "sha256": artifact.card["sha256"], "source": artifact.card["source"],
                             "mean": artifact.card["mean"], "std": artifact.card["std"]})
