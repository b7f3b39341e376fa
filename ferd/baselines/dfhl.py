"""DFHL (Wang et al., 2023): a persistent generator, a fresh learnable z and a fresh Adam every epoch, student
only (eval): KL(ỹ‖p_S) + 3·Σ p̄ log₁₀ p̄ on a crop + flip view; pool labels are the teacher's top-1 (a
hard-label query, as DFHL keeps them). Its robust distillation is its own student side, :class:`HeeSide`."""

from __future__ import annotations

import torch
from torch import nn

from ..compute import distributed
from ..distill.side import Draw, IterationPasses, StudentSide
from ..compute.numerics import NonFiniteLoss
from ..synthesis.epoch import GeneratorPasses
from .losses import dfhl_generator_loss, hee_start, high_entropy_examples
from .generation import BaselineMethod, register, value
from .views import crop_flip


@register
class DFHL(BaselineMethod):
    name = "dfhl"
    persistent_generator = True
    relabel_by_teacher = True
    student_side = "own"  # robust by itself: distils on high-entropy examples (HeeSide)

    @classmethod
    def own_student_side(cls, plan):
        return HeeSide(plan.cfg.baseline.dfhl.hee_steps, plan.cfg.baseline.dfhl.hee_step)

    def start_epoch(self, epoch, labels, latent):
        ctx, g, d = self.ctx, self.ctx.cfg.generator, self.ctx.b.dfhl
        z = torch.randn((ctx.cfg.batch_size, g.nz), generator=latent).to(ctx.device).requires_grad_(True)
        gen = self.generator  # fresh z and a fresh Adam every epoch
        opt = torch.optim.Adam([{"params": gen.parameters()}, {"params": [z], "lr": d.lr_z}],
                               lr=d.lr, betas=(g.beta1, g.beta2))
        gen.train()
        return (lambda: gen(z)), opt

    def generator_passes(self, epoch):
        """The student alone, on the crop + flip view: no teacher pass."""
        return GeneratorPasses(teacher_passes=0, student_passes=1)

    def objective(self, x, labels, teacher, student, bn, aug, epoch):
        d = self.ctx.b.dfhl
        loss = dfhl_generator_loss(student(crop_flip(x, 4, aug)), labels, d.confidence, d.balance)
        return loss, {"dfhl": value(loss)}, None, None


class HeeSide(StudentSide):
    """DFHL's robust distillation in place of Eq. 10-11: each pool batch (augmented as every method's) becomes
    high-entropy examples of the student (:func:`~.losses.high_entropy_examples`, student in eval mode), the
    teacher labels them with its top-1 only (a hard-label query), and the student takes a step on
    CE(f^S(x_hee), y) (LetheSec/DFHL-RS-Attack ``train.py``)."""

    description = "DFHL's own: CE on the teacher's top-1 of the student's high-entropy examples"

    def __init__(self, steps: int, step: float) -> None:
        self.steps, self.step = steps, step

    def passes(self, cfg) -> IterationPasses:
        return IterationPasses("student", self.steps, 1, 1)

    def loss(self, d, teacher: nn.Module, draw: Draw, epoch: int, it: int) -> torch.Tensor:
        (x_f,) = d.augment(draw.augment_rng, draw.x_f)
        (start,) = distributed.shard(hee_start(x_f, draw.attack_rng))  # HEEs start from noisy x_F alone
        student = d.student
        student.eval()
        x_h = high_entropy_examples(student, start.to(d.device), steps=self.steps, step=self.step)
        with torch.no_grad():
            y = teacher(x_h).argmax(1)
        student.train()
        (logits,) = d.passes(x_h)
        loss = nn.functional.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            raise NonFiniteLoss("distillation", epoch, it, {"ce_hee": float(loss)}, {"hee": x_h, "labels": y})
        return loss
