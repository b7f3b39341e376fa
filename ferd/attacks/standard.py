"""The evaluation's gradient attacks (FERD §5.1, with the settings of Fair-ARD's evaluation code):
clean, FGSM, PGD-20 and CW∞. The step is ``threat.step`` (2/255 at ε = 8/255)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..settings.config import PGD_STEPS
from .base import Attack, register
from .gradient import CW_CONFIDENCE, fgsm, pgd


@register
class Clean(Attack):
    """No attack."""

    name, label = "clean", "Clean"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return x


@register
class FGSM(Attack):
    """FGSM (Goodfellow et al., 2014): one signed-gradient step of size ε on the cross-entropy, clamped to
    [0, 1] (Fair-ARD adds a 0.001·N(0, 1) jitter before the step; we do not)."""

    name, label = "fgsm", "FGSM"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return fgsm(model, x, y, self.ctx.eps)

    def settings(self) -> dict[str, Any]:
        return {"steps": 1, "step_size": self.ctx.eps, "random_start": False, "loss": "ce"}

    @staticmethod
    def describe(settings: dict[str, Any], eps: float) -> str:
        return f"- FGSM: one step of size ε = {eps * 255:g}/255 on the cross-entropy, no random start."


@register
class PGD20(Attack):
    """PGD-20 (Madry et al., 2017): 20 steps of ``step`` on the cross-entropy from a uniform random start
    in [−ε, ε] (clamped to [0, 1])."""

    name, label = "pgd20", "PGD-20"
    loss = "ce"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return pgd(model, x, y, self.ctx.eps, self.ctx.step, PGD_STEPS, loss=self.loss, rand_start=True,
                   generator=generator)

    def settings(self) -> dict[str, Any]:
        return {"steps": PGD_STEPS, "step_size": self.ctx.step, "random_start": "uniform[-eps,eps], clamped",
                "loss": "ce"}

    @staticmethod
    def describe(settings: dict[str, Any], eps: float) -> str:
        return (f"- PGD-20: {settings['steps']} steps of {settings['step_size'] * 255:g}/255 on the cross-entropy, "
                "uniform random start in [−ε, ε] clamped to [0, 1].")


@register
class CW(PGD20):
    """CW∞ (Carlini & Wagner, 2017, in the L∞ PGD form of TRADES / Fair-ARD): the same PGD-20 on the
    margin loss −relu(z_y − max_{j≠y} z_j + κ), κ = 50."""

    name, label = "cw", "CW∞"
    loss = "cw"

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "loss": "cw_margin", "kappa": CW_CONFIDENCE}

    @staticmethod
    def describe(settings: dict[str, Any], eps: float) -> str:
        return (f"- CW∞: {settings['steps']} PGD steps of {settings['step_size'] * 255:g}/255 on the CW margin "
                f"loss (κ = {settings['kappa']:g}), same random start.")
