"""The generator's losses: Eq. 7 (L_uni), Eq. 8 (L_adv, L_bn, L_oh) and Eq. 9 (L_gen).

Sign convention of L_adv (the paper's text says "KL(f^T, f^S) encourages divergence"):
the generator *maximises* the teacher–student divergence, so the minimised L_gen holds
−KL(f^T ‖ f^S), as in the authors' code and every reference implementation (Fast, CMI,
ZSKT, DFAD). :func:`adversarial_loss` returns that negative KL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..compute.distributed import channel_moments
from ..compute.divergence import kl_logits, kl_uniform


def adversarial_loss(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """L_adv of Eq. 8 as minimised by the generator: −KL(f^T(x) ‖ f^S(x)), batch mean."""
    return -kl_logits(teacher_logits, student_logits)


def one_hot_loss(teacher_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L_oh of Eq. 8: CE(f^T(x), y), batch mean."""
    return F.cross_entropy(teacher_logits, y)


def bn_statistics_loss(mean: torch.Tensor, var: torch.Tensor, running_mean: torch.Tensor,
                       running_var: torch.Tensor) -> torch.Tensor:
    """One BatchNorm layer's term of L_bn (Eq. 8): ‖μ(x) − μ‖₂ + ‖σ²(x) − σ²‖₂ (norms, not squared)."""
    return torch.linalg.vector_norm(mean - running_mean) + torch.linalg.vector_norm(var - running_var)


def bn_batch_statistics(x: torch.Tensor, global_batch: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and biased variance of a BatchNorm layer's input over N, H, W (as BatchNorm
    computes them): the batch side of L_bn (Eq. 8) and of Fast's momentum L_BN. ``global_batch``: of the
    global batch when several ranks each hold a share of it (:func:`ferd.compute.distributed.channel_moments`)."""
    return channel_moments(x, global_batch)


def uniform_prediction_loss(nonrobust_logits: torch.Tensor) -> torch.Tensor:
    """L_uni of Eq. 7: KL(U ‖ f_{l+}^T(Z_nr)), batch mean."""
    return kl_uniform(nonrobust_logits)


def diversity_loss(images: torch.Tensor, latents: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mode seeking within labels (MSGAN, Mao et al. 2019), not in the paper: −mean over pairs of
    samples with the same label of d(x_i, x_j) / d(z_i, z_j), d the mean absolute difference, z
    detached. Pairs: neighbours after a stable sort by label. A conditional generator that ignores z
    (one image per label) has d(x) = 0 on every pair; this term rewards images that move with z."""
    order = torch.argsort(labels, stable=True)
    y, x, z = labels[order], images[order].flatten(1), latents[order].detach().flatten(1)
    same = y[1:] == y[:-1]
    if not bool(same.any()):
        return images.new_zeros(())
    dx = (x[1:] - x[:-1]).abs().mean(1)[same]
    dz = (z[1:] - z[:-1]).abs().mean(1)[same]
    return -(dx / dz.clamp_min(1e-8)).mean()


@dataclass
class GeneratorLossTerms:
    """The four terms of Eq. 9, unweighted, and the optional diversity term (:func:`diversity_loss`)."""

    adv: torch.Tensor
    bn: torch.Tensor
    oh: torch.Tensor
    uni: torch.Tensor
    div: torch.Tensor | None = None

    def as_floats(self) -> dict[str, float]:
        return {k: float(v.detach()) for k, v in vars(self).items() if v is not None}


def generator_loss(terms: GeneratorLossTerms, lambda_adv: float, lambda_bn: float, lambda_oh: float,
                   lambda_uni: float, lambda_div: float = 0.0) -> torch.Tensor:
    """L_gen of Eq. 9: λ_adv·L_adv + λ_bn·L_bn + λ_oh·L_oh + λ_uni·L_uni (+ λ_div·L_div when given)."""
    loss = lambda_adv * terms.adv + lambda_bn * terms.bn + lambda_oh * terms.oh + lambda_uni * terms.uni
    return loss if terms.div is None else loss + lambda_div * terms.div


class BatchNormStatistics:
    """The one BatchNorm hook: forward hooks on every ``BatchNorm2d`` of a (frozen) teacher that keep each
    layer's *input*, for L_bn (Eq. 8) and for the baselines that read BN features (CMI, Fast).

    :meth:`pop` returns Σ over layers of L_bn for the inputs recorded since the last call (the batch
    statistics — mean over N, H, W and the biased variance, as BatchNorm computes them — against the
    layer's running statistics, as in DeepInversion / Fast / CMI, ``datafree/hooks.py``) and clears them;
    :meth:`paused` stops recording for L_bn (e.g. during the information-bottleneck fit, which re-runs part
    of the teacher on noisy features); :meth:`run` returns the logits and BN inputs of one pass, paused or
    not. Use as a context manager.
    """

    def __init__(self, model: nn.Module, global_batch: bool = False) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        self.global_batch = global_batch  # statistics of the global batch under torchrun (ferd.compute.distributed)
        self._pending: list[tuple[nn.BatchNorm2d, torch.Tensor]] = []
        self._captured: list[torch.Tensor] | None = None
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._active = True

    def _hook(self, module: nn.BatchNorm2d, inputs: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        if self._active:
            self._pending.append((module, inputs[0]))
        if self._captured is not None:
            self._captured.append(inputs[0])

    def __enter__(self) -> BatchNormStatistics:
        self._handles = [m.register_forward_hook(self._hook) for m in self.layers]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles, self._pending = [], []

    def pop(self) -> torch.Tensor:
        if not self._pending:
            raise RuntimeError("L_bn: no BatchNorm2d statistics recorded (is the hook context active, "
                               "and does the teacher have BatchNorm2d layers?)")
        terms = [bn_statistics_loss(*bn_batch_statistics(x, self.global_batch), m.running_mean, m.running_var)
                 for m, x in self._pending]
        self._pending = []
        return torch.stack(terms).sum()

    def run(self, teacher: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The teacher's logits on ``x`` and the input of every BN layer in that pass."""
        self._captured = []
        try:
            return teacher(x), self._captured
        finally:
            self._captured = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._active = False
        try:
            yield
        finally:
            self._active = True
