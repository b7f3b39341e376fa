"""The generation stage of Algorithm 1 (lines 6-12) for one epoch.

z ~ N(0, 1) and y ~ p are drawn once per epoch (line 6); the generator then takes T_g
Adam steps on L_gen (Eq. 9) against the frozen teacher and the current student; the
batch with the lowest L_gen is kept (``select``, line 10: the paper does not define it,
this is what the authors' code and CMI do); the caller adds it to the pool and reweights.

The teacher is frozen and in eval mode (its BatchNorm running statistics are the targets
of L_bn); the student is put in eval mode with gradients off for its parameters while the
generator trains (gradients flow through it to x only), then restored.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed, rng
from ..config import SynthesisConfig
from ..models import FerdModel
from ..numerics import autocast, check_finite_loss
from .bottleneck import non_robust_features
from .generator import ConditionalGenerator, Generator, authors_init
from .losses import (BatchNormStatistics, GeneratorLossTerms, adversarial_loss, diversity_loss, generator_loss,
                     one_hot_loss, uniform_prediction_loss)

log = logging.getLogger(__name__)


@dataclass
class EpochSynthesis:
    """The kept batch of one generation epoch and how the generator got there."""

    images: torch.Tensor
    labels: torch.Tensor
    best_loss: float
    best_terms: dict[str, float]
    last_terms: dict[str, float]
    teacher_top1_share: float = 0.0
    collapse_iterations: int = 0  # longest run of iterations with one class > 95 % of teacher top-1
    nonrobust_fraction: float | None = None  # share of channels Eq. 6 marks on the kept batch (synthesis.fae)
    history: list[dict[str, float]] = field(default_factory=list)


@contextlib.contextmanager
def frozen_student(student: nn.Module) -> Iterator[None]:
    """The student in eval mode with its parameters' gradients off (gradients still reach the input),
    restored afterwards: how every generator sees the student."""
    was_training = student.training
    grads = [q.requires_grad for q in student.parameters()]
    student.eval()
    student.requires_grad_(False)
    try:
        yield
    finally:
        student.train(was_training)
        for q, g in zip(student.parameters(), grads):
            q.requires_grad_(g)


def top1_counts(t_logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """How many samples of the batch the teacher puts in each class (top-1)."""
    return torch.bincount(t_logits.argmax(1), minlength=num_classes)


def collapse_run(counts: torch.Tensor, run: int) -> tuple[float, int]:
    """The share of the batch in the teacher's most predicted class (``counts``: :func:`top1_counts`), and
    the updated count of consecutive iterations where that share exceeded 95 % (generator-collapse detection)."""
    share = float(counts.max()) / int(counts.sum())
    return share, run + 1 if share > 0.95 else 0


def _global_figures(terms: dict[str, float], counts: torch.Tensor) -> tuple[dict[str, float], torch.Tensor]:
    """An iteration's loss terms and the teacher's top-1 counts over the global batch: the means of the
    ranks' terms (each a mean over its rows; L_bn is already global) and the summed counts, in one
    all-reduce; unchanged in one process."""
    size = distributed.world()[1]
    if size == 1:
        return terms, counts
    total = distributed.sum_across(torch.tensor([*terms.values(), *counts.tolist()], dtype=torch.float64))
    n = len(terms)
    return dict(zip(terms, (total[:n] / size).tolist())), total[n:].long()


class Synthesizer:
    """Owns the generator (and its optimiser) across epochs; ``kind`` as in :class:`GeneratorConfig`."""

    def __init__(self, cfg: SynthesisConfig, num_classes: int, img_size: int, seed: int,
                 device: str | torch.device = "cpu", amp: str = "fp32") -> None:
        self.cfg, self.num_classes, self.img_size, self.seed, self.device = cfg, num_classes, img_size, seed, device
        self.amp = amp  # compute.amp
        g = cfg.generator
        self.generator: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        if g.kind == "conditional":
            with rng.seeded(seed, "generator"):
                self.generator = ConditionalGenerator(num_classes, nz=g.nz, ngf=g.ngf, img_size=img_size).to(device)
            self.generator = distributed.sync_batchnorm(self.generator, device)
            self._generator_dp = distributed.ddp(self.generator)
            self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=g.lr, betas=(g.beta1, g.beta2))

    def state_dict(self) -> dict:
        if self.generator is None:
            return {}
        return {"generator": self.generator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.generator is not None and state:
            self.generator.load_state_dict(state["generator"])
            self.optimizer.load_state_dict(state["optimizer"])

    def epoch_setup(self, epoch: int, labels: torch.Tensor
                     ) -> tuple[nn.Module, torch.optim.Optimizer, callable, torch.Tensor]:
        """The epoch's generator, its optimiser, a closure making the batch, and the latents z.

        ``labels`` are the global batch's; under torchrun z is drawn for the global batch and this rank's
        closure makes its rows (:mod:`ferd.distributed`): the generator in DistributedDataParallel with
        global-batch BatchNorm, z's gradient scaled by the rank's share (its loss is a mean over its rows,
        L_bn counted once per rank) so that each row of z takes the one-process step."""
        g = self.cfg.generator
        latent = rng.generator(self.seed, "latent", epoch)
        z, labels = distributed.shard(torch.randn((labels.shape[0], g.nz), generator=latent).to(self.device),
                                      labels)
        if g.kind == "conditional":
            gen, opt, dp = self.generator, self.optimizer, self._generator_dp
            return gen, opt, lambda: dp(z, labels), z
        # re-initialised every epoch (authors' init) and optimised together with a learnable z
        with rng.seeded(self.seed, "generator", epoch):
            if g.kind == "reinit":  # the authors' code: unconditional; labels enter only through L_oh
                gen = authors_init(Generator(nz=g.nz, ngf=g.ngf, img_size=self.img_size)).to(self.device)
            else:  # conditional-reinit: g(z, y), labels also through the embedding
                gen = authors_init(ConditionalGenerator(self.num_classes, nz=g.nz, ngf=g.ngf,
                                                        img_size=self.img_size)).to(self.device)
        gen = distributed.sync_batchnorm(gen, self.device)
        dp = distributed.ddp(gen)
        z = z.requires_grad_(True)
        size = distributed.world()[1]
        if size > 1:
            z.register_hook(lambda grad: grad / size)
        opt = torch.optim.Adam([{"params": gen.parameters()}, {"params": [z], "lr": g.lr_z}],
                               lr=g.lr, betas=(g.beta1, g.beta2))
        if g.kind == "reinit":
            return gen, opt, lambda: dp(z), z
        return gen, opt, lambda: dp(z, labels), z

    def run_epoch(self, teacher: FerdModel, student: nn.Module, p: torch.Tensor, epoch: int,
                  progress: bool = False) -> EpochSynthesis:
        """T_g generator iterations for ``epoch`` with labels y ~ p; returns the kept batch. Under torchrun
        each rank makes its rows of the global batch (:meth:`epoch_setup`); L_bn sees the global batch's
        statistics, the kept iteration is chosen on the global loss and the kept batch is gathered."""
        cfg = self.cfg
        if cfg.lambda_div > 0 and distributed.world()[1] > 1:
            raise ValueError("synthesis.lambda_div: the diversity term pairs samples across the whole batch and "
                             "is not data-parallel; expected 0 with nproc_per_node > 1")
        labels = torch.multinomial(p.double().cpu(), cfg.batch_size, replacement=True,
                                   generator=rng.generator(self.seed, "labels", epoch)).to(self.device)
        gen, opt, synthesize, latents = self.epoch_setup(epoch, labels)
        (mine,) = distributed.shard(labels)  # this rank's rows (all of them in one process)
        ib_rng = rng.generator(self.seed, "bottleneck", epoch)
        layer = teacher.check_layer(cfg.layer)
        use_uni = cfg.fae and cfg.lambda_uni > 0
        gen.train()
        best_loss, best_x, best_terms, last_terms = float("inf"), None, {}, {}
        run, collapse_iters, share = 0, 0, 0.0
        history: list[dict[str, float]] = []
        with (frozen_student(student), BatchNormStatistics(teacher, global_batch=True) as bn_stats,
              autocast(self.amp, self.device)):
            for it in tqdm(range(cfg.iterations), desc=f"epoch {epoch} generator", leave=False,
                           disable=not progress):
                x = synthesize()
                z = teacher.features(x, layer)
                t_logits = teacher.head(z, layer)
                l_bn = bn_stats.pop()
                zero = x.new_zeros(())
                l_adv = adversarial_loss(t_logits, student(x)) if cfg.lambda_adv > 0 else zero
                l_uni = zero
                if use_uni:
                    with bn_stats.paused():
                        z_nr, _ = non_robust_features(teacher, z, mine, layer, cfg.bottleneck, ib_rng)
                        l_uni = uniform_prediction_loss(teacher.head(z_nr, layer))
                terms = GeneratorLossTerms(adv=l_adv, bn=l_bn, oh=one_hot_loss(t_logits, mine), uni=l_uni,
                                           div=diversity_loss(x, latents, mine) if cfg.lambda_div > 0 else None)
                loss = generator_loss(terms, cfg.lambda_adv, cfg.lambda_bn, cfg.lambda_oh, cfg.lambda_uni,
                                      cfg.lambda_div)
                check_finite_loss(loss, "synthesis", epoch, it, terms.as_floats(),
                                  {"images": x, "labels": mine, "teacher_logits": t_logits})
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                last_terms, counts = _global_figures({**terms.as_floats(), "gen": loss.item()},
                                                     top1_counts(t_logits, self.num_classes))
                history.append(last_terms)
                share, run = collapse_run(counts, run)
                collapse_iters = max(collapse_iters, run)
                if last_terms["gen"] < best_loss:
                    best_loss, best_x, best_terms = last_terms["gen"], x.detach().float().clone(), last_terms
        nonrobust = None
        if cfg.fae:  # the mask of Eq. 4-6 on the kept batch, recorded even when λ_uni = 0 (a diagnostic)
            with torch.no_grad():
                z_kept = teacher.features(best_x, layer)
            _, nonrobust = non_robust_features(teacher, z_kept, mine, layer, cfg.bottleneck, ib_rng)
            nonrobust = distributed.mean_across(nonrobust)
        best_x = distributed.gather_rows(best_x)
        return EpochSynthesis(images=best_x, labels=labels, best_loss=best_loss, best_terms=best_terms,
                              last_terms=last_terms, teacher_top1_share=share, collapse_iterations=collapse_iters,
                              history=history, nonrobust_fraction=nonrobust)
