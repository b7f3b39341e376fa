"""DFHL (Wang et al., 2023): a persistent generator, a fresh learnable z and a fresh Adam every epoch, student
only (eval): KL(ỹ‖p_S) + 3·Σ p̄ log₁₀ p̄ on a crop + flip view; pool labels are the teacher's top-1 (a
hard-label query, as DFHL keeps them). Its robust distillation (HEEs) is the Distiller's ``hee``."""

from __future__ import annotations

import torch

from .losses import dfhl_generator_loss
from .method import BaselineMethod, register, value
from .views import crop_flip


@register
class DFHL(BaselineMethod):
    name = "dfhl"
    persistent_generator = True
    relabel_by_teacher = True
    a8_conversion = False  # robust by itself: distils on high-entropy examples (ferd.distill.stage.Distiller)
    high_entropy_examples = True

    def start_epoch(self, epoch, latent):
        ctx, g, d = self.ctx, self.ctx.cfg.generator, self.ctx.b.dfhl
        z = torch.randn((ctx.cfg.batch_size, g.nz), generator=latent).to(ctx.device).requires_grad_(True)
        gen = self.generator  # fresh z and a fresh Adam every epoch
        opt = torch.optim.Adam([{"params": gen.parameters()}, {"params": [z], "lr": d.lr_z}],
                               lr=d.lr, betas=(g.beta1, g.beta2))
        gen.train()
        return (lambda: gen(z)), opt

    def objective(self, x, labels, teacher, student, bn, aug, epoch):
        d = self.ctx.b.dfhl
        loss = dfhl_generator_loss(student(crop_flip(x, 4, aug)), labels, d.confidence, d.balance)
        return loss, {"dfhl": value(loss)}, None, None
