"""The standard training augmentation of robust distillation: random crop (zero-pad 4) and flip.

Fast, RSLAD and the authors' FERD code random-crop (pad 4) and horizontally flip every batch
before the teacher and the student (``std_aug``); the paper does not mention it. Here it serves
two callers: the teacher's adversarial training (crop only) and every method's distillation
(``distill.augment``: crop, plus a flip where the dataset is flip-invariant — not for digits).

Both transforms move whole pixels (the crop is an integer shift with zeros entering), so
applying one draw to an image and to a perturbed copy of it keeps their L∞ distance within ε:
:func:`crop_flip` takes several same-shaped batches and moves them together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and crop back at a random offset per image (seeded, batched)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    return padded[torch.arange(n, device=x.device)[:, None, None, None],
                  torch.arange(c, device=x.device)[None, :, None, None], rows, cols].contiguous()


def crop_flip(*batches: torch.Tensor, padding: int, flip: bool, generator: torch.Generator
              ) -> tuple[torch.Tensor, ...]:
    """One random crop (pad ``padding``) and, with ``flip``, one horizontal flip with p = ½ per image,
    applied identically to every batch in ``batches`` (same N×C×H×W); returns them in order."""
    c = batches[0].shape[1]
    x = random_crop(torch.cat(batches, dim=1), padding, generator)
    if flip:
        mask = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return tuple(x.split(c, dim=1))
