"""A throwaway method written as one module (issue 33): its own synthesiser (pixels optimised directly for the
teacher's cross-entropy on the drawn labels, declaring the one teacher pass it makes) and its own student side (clean distillation only,
KL(f^T(x) ‖ f^S(x))). Importing it registers ``pixel-ce``; ``tests/e2e/test_plugins.py`` runs it through
``ferd run``, ``ferd stage all`` and ``ferd compare``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ferd.baselines.generation import BaselineMethod, value
from ferd.distill.side import IterationPasses, StudentSide
from ferd.compute.divergence import kl_logits
from ferd.settings.method import register
from ferd.synthesis.epoch import GeneratorPasses


class CleanDistillation(StudentSide):
    description = "clean distillation only: KL(f^T(x) ‖ f^S(x))"

    def passes(self, cfg):
        return IterationPasses(None, 0, 1, 1)

    def loss(self, d, teacher, draw, epoch, it):
        (x,) = d.augment(draw.augment_rng, draw.x_f)
        x = x.to(d.device)
        with torch.no_grad():
            t = teacher(x)
        d.student.train()
        (s,) = d.passes(x)
        return kl_logits(t, s)


@register
class PixelCE(BaselineMethod):
    name = "pixel-ce"
    groups = ()  # reads no parameter group of its own
    student_side = "own"

    @classmethod
    def own_student_side(cls, plan):
        return CleanDistillation()

    def start_epoch(self, epoch, labels, latent):
        c = self.ctx
        x = torch.rand((c.cfg.batch_size, 3, c.img_size, c.img_size), generator=latent).requires_grad_(True)
        return (lambda: x.clamp(0, 1)), torch.optim.Adam([x], lr=0.05)

    def generator_passes(self, epoch):  # what `ferd bench` times and counts: the teacher alone
        return GeneratorPasses(teacher_passes=1, student_passes=0)

    def objective(self, x, labels, teacher, student, bn, aug, epoch):
        t = teacher(x)
        loss = F.cross_entropy(t, labels)
        return loss, {"oh": value(loss)}, t, None
