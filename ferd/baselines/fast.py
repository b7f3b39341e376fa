"""Fast (Fang et al., 2022): a persistent meta-generator; each epoch a clone with a fresh learnable z takes
the steps, and the sum of its gradients updates the meta-generator (FOMAML, Adam with lr·steps);
bn·L_BN^mmt + oh·CE − adv·masked KL on a crop + flip view."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..core import rng
from ..synthesis.epoch import GeneratorPasses
from ..synthesis.losses import bn_batch_statistics
from .losses import masked_adversarial_kl, momentum_bn_loss
from .generation import BaselineMethod, register, value
from .views import crop_flip


@register
class Fast(BaselineMethod):
    name = "fast"
    persistent_generator = True

    def __init__(self, ctx):
        super().__init__(ctx)
        g, f = ctx.cfg.generator, ctx.b.fast
        # FOMAML: the summed clone gradients, at lr_g · inner steps
        self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=f.meta_lr or f.lr * ctx.cfg.iterations,
                                          betas=(g.beta1, g.beta2))
        self.ema: list[tuple[torch.Tensor, torch.Tensor]] = []  # the BN statistics EMA
        self.clone, self.grad_sum = None, None

    def state_dict(self):
        out = super().state_dict()
        if self.ema:
            out["ema_mean"] = [m for m, _ in self.ema]
            out["ema_var"] = [v for _, v in self.ema]
        return out

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "ema_mean" in state:
            self.ema = list(zip(state["ema_mean"], state["ema_var"]))

    def start_epoch(self, epoch, labels, latent):
        ctx, g, f = self.ctx, self.ctx.cfg.generator, self.ctx.b.fast
        z = torch.randn((ctx.cfg.batch_size, g.nz), generator=latent).to(ctx.device).requires_grad_(True)
        self._maybe_reset_l0(epoch)
        self.clone = gen = copy.deepcopy(self.generator)
        self.grad_sum = [torch.zeros_like(q) for q in gen.parameters()]
        opt = torch.optim.Adam([{"params": gen.parameters()}, {"params": [z], "lr": f.lr_z}],
                               lr=f.lr, betas=(g.beta1, g.beta2))
        gen.train()
        return (lambda: gen(z)), opt

    def _maybe_reset_l0(self, epoch: int) -> None:
        if self.ctx.b.fast.reset_l0_epoch == epoch:  # Fast's reset_l0: first Linear and first BN to N(0, 0.02)
            with rng.seeded(self.ctx.seed, "reset-l0"), torch.no_grad():
                for mod in (self.generator.l1, self.generator.conv_blocks[0]):
                    mod.weight.copy_(torch.randn(mod.weight.shape) * 0.02)  # CPU draw under the seed
                    mod.bias.zero_()

    def adversarial(self, epoch: int) -> bool:
        """Whether the masked −KL (and so the student's pass) is on in ``epoch``: after ``adv_warmup`` epochs."""
        return epoch >= self.ctx.b.fast.adv_warmup

    def generator_passes(self, epoch):
        """The teacher on the crop + flip view (its BN inputs make L_BN^mmt), the student once adversarial."""
        return GeneratorPasses(teacher_passes=1, student_passes=int(self.adversarial(epoch)), bn_statistics=True)

    def objective(self, x, labels, teacher, student, bn, aug, epoch):
        f = self.ctx.b.fast
        xa = crop_flip(x, 4, aug)
        with bn.paused():
            t, acts = bn.run(teacher, xa)
        stats = [bn_batch_statistics(a) for a in acts]
        ema = self.ema or [(None, None)] * len(stats)
        l_bn = sum(momentum_bn_loss(mu, var, layer.running_mean, layer.running_var, em, ev, f.bn_momentum)
                   for (mu, var), (em, ev), layer in zip(stats, ema, bn.layers))
        l_oh = F.cross_entropy(t, labels)
        l_adv = masked_adversarial_kl(t, student(xa)) if self.adversarial(epoch) else x.new_zeros(())
        loss = f.lambda_bn * l_bn + f.lambda_oh * l_oh + f.lambda_adv * l_adv
        return loss, {"bn": value(l_bn), "oh": value(l_oh), "adv": value(l_adv)}, t, stats

    def after_backward(self):
        for s, q in zip(self.grad_sum, self.clone.parameters()):
            if q.grad is not None:
                s += q.grad

    def after_epoch(self, teacher, best_x, labels, last_stats):
        self.meta_step(self.grad_sum, last_stats)

    def meta_step(self, grad_sum: list[torch.Tensor], stats) -> None:
        """FOMAML: the clone's summed gradients update the meta-generator; the BN EMA takes the last step's stats."""
        self.optimizer.zero_grad(set_to_none=True)
        for q, s in zip(self.generator.parameters(), grad_sum):
            q.grad = s
        self.optimizer.step()
        m = self.ctx.b.fast.bn_momentum
        new = [(mu.detach(), var.detach()) for mu, var in stats]
        self.ema = new if not self.ema else [(m * em + (1 - m) * mu, m * ev + (1 - m) * var)
                                             for (em, ev), (mu, var) in zip(self.ema, new)]
