"""CMI (Fang et al., 2021): a generator re-initialised every epoch (N(0, 0.02) weights) with a learnable z;
bn·L_BN + oh·CE − adv·masked KL + cr·L_cr on a global (crop + flip) and a local (resized crop) view;
features = per-sample channel means of every teacher BN input; a persistent projection head and a FIFO
bank of kept batches' features."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core import rng
from ..synthesis.epoch import GeneratorPasses
from ..synthesis.generator import Generator
from .losses import contrastive_loss, masked_adversarial_kl
from .generation import BaselineMethod, register, value
from .views import crop_flip, resized_crop_flip


def channel_means(bn_inputs: list[torch.Tensor]) -> torch.Tensor:
    """CMI's feature: each sample's channel means at every BN input, concatenated (N × Σ channels)."""
    return torch.cat([a.mean(dim=(2, 3)) for a in bn_inputs], dim=1)


def cmi_init(gen: nn.Module) -> None:
    """CMI's re-initialisation: conv/linear weights N(0, 0.02), BN γ N(1, 0.02), biases 0."""
    for m in gen.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


@register
class CMI(BaselineMethod):
    name = "cmi"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.head: nn.Module | None = None  # built at the first epoch (its width is the teacher's)
        self.head_optimizer: torch.optim.Optimizer | None = None
        self.bank = torch.empty(0)
        self._pending_head: dict | None = None

    def state_dict(self):
        out = super().state_dict()
        if self.head is not None:
            out["head"] = {"model": self.head.state_dict(), "optimizer": self.head_optimizer.state_dict()}
            out["bank"] = self.bank
        return out

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if "head" in state:
            self._pending_head, self.bank = state["head"], state["bank"]

    def _ensure_head(self, dim: int) -> None:
        if self.head is None:
            c = self.ctx.b.cmi
            with rng.seeded(self.ctx.seed, "cmi-head"):
                self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True),
                                          nn.Linear(dim, c.head_dim)).to(self.ctx.device)
            self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=c.lr, betas=(0.5, 0.999))
            if self._pending_head is not None:
                self.head.load_state_dict(self._pending_head["model"])
                self.head_optimizer.load_state_dict(self._pending_head["optimizer"])
                self._pending_head = None

    def start_epoch(self, epoch, labels, latent):
        ctx, g = self.ctx, self.ctx.cfg.generator
        z = torch.randn((ctx.cfg.batch_size, g.nz), generator=latent).to(ctx.device).requires_grad_(True)
        with rng.seeded(ctx.seed, "generator", epoch):
            gen = Generator(nz=g.nz, ngf=g.ngf, img_size=ctx.img_size)
            cmi_init(gen)  # on the CPU, under the seed (a CUDA init would use the CUDA RNG)
        gen = gen.to(ctx.device)
        opt = torch.optim.Adam([*gen.parameters(), z], lr=ctx.b.cmi.lr, betas=(0.5, 0.999))
        gen.train()
        return (lambda: gen(z)), opt

    def generator_passes(self, epoch):
        """The teacher on the global view (L_BN in its forward) and on the local one, the student on the global
        view (the projection head and the bank are not model passes)."""
        return GeneratorPasses(teacher_passes=2, student_passes=1, bn_statistics=True)

    def objective(self, x, labels, teacher, student, bn, aug, epoch):
        c = self.ctx.b.cmi
        xg, xl = crop_flip(x, 4, aug), resized_crop_flip(x, aug)
        t, acts = bn.run(teacher, xg)
        f_g, l_bn = channel_means(acts), bn.pop()
        with bn.paused():
            _, acts_l = bn.run(teacher, xl)
        f_l = channel_means(acts_l)
        self._ensure_head(f_g.shape[1])
        l_oh, l_adv = F.cross_entropy(t, labels), masked_adversarial_kl(t, student(xg))
        n = x.shape[0]
        anchors, keys = f_l, f_g
        k = min(c.bank_sample, self.bank.shape[0])
        if k:
            rows = self.bank[torch.randperm(self.bank.shape[0], generator=aug)[:k]].to(x.device)
            anchors, keys = torch.cat([f_l, rows[:, :f_l.shape[1]]]), torch.cat([f_g, rows[:, f_l.shape[1]:]])
        per_row = contrastive_loss(self.head(anchors), self.head(keys).detach(), c.temperature, reduction="none")
        l_cr = per_row[:n].mean() + (per_row[n:].mean() if k else 0.0)
        loss = c.lambda_bn * l_bn + c.lambda_oh * l_oh + c.lambda_adv * l_adv + c.lambda_cr * l_cr
        return loss, {"bn": value(l_bn), "oh": value(l_oh), "adv": value(l_adv), "cr": value(l_cr)}, t, None

    def zero_grad(self):
        if self.head_optimizer is not None:
            self.head_optimizer.zero_grad(set_to_none=True)

    def after_step(self):
        self.head_optimizer.step()

    def end_epoch(self, teacher, best_x, bn, aug):
        """The memory bank: [f_local, f_global] of the kept batch, FIFO of ``bank_size`` rows."""
        with torch.no_grad(), bn.paused():
            f_g = channel_means(bn.run(teacher, crop_flip(best_x, 4, aug))[1])
            f_l = channel_means(bn.run(teacher, resized_crop_flip(best_x, aug))[1])
        rows = torch.cat([f_l, f_g], dim=1).float().cpu()
        self.bank = torch.cat([self.bank.reshape(-1, rows.shape[1]), rows])[-self.ctx.b.cmi.bank_size:]
