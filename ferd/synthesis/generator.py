"""Generators of synthetic samples (Algorithm 1 line 8: x_F ← g(z, y)).

Both follow the Fast / CMI generator (zju-vipa ``datafree/models/generator.py``):
Linear → 2·ngf·(s/4)² → BN → 2 × [Upsample ×2, Conv3×3, BN, LeakyReLU(0.2)] → Conv3×3 → Sigmoid,
so outputs are images in [0, 1] (normalisation, if any, lives inside the models).

* :class:`ConditionalGenerator` — the paper's g(z, y) (Algorithm 1): the label enters
  through a learned embedding concatenated to z. The paper does not say how g is
  conditioned; concatenating a label embedding is the common choice (cGAN style). It
  persists for the whole run (``generator.kind: conditional``, the default).
* :class:`Generator` — the authors' code: unconditional, re-initialised every epoch
  and optimised together with a learnable z (``generator.kind: reinit``).
"""

from __future__ import annotations

import torch
from torch import nn


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
