"""DeepInversion (Yin et al., 2020): no generator, the pixels themselves, Adam (β = 0.5, 0.99), jitter
(roll ± 4 px + flip), clamped to [0, 1] after each step; bn·L_BN + oh·CE − adv·JS + tv·TV₁ + l2·‖x‖₂."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..synthesis.epoch import GeneratorPasses
from .losses import deepinversion_loss
from .generation import BaselineMethod, register, value
from .views import roll_flip


@register
class DeepInversion(BaselineMethod):
    name = "deepinv"

    def start_epoch(self, epoch, labels, latent):
        n, size = self.ctx.cfg.batch_size, self.ctx.img_size
        x_param = (0.5 + 0.25 * torch.randn((n, 3, size, size), generator=latent))
        self.x_param = x_param.clamp(0, 1).to(self.ctx.device).requires_grad_(True)
        opt = torch.optim.Adam([self.x_param], lr=self.ctx.b.deepinv.lr, betas=(0.5, 0.99))
        return (lambda: self.x_param), opt

    def generator_passes(self, epoch):
        """Teacher (L_BN in its forward) and student (JS) on the jittered pixels."""
        return GeneratorPasses(teacher_passes=1, student_passes=1, bn_statistics=True)

    def objective(self, x, labels, teacher, student, bn, aug, epoch):
        d = self.ctx.b.deepinv
        xv = roll_flip(x, d.jitter, aug)
        t, s = teacher(xv), student(xv)
        l_bn = bn.pop()
        loss = deepinversion_loss(xv, t, s, labels, l_bn, bn=d.lambda_bn, oh=d.lambda_oh, adv=d.lambda_adv,
                                  tv=d.lambda_tv, l2=d.lambda_l2)
        return loss, {"bn": value(l_bn), "oh": value(F.cross_entropy(t, labels))}, t, None

    def after_step(self):
        with torch.no_grad():
            self.x_param.clamp_(0, 1)
