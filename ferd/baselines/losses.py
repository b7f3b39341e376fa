"""The characteristic loss terms of the paper's baselines (§5.1, A.8), one function each.

Sources (read, not copied; ``../shared/notes/baselines.md`` has the details and pitfalls):
DeepInversion (Yin et al., CVPR 2020; NVlabs/DeepInversion, zju-vipa ``datafree``), CMI
(Fang et al., IJCAI 2021; zju-vipa/CMI ``contrastive.py``), Fast (Fang et al., AAAI 2022;
Fast-Datafree ``fast_meta.py``), ZSKT (Micaelli & Storkey, NeurIPS 2019; polo5
``solver.py``), DFHL (LetheSec/DFHL-RS-Attack ``losses.py``, ``query_sample.py``). L_BN itself
is :func:`ferd.synthesis.losses.bn_statistics_loss` (shared with FERD's Eq. 8).

Notation: p = softmax; KL(p‖q) = Σ p log(p/q). Reductions follow each reference and are stated
per function, because they set the effective weight of each term.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..compute.divergence import kl_logits
from ..synthesis.losses import bn_statistics_loss


# ---- DeepInversion -------------------------------------------------------------------------------
def total_variation_l1(x: torch.Tensor) -> torch.Tensor:
    """TV₁ of ``datafree/synthesis/deepinversion.py``: mean |horizontal differences| + mean |vertical
    differences| (each averaged over every element of the difference tensor)."""
    return (x[..., :, 1:] - x[..., :, :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()


def total_variation_l2(x: torch.Tensor) -> torch.Tensor:
    """TV₂ of NVlabs ``deepinversion_cifar10.py``: the sum of the Frobenius norms of the four
    neighbour differences (right, down, and the two diagonals), over the whole batch."""
    d1 = x[..., :, :-1] - x[..., :, 1:]
    d2 = x[..., :-1, :] - x[..., 1:, :]
    d3 = x[..., 1:, :-1] - x[..., :-1, 1:]
    d4 = x[..., :-1, :-1] - x[..., 1:, 1:]
    return sum(torch.linalg.vector_norm(d) for d in (d1, d2, d3, d4))


def jensen_shannon(t_logits: torch.Tensor, s_logits: torch.Tensor, temperature: float = 3.0,
                   clamp: tuple[float, float] = (0.01, 0.99)) -> torch.Tensor:
    """Adaptive DeepInversion's JS = ½·KL(M‖P_S) + ½·KL(M‖P_T), M = ½(P_S + P_T), softmax at
    ``temperature`` (NVlabs: 3), probabilities clamped to ``clamp`` (NVlabs: [0.01, 0.99]);
    KL summed over classes and averaged over the batch. DeepInversion's generator *maximises*
    it (loss −JS in ``datafree``; 1 − clamp(JS, 0, 1) in NVlabs)."""
    p_t = F.softmax(t_logits / temperature, dim=1).clamp(*clamp)
    p_s = F.softmax(s_logits / temperature, dim=1).clamp(*clamp)
    m = 0.5 * (p_t + p_s)
    kl_ms = (m * (m.log() - p_s.log())).sum(1).mean()
    kl_mt = (m * (m.log() - p_t.log())).sum(1).mean()
    return 0.5 * (kl_ms + kl_mt)


def deepinversion_loss(x: torch.Tensor, t_logits: torch.Tensor, s_logits: torch.Tensor, labels: torch.Tensor,
                       l_bn: torch.Tensor, *, bn: float = 10.0, oh: float = 1.0, adv: float = 1.0, tv: float = 0.0,
                       l2: float = 0.0) -> torch.Tensor:
    """DeepInversion as ``datafree`` runs it (CIFAR-10: bn 10, oh 1, adv 1, tv 0 in Fast-Datafree,
    1e-3 in CMI): bn·L_BN + oh·CE(f^T(x), y) − adv·JS + tv·TV₁ + l2·‖x‖₂ (batch-wide norm)."""
    return (bn * l_bn + oh * F.cross_entropy(t_logits, labels) - adv * jensen_shannon(t_logits, s_logits)
            + tv * total_variation_l1(x) + l2 * torch.linalg.vector_norm(x))


# ---- CMI ------------------------------------------------------------------------------------------
def masked_adversarial_kl(t_logits: torch.Tensor, s_logits: torch.Tensor) -> torch.Tensor:
    """CMI / Fast's adversarial term: −mean_i m_i·KL(p_T‖p_S)_i with m_i = 1[argmax S = argmax T]
    (only samples on which teacher and student still agree push the generator)."""
    kl = (F.softmax(t_logits, 1) * (F.log_softmax(t_logits, 1) - F.log_softmax(s_logits, 1))).sum(1)
    mask = (s_logits.argmax(1) == t_logits.argmax(1)).to(kl.dtype)
    return -(mask * kl).mean()


def contrastive_loss(anchors: torch.Tensor, keys: torch.Tensor, temperature: float = 0.2,
                     reduction: str = "mean") -> torch.Tensor:
    """CMI's L_cr: rows are L2-normalised projections; logits = anchors·keysᵀ / τ and the positive
    of anchor i is key i (cross-entropy against the diagonal, averaged over the rows, or one value
    per row with ``reduction='none'``)."""
    a, k = F.normalize(anchors, dim=1), F.normalize(keys, dim=1)
    logits = a @ k.t() / temperature
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device), reduction=reduction)


# ---- Fast -----------------------------------------------------------------------------------------
def momentum_bn_loss(mean: torch.Tensor, var: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor,
                     ema_mean: torch.Tensor | None, ema_var: torch.Tensor | None, momentum: float = 0.9
                     ) -> torch.Tensor:
    """Fast's L_BN^mmt for one BN layer: L_BN with the batch statistics replaced by
    (1 − momentum)·batch + momentum·EMA, the EMA being the previous call's last-step statistics
    (``momentum`` = bn_mmt, 0.9); without an EMA yet it is plain L_BN."""
    if ema_mean is not None and ema_var is not None:
        mean = (1 - momentum) * mean + momentum * ema_mean
        var = (1 - momentum) * var + momentum * ema_var
    return bn_statistics_loss(mean, var, running_mean, running_var)


# ---- ZSKT -----------------------------------------------------------------------------------------
def attention_map(activation: torch.Tensor) -> torch.Tensor:
    """ZSKT / AT: a = mean over channels of A², flattened and L2-normalised per sample."""
    return F.normalize(activation.pow(2).mean(1).flatten(1), dim=1)


def attention_transfer_loss(student_acts: list[torch.Tensor], teacher_acts: list[torch.Tensor]) -> torch.Tensor:
    """Σ over paired groups of mean((a_S − a_T)²) (polo5 ``solver.py``; weight 250 in ZSKT)."""
    if len(student_acts) != len(teacher_acts):
        raise ValueError(f"attention transfer needs paired activations, got {len(student_acts)} student and "
                         f"{len(teacher_acts)} teacher groups")
    return sum((attention_map(s) - attention_map(t)).pow(2).mean() for s, t in zip(student_acts, teacher_acts))


def zskt_generator_loss(t_logits: torch.Tensor, s_logits: torch.Tensor) -> torch.Tensor:
    """ZSKT's generator maximises the disagreement: −KL(p_T‖p_S), with F.kl_div's default 'mean'
    reduction as in polo5 (÷ B·C, not ÷ B), τ = 1."""
    return -kl_logits(t_logits, s_logits, reduction="batchmean") / t_logits.shape[1]


def zskt_student_loss(t_logits: torch.Tensor, s_logits: torch.Tensor, student_acts: list[torch.Tensor],
                      teacher_acts: list[torch.Tensor], beta: float = 250.0) -> torch.Tensor:
    """KL(p_T‖p_S) ('mean' reduction, ÷ B·C) + β·attention transfer (β = 250)."""
    kl = kl_logits(t_logits, s_logits, reduction="batchmean") / t_logits.shape[1]
    return kl + beta * attention_transfer_loss(student_acts, teacher_acts)


# ---- DFHL -----------------------------------------------------------------------------------------
def smoothed_targets(labels: torch.Tensor, num_classes: int, confidence: float = 0.8) -> torch.Tensor:
    """DFHL's ỹ: ``confidence`` on the drawn label, (1 − confidence)/(C − 1) on every other class."""
    off = (1.0 - confidence) / (num_classes - 1)
    y = torch.full((labels.shape[0], num_classes), off, dtype=torch.float32, device=labels.device)
    return y.scatter_(1, labels[:, None], confidence)


