"""Generators of synthetic samples (Algorithm 1 line 8: x_F ← g(z, y)).

Both follow the Fast / CMI generator (zju-vipa ``datafree/models/generator.py``):
Linear → 2·ngf·(s/4)² → BN → 2 × [Upsample ×2, Conv3×3, BN, LeakyReLU(0.2)] → Conv3×3 → Sigmoid,
so outputs are images in [0, 1] (normalisation, if any, lives inside the models).

* :class:`Generator` — the authors' code: unconditional, re-initialised every epoch
  (:func:`authors_init`) and optimised together with a learnable z; labels enter only through
  L_oh on the label batch drawn from p (``generator.kind: reinit``, the default).
* :class:`ConditionalGenerator` — the paper's g(z, y) (Algorithm 1): the label enters
  through a learned embedding concatenated to z. The paper does not say how g is
  conditioned; concatenating a label embedding is the common choice (cGAN style).
  ``kind: conditional`` keeps one for the whole run with z fixed per epoch (Algorithm 1 as
  printed); ``kind: conditional-reinit`` re-initialises it every epoch with a learnable z.

Why ``reinit`` is the default (measured, README "A student worth shipping"): the conditional
generators learn to ignore z — the share of the kept batch's pixel variance that lies within
labels is 0.05-0.13 (about one image per label) against 0.87-0.88 for ``reinit``, and the
student distilled from the collapsed pool is less robust. ``synthesis.lambda_div`` (a mode-seeking
term, :func:`ferd.synthesis.losses.diversity_loss`) is the repair offered for a conditional g.
"""

from __future__ import annotations

import torch
from torch import nn


def authors_init(module: nn.Module) -> nn.Module:
    """N(0, 0.02) conv/linear weights, N(1, 0.02) BatchNorm scales, zero biases (in place; global RNG)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) and m.bias is not None:
            nn.init.zeros_(m.bias)
    return module


def _body(ngf: int, nc: int) -> nn.Sequential:
    return nn.Sequential(
        nn.BatchNorm2d(ngf * 2),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(ngf * 2, ngf * 2, 3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(ngf * 2),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(ngf * 2, ngf, 3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(ngf),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ngf, nc, 3, stride=1, padding=1),
        nn.Sigmoid(),
    )


class Generator(nn.Module):
    """Unconditional g(z) of Fast / CMI and of the authors' FERD code."""

    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 32, nc: int = 3) -> None:
        super().__init__()
        if img_size % 4:
            raise ValueError(f"img_size: expected a multiple of 4, got {img_size}")
        self.nz, self.ngf, self.init_size = nz, ngf, img_size // 4
        self.l1 = nn.Linear(nz, ngf * 2 * self.init_size**2)
        self.conv_blocks = _body(ngf, nc)

    def _decode(self, h: torch.Tensor) -> torch.Tensor:
        out = self.l1(h).view(h.shape[0], self.ngf * 2, self.init_size, self.init_size)
        return self.conv_blocks(out)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self._decode(z)


class ConditionalGenerator(Generator):
    """The paper's conditional g(z, y): z concatenated with a learned label embedding."""

    def __init__(self, num_classes: int, nz: int = 256, ngf: int = 64, img_size: int = 32, nc: int = 3) -> None:
        super().__init__(nz=2 * nz, ngf=ngf, img_size=img_size, nc=nc)
        self.nz = nz
        self.embed = nn.Embedding(num_classes, nz)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self._decode(torch.cat([z, self.embed(y)], dim=1))
