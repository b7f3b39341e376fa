"""Non-robust feature suppression: the information bottleneck of Eq. 4-6.

Given teacher features Z = f_l^T(x) of a synthetic batch, fit a noise scale λ_r so that
the noisy features Z_I = Z + softplus(λ_r)·ε still predict y (Eq. 4-5), then call a
channel *non-robust* when its fitted noise variance stays below the largest feature
variance (Eq. 6). L_uni (Eq. 7) then pushes f_{l+}^T(mask · Z) towards uniform.

Two parameterisations, selected by ``bottleneck.mode`` (reference-code.md):

``paper``
    One λ per channel (Eq. 4-6 index λ by channel c), ε ~ N(0, I) of Z's shape,
    v_c = variance of channel c over batch and positions, regulariser β·Σ_c(...), and
    mask_k = 1[σ_k² < max_c v_c].
``authors`` (default)
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

Which channels count as non-robust (``bottleneck.threshold``):

``global`` (Eq. 6 as printed, and the authors' code)
    mask_k = 1[σ_k² < max v]. Degenerate: the regulariser of Eq. 5 is the KL between
    N(0, v_k) and N(0, σ_k²), minimised at σ_k² = v_k, and the cross-entropy only pulls σ
    down, so every fitted σ_k² ends at or below v_k ≤ max v and the mask marks (almost) every
    channel — measured 100 % on digits FAEs and 99.2-99.99 % on CIFAR-10 test images under the
    shared WRN-16-2 teacher. L_uni then is KL(U ‖ f^T(x)) on the whole feature map.
``own`` (default)
    mask_k = 1[σ_k² < τ·v_k] with σ² started at the regulariser's optimum v (λ = softplus⁻¹(√v)):
    a channel is non-robust when the prediction cannot bear noise of even τ times the channel's
    own variance, so the cross-entropy had to push σ_k² well below it; channels the head
    ignores stay at σ² ≈ v. τ = ``bottleneck.ratio`` (0.5). With ``mode: paper`` the regulariser
    is summed over channels and outweighs the cross-entropy, so σ² stays at v and nothing is
    marked; with ``mode: authors`` (½·mean) a subset is. Measured (``benchmarks/fae_mask.py``,
    shared WRN-16-2 teacher, β = 0.3): 13 % of sample-channels on 256 CIFAR-10 test images and
    9 % on FAEs, and a PGD-10 attack moves the marked channels 15 % / 9 % further (in units of
    the channel's std) than the others; 31 % on the digits teacher's FAEs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F

from ..compute import distributed
from ..models import FerdModel

if TYPE_CHECKING:
    from ..settings.config import BottleneckConfig

Mode = Literal["paper", "authors"]
Threshold = Literal["global", "own"]
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


def non_robust_mask(sigma2: torch.Tensor, v: torch.Tensor, mode: Mode, threshold: Threshold = "global",
                    ratio: float = 0.5) -> torch.Tensor:
    """Eq. 6: 1[σ_k² < max Var] (``global``) or 1[σ_k² < τ·v_k] (``own``, τ = ``ratio``), as a float mask
    broadcastable to Z ([1, C, 1, 1] or [B, C, 1, 1])."""
    bound = v.max() if threshold == "global" else ratio * v
    mask = (sigma2 < bound).float()
    return mask.view(1, -1, 1, 1) if mode == "paper" else mask.view(*mask.shape, 1, 1)


def initial_noise_scale(v: torch.Tensor, threshold: Threshold) -> torch.Tensor:
    """λ_r at the start of the fit: 0 (σ² = softplus(0)² ≈ 0.48, the authors' code) for ``global``;
    softplus⁻¹(√v), i.e. σ² = v (the regulariser's optimum), for ``own``."""
    if threshold == "global":
        return torch.zeros_like(v)
    sigma = v.clamp_min(_EPS).sqrt()
    return sigma + torch.log(-torch.expm1(-sigma))  # softplus⁻¹(σ) = σ + log(1 − e^{−σ}), stable


def fit_noise_scale(teacher: FerdModel, z: torch.Tensor, y: torch.Tensor, layer: str, mode: Mode,
                    iterations: int, lr: float, beta: float, generator: torch.Generator,
                    threshold: Threshold = "global") -> tuple[torch.Tensor, torch.Tensor]:
    """Fit λ_r by minimising Eq. 5 on detached features; return (σ² = softplus(λ)², v).

    Under torchrun (``mode: authors``: one λ per sample and channel) each rank fits its rows of the
    global batch: the noise is drawn for the global batch and sharded, and the objective (batch means)
    is scaled by the rank's share so that each λ gets the one-process gradient. ``mode: paper`` shares
    λ across the batch and is refused there."""
    share = 1.0 / distributed.world()[1]
    if share < 1 and mode == "paper":
        raise ValueError("synthesis.bottleneck.mode: 'paper' (one λ per channel over the whole batch) is not "
                         "data-parallel; expected 'authors' with nproc_per_node > 1")
    z = z.detach()
    v = channel_variance(z, mode)
    shape = (z.shape[1],) if mode == "paper" else (z.shape[0], z.shape[1])
    lam = initial_noise_scale(v, threshold).reshape(shape).clone().requires_grad_(True)
    opt = torch.optim.Adam([lam], lr=lr)
    noise_shape = z.shape if mode == "paper" else (z.shape[0], z.shape[1], 1, 1)
    with torch.enable_grad():
        for _ in range(iterations):
            noise = distributed.draw_rows(noise_shape, lambda s: torch.randn(s, generator=generator)).to(z.device)
            lam_b = lam if mode == "paper" else lam.view(*shape, 1, 1)
            logits = teacher.head(noisy_features(z, lam_b, noise), layer)
            loss = bottleneck_objective(logits, y, v, F.softplus(lam) ** 2, beta, mode)
            if share < 1:
                loss = loss * share
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return (F.softplus(lam.detach()) ** 2), v


def non_robust_features(teacher: FerdModel, z: torch.Tensor, y: torch.Tensor, layer: str, cfg: BottleneckConfig,
                        generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """Eq. 4-6 end to end: fit λ_r on detached Z, return (mask · Z, the fraction of channels masked).
    The gradient of anything computed on mask · Z reaches the generator through Z."""
    sigma2, v = fit_noise_scale(teacher, z, y, layer, cfg.mode, cfg.iterations, cfg.lr, cfg.beta, generator,
                                cfg.threshold)
    mask = non_robust_mask(sigma2, v, cfg.mode, cfg.threshold, cfg.ratio)
    return mask * z, float(mask.mean())