def dfhl_generator_loss(s_logits: torch.Tensor, labels: torch.Tensor, confidence: float = 0.8,
                        balance: float = 3.0) -> torch.Tensor:
    """DFHL's generator loss (student only, in eval mode): KL(ỹ‖p_S) averaged over the batch
    + balance·Σ_k p̄_k log₁₀ p̄_k, p̄ = batch mean of p_S (the second term rewards class balance)."""
    y = smoothed_targets(labels, s_logits.shape[1], confidence)
    log_p = F.log_softmax(s_logits, 1)
    kl = (y * (y.log() - log_p)).sum(1).mean()
    p_bar = log_p.exp().mean(0)
    return kl + balance * (p_bar * p_bar.log() / math.log(10)).sum()


def hee_start(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """DFHL's HEE starting point: clip₀¹(x + 0.001·N(0, 1)) (``query_sample.py``)."""
    return (x.detach() + 0.001 * torch.randn(x.shape, generator=generator).to(x.device)).clamp(0, 1)


def high_entropy_examples(student: torch.nn.Module, start: torch.Tensor, steps: int = 10,
                          step: float = 0.03) -> torch.Tensor:
    """DFHL's HEE: from ``start`` (:func:`hee_start`), ``steps`` ascent steps
    x ← clip₀¹(x + step·sign ∇ₓ mean H(p_S(x))) with no ε-ball (``query_sample.py``)."""
    x_h = start.detach()
    for _ in range(steps):
        x_h.requires_grad_(True)
        log_p = F.log_softmax(student(x_h), 1)
        entropy = -(log_p.exp() * log_p).sum(1).mean()
        (grad,) = torch.autograd.grad(entropy, x_h)
        x_h = (x_h.detach() + step * grad.sign()).clamp(0, 1)
    return x_h.detach()
