"""Non-robust feature suppression: the information bottleneck of Eq. 4-6.

Given teacher features Z = f_l^T(x) of a synthetic batch, fit a noise scale λ_r so that
the noisy features Z_I = Z + softplus(λ_r)·ε still predict y (Eq. 4-5), then call a
channel *non-robust* when its fitted noise variance stays below the largest feature
variance (Eq. 6). L_uni (Eq. 7) then pushes f_{l+}^T(mask · Z) towards uniform.

Two parameterisations, selected by ``bottleneck.mode`` (reference-code.md):

``paper`` (default)
    One λ per channel (Eq. 4-6 index λ by channel c), ε ~ N(0, I) of Z's shape,
    v_c = variance of channel c over batch and positions, regulariser β·Σ_c(...), and
    mask_k = 1[σ_k² < max_c v_c].
``authors``
    The authors' code (after Kim et al. 2021): λ of shape [B, C, 1, 1], ε of shape
    [B, C, 1, 1], v = per-sample spatial variance of each channel, regulariser
    β·mean over samples and channels of ½(...), and the mask compares σ² with the
    global maximum of v over the batch and channels.

In both, the noise scale is σ = softplus(λ) and "λ_c²" of Eq. 5-6 is read as σ_c², the
variance of the injected noise (as the authors' code does). v is computed on the clean
features Z: the paper's wording "v_c = Var of the c-th channel of Z_I" would make v
depend on λ itself; the authors' code (and Kim et al.) use Z. λ starts at 0 and is fitted
with Adam (lr 0.1, 50 steps) on Z detached, so only the mask depends on this fit; the
gradient of L_uni reaches the generator through Z.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from ..models import FerdModel

Mode = Literal["paper", "authors"]
_EPS = 1e-8


def noisy_features(z: torch.Tensor, lam: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Z_I = Z + softplus(λ_r)·ε (Eq. 4); ``lam`` broadcasts against ``z`` ([C] → [1, C, 1, 1])."""
    if lam.dim() == 1:
        lam = lam.view(1, -1, 1, 1)
    return z + F.softplus(lam) * noise


def channel_variance(z: torch.Tensor, mode: Mode) -> torch.Tensor:
    """v of Eq. 5: per channel over (N, H, W) → [C] (paper), or per sample over (H, W) → [B, C] (authors)."""
    if mode == "paper":
        return z.transpose(0, 1).reshape(z.shape[1], -1).var(dim=1, unbiased=False)
    return z.reshape(z.shape[0], z.shape[1], -1).var(dim=2, unbiased=False)


def bottleneck_regulariser(v: torch.Tensor, sigma2: torch.Tensor, mode: Mode) -> torch.Tensor:
    """The information term of Eq. 5: Σ_c (v_c/σ_c² + log(σ_c²/v_c) − 1) (paper),
    or ½·mean over samples and channels of the same (authors' code)."""
    v = v.clamp_min(_EPS)
    sigma2 = sigma2.clamp_min(_EPS)
    terms = v / sigma2 + torch.log(sigma2 / v) - 1.0
    return terms.sum() if mode == "paper" else 0.5 * terms.mean()


def bottleneck_objective(noisy_logits: torch.Tensor, y: torch.Tensor, v: torch.Tensor, sigma2: torch.Tensor,
                         beta: float, mode: Mode) -> torch.Tensor:
    """L(λ) of Eq. 5: CE(f_{l+}^T(Z_I), y) + β · regulariser(v, σ²)."""
    return F.cross_entropy(noisy_logits, y) + beta * bottleneck_regulariser(v, sigma2, mode)


def non_robust_mask(sigma2: torch.Tensor, v: torch.Tensor, mode: Mode) -> torch.Tensor:
    """Eq. 6: 1[σ_k² < max Var], as a float mask broadcastable to Z ([1, C, 1, 1] or [B, C, 1, 1])."""
    mask = (sigma2 < v.max()).float()
    return mask.view(1, -1, 1, 1) if mode == "paper" else mask.view(*mask.shape, 1, 1)


def fit_noise_scale(teacher: FerdModel, z: torch.Tensor, y: torch.Tensor, layer: str, mode: Mode,
                    iterations: int, lr: float, beta: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit λ_r by minimising Eq. 5 on detached features; return (σ² = softplus(λ)², v)."""
    z = z.detach()
    v = channel_variance(z, mode)
    shape = (z.shape[1],) if mode == "paper" else (z.shape[0], z.shape[1])
    lam = torch.zeros(shape, device=z.device, requires_grad=True)
    opt = torch.optim.Adam([lam], lr=lr)
    noise_shape = z.shape if mode == "paper" else (z.shape[0], z.shape[1], 1, 1)
    with torch.enable_grad():
        for _ in range(iterations):
            noise = torch.randn(noise_shape, generator=generator).to(z.device)
            lam_b = lam if mode == "paper" else lam.view(*shape, 1, 1)
            logits = teacher.head(noisy_features(z, lam_b, noise), layer)
            loss = bottleneck_objective(logits, y, v, F.softplus(lam) ** 2, beta, mode)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return (F.softplus(lam.detach()) ** 2), v
