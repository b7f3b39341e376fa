"""ZSKT (Micaelli & Storkey, 2019): a persistent generator, a fresh z every step, one Adam step on −KL(T‖S)
('mean' reduction), gradient-norm clip 5; pool labels are the teacher's top-1."""

from __future__ import annotations

import torch
from torch import nn

from ..synthesis.epoch import GeneratorPasses
from .losses import zskt_generator_loss
from .generation import BaselineMethod, register, value


@register
class ZSKT(BaselineMethod):
    name = "zskt"
    persistent_generator = True
    relabel_by_teacher = True

    def __init__(self, ctx):
        super().__init__(ctx)
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=ctx.b.zskt.lr)

    def start_epoch(self, epoch, labels, latent):
        n, nz, device = self.ctx.cfg.batch_size, self.ctx.cfg.generator.nz, self.ctx.device
        return (lambda: self.generator(torch.randn((n, nz), generator=latent).to(device))), self.optimizer

    def generator_passes(self, epoch):
        """Teacher and student on the generated batch, no BatchNorm statistics."""
        return GeneratorPasses(teacher_passes=1, student_passes=1)

    def objective(self, x, labels, teacher, student, bn, aug, epoch):
        with bn.paused():
            t = teacher(x)
        loss = zskt_generator_loss(t, student(x))
        return loss, {"adv": value(loss)}, t, None

    def after_backward(self):
        nn.utils.clip_grad_norm_(self.generator.parameters(), self.ctx.b.zskt.grad_clip)
