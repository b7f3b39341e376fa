"""Kubeflow component of stage 2, synthesis with reweighting (:func:`ferd.stages.synthesis`)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Model, Output

from ferd.components import base_image


@dsl.component(base_image=base_image(), install_kfp_package=False)
def synthesis(params_yaml: str, overrides: list, round_index: int, device: str, teacher: Input[Model],
              generation: Output[Artifact], student: Input[Model] = None, previous_generation: Input[Artifact] = None,
              launch: str = ""):
    """One round of the generation stage: FAE shard, generator state, p, scores and margins.

    ``student`` / ``previous_generation`` are the distillation / synthesis outputs of round
    ``round_index - 1`` (absent in round 0). ``device`` overrides the parameters' device
    (``cuda`` on a GPU node) unless empty. ``launch`` (the cluster's ``distributed`` block): run the stage
    as a data-parallel job (:func:`ferd.stages.launch.run_stage_job`).
    """
    from ferd.stages import config_from_text, node_overrides
    from ferd.stages import synthesis as synthesize

    sets = node_overrides(overrides, device)
    if launch:
        from ferd.stages.launch import run_stage_job

        inputs = {"teacher": teacher.uri, "student": student.uri if student is not None else None,
                  "previous": previous_generation.uri if previous_generation is not None else None}
        job = run_stage_job(launch, "synthesis", params_yaml, sets, round_index, inputs, generation.path)
        generation.metadata.update({"round": round_index, "job": job})
        return
    cfg = config_from_text(params_yaml, sets)
    artifact = synthesize(cfg, generation.path, round_index=round_index, teacher=teacher.path,
                          student=student.path if student is not None else None,
                          previous=previous_generation.path if previous_generation is not None else None)
    generation.metadata.update({"round": round_index, "epochs": [artifact.epochs.start, artifact.epochs.stop],
                                "rows": artifact.rows, "p": artifact.p})
