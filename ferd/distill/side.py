"""Student sides: how one student iteration turns a batch drawn from the pool into a loss.

The :class:`~ferd.distill.distiller.Distiller` owns what every method shares — the optimiser, the LR
schedule, the draw of the batch from the pool and its augmentation streams — and asks its side for
the loss. :class:`UtaeSide` is FERD's (Eq. 10-11) and, with RSLAD's settings, the A.8 conversion of the
baselines (:func:`ferd.plan.resolve.resolve` decides which settings); a method with a student side of its own
(DFHL's high-entropy examples, :mod:`ferd.baselines.dfhl`) subclasses :class:`StudentSide`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from ..compute import distributed
from ..compute.switches import attack_model
from ..settings.config import DistillConfig
from ..compute.numerics import NonFiniteLoss
from .loss import robust_distillation_loss, robust_distillation_terms
from .utae import generate_utae, utae_start

if TYPE_CHECKING:
    from .distiller import Distiller


@dataclass
class Draw:
    """One iteration's batch from the pool (the global batch; under torchrun each rank keeps its rows):
    its indices, the FAEs x_F before augmentation, the pool's teacher logits and cached UTAEs (all rows),
    and the iteration's attack and augmentation streams."""

    idx: torch.Tensor
    x_f: torch.Tensor
    pool_logits: torch.Tensor
    cached: torch.Tensor | None
    attack_rng: torch.Generator
    augment_rng: torch.Generator | None


@dataclass(frozen=True)
class IterationPasses:
    """The model passes one student iteration makes per sample: what ``ferd bench`` times bare and counts.

    ``attack_steps`` forward and input-backward passes of the ``attacked`` model, ``teacher_forwards``
    teacher forwards without gradients, and ``student_passes`` training passes of the student (each a forward
    and its share of the backward to inputs and weights)."""

    attacked: Literal["teacher", "student"] | None
    attack_steps: int
    teacher_forwards: int
    student_passes: int

    def flops(self, teacher_macs: int, student_macs: int, batch: int) -> int:
        """FLOPs of the passes for ``batch`` samples, counted as ``ferd bench`` states: 2 FLOPs per MAC, a
        backward to the input one forward, a backward to the input and the weights two."""
        attacked = {"teacher": teacher_macs, "student": student_macs, None: 0}[self.attacked]
        return 2 * batch * (self.attack_steps * 2 * attacked + self.teacher_forwards * teacher_macs
                            + 3 * self.student_passes * student_macs)


class StudentSide:
    """The loss of one student iteration; ``start_epoch`` runs once per distillation epoch; ``passes`` says
    which model passes an iteration makes (for ``ferd bench``); ``description`` names its loss in reports."""

    description = "Eq. 11 on UTAEs (Eq. 10)"

    def passes(self, cfg: DistillConfig) -> IterationPasses:
        raise NotImplementedError

    def start_epoch(self, d: Distiller, teacher: nn.Module) -> None:
        """Before the epoch's first iteration."""

    def loss(self, d: Distiller, teacher: nn.Module, draw: Draw, epoch: int, it: int) -> torch.Tensor:
        raise NotImplementedError


class UtaeSide(StudentSide):
    """Eq. 10-11: x_U against ``distill.utae.target`` (the teacher, BN-folded with ``compute.fold_bn``, or the
    student in eval mode), then L_stu on two student passes in train mode (as RSLAD: BatchNorm sees each
    batch). With ``distill.utae.cache: pool`` x_U (one of the K cached per FAE) and f^T(x_F) come from the
    pool: the teacher is then run once, on the augmented view, and only when ``distill.augment`` is on."""

    def passes(self, cfg: DistillConfig) -> IterationPasses:
        if cfg.utae.cache == "pool":
            return IterationPasses(None, 0, 1 if cfg.augment else 0, 2)
        return IterationPasses(cfg.utae.target, cfg.utae.steps, 1, 2)

    def start_epoch(self, d: Distiller, teacher: nn.Module) -> None:
        self.attacker = attack_model(teacher, d.compute) if d.cfg.utae.target == "teacher" else d.student

    def loss(self, d: Distiller, teacher: nn.Module, draw: Draw, epoch: int, it: int) -> torch.Tensor:
        cfg, utae, student = d.cfg, d.cfg.utae, d.student
        x_f = draw.x_f
        if draw.cached is not None:  # (x_F, x_U, f^T(x_F)) from the pool: only the two student passes remain
            k = torch.randint(0, draw.cached.shape[1], (draw.idx.shape[0],), generator=draw.attack_rng)
            x_u, t_logits = draw.cached[draw.idx, k], draw.pool_logits[draw.idx]
            x_f, x_u = d.augment(draw.augment_rng, x_f, x_u)
            x_f, x_u, t_logits = (t.to(d.device) for t in distributed.shard(x_f, x_u, t_logits))
            if draw.augment_rng is not None:
                with torch.no_grad():
                    t_logits = teacher(x_f)
        else:
            (x_f,) = d.augment(draw.augment_rng, x_f)
            start = utae_start(x_f, d.eps, utae.random_start, draw.attack_rng)
            x_f, start = (t.to(d.device) for t in distributed.shard(x_f, start))
            with torch.no_grad():
                t_logits = teacher(x_f)
            student.eval()
            x_u = generate_utae(self.attacker, x_f, t_logits, eps=d.eps, alpha=d.step, steps=utae.steps,
                                gamma=utae.gamma, start=start)
        student.train()
        s_clean, s_adv = d.passes(x_f, x_u)
        loss = robust_distillation_loss(t_logits, s_clean, s_adv, cfg.lambda1, cfg.lambda2)
        with torch.no_grad():  # the two weighted terms, for the epoch's record (the loss above is what trains)
            kl_clean, kl_adv = robust_distillation_terms(t_logits, s_clean, s_adv)
            kl_clean, kl_adv = cfg.lambda1 * kl_clean, cfg.lambda2 * kl_adv
        d.record(kl_clean=kl_clean, kl_adv=kl_adv)
        if not torch.isfinite(loss):
            raise NonFiniteLoss("distillation", epoch, it, {
                "kl_clean": float(kl_clean), "kl_adv": float(kl_adv), "total": float(loss)},
                {"fae": x_f, "utae": x_u, "teacher_logits": t_logits, "student_clean_logits": s_clean,
                 "student_adv_logits": s_adv})
        return loss
