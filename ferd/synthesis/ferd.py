"""FERD as a method (:mod:`ferd.settings.method`): its generation (Eq. 4-9) in the one loop of
:class:`~ferd.synthesis.epoch.Synthesizer`, the reweighted labels (Eq. 1-2), its student side ``distill.*`` as
written (Eq. 10-11), no baseline group, and a generation that splits the batch across torchrun's processes.

z ~ N(0, 1) is drawn once per epoch (line 6) for the global batch; ``synthesis.generator.kind`` says which
generator makes x from it (:class:`ferd.settings.config.GeneratorConfig`). The objective is L_gen (Eq. 9):
λ_adv·L_adv + λ_bn·L_bn + λ_oh·L_oh (Eq. 8; L_bn inside the teacher's forward) + λ_uni·L_uni (Eq. 7: the
uniform prediction of the teacher's head on the non-robust channels of Eq. 4-6) [+ λ_div·L_div].
"""

from __future__ import annotations

import torch

from ..compute import distributed
from ..core import rng
from ..settings.method import register
from .bottleneck import non_robust_features
from .epoch import GenerationMethod, GeneratorPasses, SynthesisContext
from .generator import ConditionalGenerator, Generator, authors_init
from .losses import (GeneratorLossTerms, adversarial_loss, diversity_loss, generator_loss, one_hot_loss,
                     uniform_prediction_loss)


@register
class Ferd(GenerationMethod):
    name = "ferd"
    reweights = True
    splits_teacher = True
    student_side = "given"
    groups = ()
    data_parallel = True

    def __init__(self, ctx: SynthesisContext) -> None:
        super().__init__(ctx)
        g = ctx.cfg.generator
        if g.kind == "conditional":  # Algorithm 1 as printed: one persistent g(z, y)
            with rng.seeded(ctx.seed, "generator"):
                gen = ConditionalGenerator(ctx.num_classes, nz=g.nz, ngf=g.ngf, img_size=ctx.img_size).to(ctx.device)
            self.generator = distributed.sync_batchnorm(gen, ctx.device)
            self._generator_dp = distributed.ddp(self.generator)
            self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=g.lr, betas=(g.beta1, g.beta2))

    def load_state_dict(self, state: dict) -> None:
        if self.generator is not None and state:
            super().load_state_dict(state)

    @property
    def use_adv(self) -> bool:
        """Whether L_adv (and so the student's pass) enters L_gen: λ_adv > 0."""
        return self.ctx.cfg.lambda_adv > 0

    @property
    def use_uni(self) -> bool:
        """Whether L_uni (and so the bottleneck of Eq. 4-6) enters L_gen: ``synthesis.fae`` on and λ_uni > 0."""
        return self.ctx.cfg.fae and self.ctx.cfg.lambda_uni > 0

    def generator_passes(self, epoch: int) -> GeneratorPasses:
        """The teacher split at ``synthesis.layer`` with L_bn in its forward, the student when L_adv is on, the
        bottleneck fit and masked head pass when L_uni is on."""
        cfg = self.ctx.cfg
        return GeneratorPasses(teacher_passes=1, student_passes=int(self.use_adv), bn_statistics=True,
                               split=self.splits_teacher, layer=cfg.layer,
                               bottleneck=cfg.bottleneck if self.use_uni else None)

    def start_epoch(self, epoch, labels, latent):
        """The epoch's generator, its optimiser and a closure making this process's rows of the batch.

        ``labels`` are the global batch's; z is drawn for the global batch and under torchrun each process
        makes its rows (:mod:`ferd.compute.distributed`): the generator in DistributedDataParallel with global-batch
        BatchNorm, z's gradient scaled by the process's share (its loss is a mean over its rows, L_bn counted
        once per process) so that each row of z takes the one-process step."""
        ctx, cfg = self.ctx, self.ctx.cfg
        g = cfg.generator
        if cfg.lambda_div > 0 and distributed.world()[1] > 1:
            raise ValueError("synthesis.lambda_div: the diversity term pairs samples across the whole batch and "
                             "is not data-parallel; expected 0 with nproc_per_node > 1")
        z, mine = distributed.shard(torch.randn((labels.shape[0], g.nz), generator=latent).to(ctx.device), labels)
        self.latents = z
        self.ib_rng = rng.generator(ctx.seed, "bottleneck", epoch)
        if g.kind == "conditional":
            dp = self._generator_dp
            return (lambda: dp(z, mine)), self.optimizer
        # re-initialised every epoch (authors' init) and optimised together with a learnable z
        with rng.seeded(ctx.seed, "generator", epoch):
            if g.kind == "reinit":  # the authors' code: unconditional; labels enter only through L_oh
                gen = authors_init(Generator(nz=g.nz, ngf=g.ngf, img_size=ctx.img_size)).to(ctx.device)
            else:  # conditional-reinit: g(z, y), labels also through the embedding
                gen = authors_init(ConditionalGenerator(ctx.num_classes, nz=g.nz, ngf=g.ngf,
                                                        img_size=ctx.img_size)).to(ctx.device)
        gen = distributed.sync_batchnorm(gen, ctx.device)
        dp = distributed.ddp(gen)
        gen.train()
        z = z.requires_grad_(True)
        size = distributed.world()[1]
        if size > 1:
            z.register_hook(lambda grad: grad / size)
        opt = torch.optim.Adam([{"params": gen.parameters()}, {"params": [z], "lr": g.lr_z}],
                               lr=g.lr, betas=(g.beta1, g.beta2))
        if g.kind == "reinit":
            return (lambda: dp(z)), opt
        return (lambda: dp(z, mine)), opt

    def objective(self, x, labels, teacher, student, bn, aug, epoch):
        """L_gen of Eq. 9 on this process's rows (``labels``), L_bn on the global batch's statistics."""
        cfg = self.ctx.cfg
        layer = teacher.check_layer(cfg.layer)
        z = teacher.features(x, layer)
        t_logits = teacher.head(z, layer)
        l_bn = bn.pop()
        zero = x.new_zeros(())
        l_adv = adversarial_loss(t_logits, student(x)) if self.use_adv else zero
        l_uni = zero
        if self.use_uni:
            with bn.paused():
                z_nr, _ = non_robust_features(teacher, z, labels, layer, cfg.bottleneck, self.ib_rng)
                l_uni = uniform_prediction_loss(teacher.head(z_nr, layer))
        terms = GeneratorLossTerms(adv=l_adv, bn=l_bn, oh=one_hot_loss(t_logits, labels), uni=l_uni,
                                   div=diversity_loss(x, self.latents, labels) if cfg.lambda_div > 0 else None)
        loss = generator_loss(terms, cfg.lambda_adv, cfg.lambda_bn, cfg.lambda_oh, cfg.lambda_uni, cfg.lambda_div)
        return loss, terms.as_floats(), t_logits, None

    def after_epoch(self, teacher, best_x, labels, last_stats):
        """The share of channels Eq. 6 marks non-robust on the kept batch, recorded even when λ_uni = 0 (a
        diagnostic); None without ``synthesis.fae``."""
        cfg = self.ctx.cfg
        if not cfg.fae:
            return None
        layer = teacher.check_layer(cfg.layer)
        with torch.no_grad():
            z_kept = teacher.features(best_x, layer)
        _, nonrobust = non_robust_features(teacher, z_kept, labels, layer, cfg.bottleneck, self.ib_rng)
        return distributed.mean_across(nonrobust)
