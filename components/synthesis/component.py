"""Kubeflow component of stage 2, synthesis with reweighting (:func:`ferd.stages.synthesis`)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from components import base_image


@dsl.component(base_image=base_image(), install_kfp_package=False)
def synthesis(params_yaml: str, overrides: list, round_index: int, device: str, teacher: Input[Model],
              generation: Output[Artifact], student: Input[Model] = None, previous_generation: Input[Artifact] = None):
    """One round of the generation stage: FAE shard, generator state, p, scores and margins.

    ``student`` / ``previous_generation`` are the distillation / synthesis outputs of round
    ``round_index - 1`` (absent in round 0). ``device`` overrides the parameters' device
    (``cuda`` on a GPU node) unless empty.
    """
    from ferd.stages import config_from_text
    from ferd.stages import synthesis as synthesize

    cfg = config_from_text(params_yaml, list(overrides) + ([f"device={device}"] if device else []))
    artifact = synthesize(cfg, generation.path, round_index=round_index, teacher=teacher.path,
                          student=student.path if student is not None else None,
                          previous=previous_generation.path if previous_generation is not None else None)
    generation.metadata.update({"round": round_index, "epochs": [artifact.epochs.start, artifact.epochs.stop],
                                "rows": artifact.rows, "p": artifact.p})
