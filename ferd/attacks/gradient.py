"""White-box L∞ attacks on models that take inputs in [0, 1]: the functions behind every attack.

Shared by the evaluation (FGSM, PGD-20, CW∞), the reweighting of Eq. 1-2 and
Eq. 24 (PGD-20 on synthetic samples against the teacher) and the baselines of
A.8 (PGD-10). Settings follow the robust-fairness evaluation code the paper
follows (Fair-ARD): PGD with uniform random start in [-ε, ε], clamped to
[0, 1], step α, projection onto the ε-ball and [0, 1] after every step.

Attacks never change the model's train/eval mode (the caller decides: the
evaluation puts models in ``eval()``), never accumulate parameter gradients
(``torch.autograd.grad`` w.r.t. the input only) and take every random number
from the ``generator`` they are given.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

CW_CONFIDENCE = 50.0
"""κ of the CW∞ margin loss in the robust-fairness evaluation code (Fair-ARD)."""


def logit_margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y − max_{j≠y} z_j per row: the adversarial margin of FERD Eq. 1 and the CW margin."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
    return true - other


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy: the PGD / FGSM objective (summed so the step is per-sample)."""
    return F.cross_entropy(logits, y, reduction="sum")


def cw_loss(logits: torch.Tensor, y: torch.Tensor, confidence: float = CW_CONFIDENCE) -> torch.Tensor:
    """Carlini-Wagner margin objective of CW∞ as in Fair-ARD: −Σ relu(margin + κ)."""
    return -F.relu(logit_margin(logits, y) + confidence).sum()


LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"ce": ce_loss, "cw": cw_loss}


def _input_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        (grad,) = torch.autograd.grad(loss_fn(logits, y), x)
    return grad, logits.detach()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """FGSM: one step of size ε along sign ∇ CE, clamped to [0, 1]."""
    grad, _ = _input_grad(model, x, y, ce_loss)
    return (x + eps * grad.sign()).clamp(0.0, 1.0).detach()


def random_start(x: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    """x + U[-ε, ε], clamped to [0, 1]."""
    noise = torch.empty_like(x).uniform_(-eps, eps, generator=generator)
    return (x + noise).clamp(0.0, 1.0)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Π onto the L∞ ε-ball around x and onto [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int,
        loss: str = "ce", rand_start: bool = True, generator: torch.Generator | None = None) -> torch.Tensor:
    """L∞ PGD (Madry et al.): ``steps`` signed-gradient steps of size ``alpha`` on ``loss``.

    ``loss='ce'`` is PGD-k; ``loss='cw'`` is CW∞ (PGD on the CW margin loss, κ = 50).
    """
    loss_fn = LOSSES[loss]
    x = x.detach()
    x_adv = random_start(x, eps, generator) if rand_start else x.clone()
    for _ in range(steps):
        grad, _ = _input_grad(model, x_adv, y, loss_fn)
        x_adv = project(x_adv + alpha * grad.sign(), x, eps).detach()
    return x_adv


def pgd_least_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
                    steps: int) -> torch.Tensor:
    """Least PGD steps (LPS, FERD Eq. 24): the first t ∈ [0, K] with f(x^(t)) ≠ y, else K.

    x^(0) is the clean input (no random start, as in GAIRAT / Yue et al., which A.6
    follows), so t = 0 means the clean sample is already misclassified. Samples that
    are never misclassified within K steps get κ = K (their least step is ≥ K).
    """
    x = x.detach()
    x_adv = x.clone()
    lps = torch.full((x.shape[0],), float(steps), device=x.device)
    done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for t in range(steps + 1):
        grad, logits = _input_grad(model, x_adv, y, ce_loss)
        wrong = (logits.argmax(1) != y) & ~done
        lps[wrong] = float(t)
        done |= wrong
        if t == steps or bool(done.all()):
            break
        x_adv = project(x_adv + alpha * grad.sign(), x, eps).detach()
    return lps
