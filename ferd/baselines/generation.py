"""The generation stage of the paper's baselines (``method: deepinv | cmi | fast | zskt | dfhl``).

Same contract as FERD's :class:`ferd.synthesis.epoch.Synthesizer`: each epoch draws labels from p
(uniform: the baselines do not reweight, §3 of the paper), takes ``synthesis.iterations`` steps and
returns the lowest-loss batch, which the caller adds to the pool. What differs is the generator and
its objective, per reference (``../shared/notes/baselines.md``; losses in :mod:`.losses`), one module
each (:mod:`.deepinv`, :mod:`.cmi`, :mod:`.fast`, :mod:`.zskt`, :mod:`.dfhl`, registered in
:data:`ferd.settings.method.METHODS`):

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

from typing import Any, ClassVar

import torch

from ..core import rng
from ..settings.method import METHODS
from ..synthesis.epoch import GenerationMethod, SynthesisContext
from ..synthesis.generator import Generator


def value(t: torch.Tensor | float) -> float:
    """A loss term as a float for the records."""
    return float(t.detach()) if isinstance(t, torch.Tensor) else float(t)




class BaselineMethod(GenerationMethod):
    """One baseline's generation (:class:`ferd.synthesis.epoch.GenerationMethod`), run by the one loop
    (:class:`ferd.synthesis.epoch.Synthesizer`). ``persistent_generator``: a generator kept across epochs.
    No baseline reweights (§3: labels are drawn from a uniform p). Its student side is A.8's conversion unless
    it says ``own`` (:mod:`ferd.settings.method`); it reads ``baseline.robust`` and its own group ``baseline.<name>``."""

    persistent_generator: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and "groups" not in cls.__dict__:
            cls.synthesis_groups = (f"baseline.{cls.name}",)
            cls.groups = ("baseline.robust", *cls.synthesis_groups)

    def __init__(self, ctx: SynthesisContext) -> None:
        super().__init__(ctx)
        if self.persistent_generator:
            g = ctx.cfg.generator
            with rng.seeded(ctx.seed, "generator"):
                self.generator = Generator(nz=g.nz, ngf=g.ngf, img_size=ctx.img_size).to(ctx.device)


register = METHODS.register
