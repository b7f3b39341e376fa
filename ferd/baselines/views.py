"""Differentiable, seeded image views for the baselines' synthesis (CMI, Fast, DFHL, DeepInversion).

The references use kornia / torchvision augmentations inside the generator's graph. Here every
view is one ``F.grid_sample`` with a per-sample affine map, so gradients reach the generator and
every random draw comes from the caller's ``torch.Generator``:

* :func:`crop_flip` — CMI's "global" view and Fast/DFHL's crop: a shift of up to ``pad`` pixels
  with zero padding (``RandomCrop(size, padding=pad)``), then a horizontal flip with probability ½.
  Integer shifts with ``align_corners=False`` sample pixel centres exactly: no interpolation.
* :func:`resized_crop_flip` — CMI's "local" view: ``RandomResizedCrop(scale=(0.25, 1))`` plus a
  flip. Deviation: the aspect ratio is kept at 1 (kornia draws it in [3/4, 4/3]).
* :func:`roll_flip` — DeepInversion's jitter: a cyclic roll by up to ± ``jitter`` pixels (one draw
  for the batch, as ``torch.roll`` in the reference) and a flip of the whole batch with probability ½.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _affine(x: torch.Tensor, scale: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor,
            flip: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    theta = torch.zeros(n, 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = scale * torch.where(flip, -1.0, 1.0)
    theta[:, 1, 1] = scale
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def crop_flip(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by (dx, dy) ∈ [−pad, pad]² whole pixels (zeros enter) and flip it with p = ½."""
    n, _, h, w = x.shape
    dx = torch.randint(-pad, pad + 1, (n,), generator=generator).to(x.dtype)
    dy = torch.randint(-pad, pad + 1, (n,), generator=generator).to(x.dtype)
    flip = torch.rand(n, generator=generator) < 0.5
    return _affine(x, torch.ones(n, dtype=x.dtype), 2 * dx / w, 2 * dy / h, flip)


def resized_crop_flip(x: torch.Tensor, generator: torch.Generator, scale: tuple[float, float] = (0.25, 1.0)
                      ) -> torch.Tensor:
    """A square crop covering a fraction s ~ U[scale] of the area, resized back to H×W, flipped with p = ½."""
    n = x.shape[0]
    s = torch.empty(n).uniform_(*scale, generator=generator).sqrt().to(x.dtype)
    tx = (torch.rand(n, generator=generator).to(x.dtype) * 2 - 1) * (1 - s)
    ty = (torch.rand(n, generator=generator).to(x.dtype) * 2 - 1) * (1 - s)
    flip = torch.rand(n, generator=generator) < 0.5
    return _affine(x, s, tx, ty, flip)


def roll_flip(x: torch.Tensor, jitter: int, generator: torch.Generator) -> torch.Tensor:
    """DeepInversion's jitter: roll the batch by (dx, dy) ∈ [−jitter, jitter]², flip it with p = ½."""
    if jitter > 0:
        dx, dy = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if torch.rand((), generator=generator) < 0.5:
        x = torch.flip(x, dims=(3,))
    return x
