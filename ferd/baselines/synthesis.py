"""The generation stage of the paper's baselines (``method: deepinv | cmi | fast | zskt | dfhl``).

Same contract as FERD's :class:`ferd.synthesis.epoch.Synthesizer`: each epoch draws labels from p
(uniform: the baselines do not reweight, §3 of the paper), takes ``synthesis.iterations`` steps and
returns the lowest-loss batch, which the caller adds to the pool. What differs is the generator and
its objective, per reference (``../shared/notes/baselines.md``; losses in :mod:`.losses`), one module
each (:mod:`.deepinv`, :mod:`.cmi`, :mod:`.fast`, :mod:`.zskt`, :mod:`.dfhl`, registered in
:data:`ferd.method.METHODS`):

=========  ======================================================================================
deepinv    no generator: the pixels themselves, Adam (β = 0.5, 0.99), jitter (roll ± 4 px + flip),
           clamped to [0, 1] after each step; bn·L_BN + oh·CE − adv·JS + tv·TV₁ + l2·‖x‖₂.
cmi        a generator re-initialised every epoch (N(0, 0.02) weights) with a learnable z;
           bn·L_BN + oh·CE − adv·masked KL + cr·L_cr on a global (crop + flip) and a local
           (resized crop) view; features = per-sample channel means of every teacher BN input;
           a persistent projection head and a FIFO bank of kept batches' features.
fast       a persistent meta-generator; each epoch a clone with a fresh learnable z takes the
           steps, and the sum of its gradients updates the meta-generator (FOMAML, Adam with
           lr·steps); bn·L_BN^mmt + oh·CE − adv·masked KL on a crop + flip view.
zskt       a persistent generator, a fresh z every step, one Adam step on −KL(T‖S) ('mean'
           reduction), gradient-norm clip 5; pool labels are the teacher's top-1.
dfhl       a persistent generator, a fresh learnable z and a fresh Adam every epoch, student only
           (eval): KL(ỹ‖p_S) + 3·Σ p̄ log₁₀ p̄ on a crop + flip view; pool labels are the
           teacher's top-1 (a hard-label query, as DFHL keeps them).
=========  ======================================================================================

Deviations shared by all, stated once: generators end in a Sigmoid so samples are images in
[0, 1] (ZSKT's ends in BN(3), unbounded; PGD needs a box); the kept batch is the lowest-loss
iterate (the datafree DeepInversion keeps the last one through an in-place view, a bug);
augmentations are :mod:`.views` (seeded, differentiable); DFHL's ``strong_aug`` is not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import rng
from ..config import SynthesisConfig
from ..models import FerdModel
from ..numerics import autocast, check_finite_loss
from ..synthesis.losses import BatchNormStatistics
from ..synthesis.epoch import EpochSynthesis, collapse_run, frozen_student, top1_counts
from ..baseline_config import BaselineConfig

if TYPE_CHECKING:
    from .method import BaselineMethod


@dataclass(frozen=True)
class SynthesisContext:
    cfg: SynthesisConfig
    b: BaselineConfig
    num_classes: int
    img_size: int
    seed: int
    device: str | torch.device


class BaselineSynthesizer:
    """Runs one registered baseline (:class:`.method.BaselineMethod`) epoch by epoch; the method owns whatever
    it keeps across epochs (generator, optimiser, CMI head and bank, Fast's EMA)."""

    def __init__(self, method: type[BaselineMethod], cfg: SynthesisConfig, baseline: BaselineConfig,
                 num_classes: int, img_size: int, seed: int, device: str | torch.device = "cpu",
                 amp: str = "fp32") -> None:
        self.cfg, self.num_classes, self.seed, self.device = cfg, num_classes, seed, device
        self.amp = amp  # compute.amp
        self.method: BaselineMethod = method(SynthesisContext(cfg, baseline, num_classes, img_size, seed, device))

    @property
    def generator(self) -> nn.Module | None:
        """The generator kept across epochs (None for DeepInversion and CMI)."""
        return self.method.generator

    def state_dict(self) -> dict:
        return self.method.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state)

    def run_epoch(self, teacher: FerdModel, student: nn.Module, p: torch.Tensor, epoch: int,
                  progress: bool = False) -> EpochSynthesis:
        """``synthesis.iterations`` steps of the method's objective; returns the lowest-loss batch."""
        cfg, method = self.cfg, self.method
        labels = torch.multinomial(p.double().cpu(), cfg.batch_size, replacement=True,
                                   generator=rng.generator(self.seed, "labels", epoch)).to(self.device)
        latent = rng.generator(self.seed, "latent", epoch)
        aug = rng.generator(self.seed, "views", epoch)
        synthesize, opt = method.start_epoch(epoch, latent)
        if method.generator is not None:
            method.generator.train()
        best_loss, best_x, best_terms, last_terms = float("inf"), None, {}, {}
        run, collapse_iters, share, last_stats = 0, 0, 0.0, None
        history: list[dict[str, float]] = []
        with (frozen_student(student), BatchNormStatistics(teacher) as bn_stats,
              autocast(self.amp, self.device)):
            for it in tqdm(range(cfg.iterations), desc=f"epoch {epoch} {method.name} generator", leave=False,
                           disable=not progress):
                x = synthesize()
                loss, terms, t_logits, last_stats = method.objective(x, labels, teacher, student, bn_stats, aug,
                                                                     epoch)
                check_finite_loss(loss, "synthesis", epoch, it, terms, {"images": x, "labels": labels})
                kept = x.detach().float().clone()
                opt.zero_grad(set_to_none=True)
                method.zero_grad()
                loss.backward()
                method.after_backward()
                opt.step()
                method.after_step()
                last_terms = {**terms, "gen": loss.item()}
                history.append(last_terms)
                if t_logits is not None:
                    share, run = collapse_run(top1_counts(t_logits, self.num_classes), run)
                    collapse_iters = max(collapse_iters, run)
                if loss.item() < best_loss:
                    best_loss, best_x, best_terms = loss.item(), kept, last_terms
            method.end_epoch(teacher, best_x, bn_stats, aug)
        method.after_epoch(last_stats)
        if method.relabel_by_teacher:  # unconditional or student-only: the teacher labels the kept batch
            with torch.no_grad():
                labels = teacher(best_x).argmax(1)
        return EpochSynthesis(images=best_x, labels=labels, best_loss=best_loss, best_terms=best_terms,
                              last_terms=last_terms, teacher_top1_share=share, collapse_iterations=collapse_iters,
                              history=history)
