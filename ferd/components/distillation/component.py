"""Kubeflow component of stage 4, UTAE distillation (:func:`ferd.stages.distillation`)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from ferd.components import base_image


@dsl.component(base_image=base_image(), install_kfp_package=False)
def distillation(params_yaml: str, overrides: list, round_index: int, device: str, teacher: Input[Model],
                 generation: Input[Artifact], pool: Input[Dataset], student: Output[Model],
                 previous_student: Input[Model] = None, launch: str = ""):
    """One round of UTAE distillation (Eq. 10-11): student, optimiser, scheduler and RNG state.

    ``generation`` / ``pool`` are this round's synthesis / pool outputs; ``previous_student``
    the distillation output of round ``round_index - 1`` (absent in round 0). ``launch`` (the cluster's
    ``distributed`` block): run the stage as a data-parallel job (:func:`ferd.stages.launch.run_stage_job`).
    ``student``'s metadata: what the artifact made says of its model (arch, num_classes, teacher_sha256,
    method, dataset: :func:`ferd.stages.student_card`), the round, and without ``launch`` its epochs and losses.
    """
    from ferd.stages import config_from_text, node_overrides, student_card
    from ferd.stages import distillation as distill

    sets = node_overrides(overrides, device)
    if launch:
        from ferd.stages.launch import run_stage_job

        inputs = {"teacher": teacher.uri, "synthesis": generation.uri, "pool": pool.uri,
                  "previous": previous_student.uri if previous_student is not None else None}
        job = run_stage_job(launch, "distillation", params_yaml, sets, round_index, inputs, student.path)
        student.metadata.update({"round": round_index, "job": job, **student_card(student.path)})
        return
    cfg = config_from_text(params_yaml, sets)
    artifact = distill(cfg, student.path, round_index=round_index, teacher=teacher.path, synthesis=generation.path,
                       pool=pool.path, previous=previous_student.path if previous_student is not None else None)
    student.metadata.update({"round": round_index, "epochs": [artifact.epochs.start, artifact.epochs.stop],
                             "complete": artifact.complete, **student_card(student.path),
                             "loss": {str(e): v.get("loss") for e, v in artifact.losses.items()}})
