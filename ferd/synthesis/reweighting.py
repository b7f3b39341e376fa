"""Robustness-guided class reweighting (Eq. 1-2) and the alternatives of A.6 (Eq. 24-28).

After each generation stage, the kept synthetic batch is attacked with PGD-20 against
the teacher; each class's vulnerability score becomes the class sampling distribution p
used to draw the labels of the next generation stage (Algorithm 1 lines 6 and 12).

Strategies (``reweighting.strategy``):

* ``softmax`` (paper, default): D_c = mean over class c of −m_i (Eq. 1-2), p = softmax(D / T)
  with T = 1 as printed.
* ``minmax`` (authors' code): the same D_c min-max rescaled to [0.05, 0.2] and renormalised
  (the softmax is commented out there). The paper's Fig. 4 weight of 0.314 for the weakest
  class is what this rule gives.
* ``power`` / ``linear`` / ``sigmoid`` / ``tanh`` (A.6, Eq. 25-28, following Yue et al. 2023):
  weights ω_c from the average least PGD steps κ_c (Eq. 24), normalised to p = ω / Σω.

Classes absent from the attacked batch keep their previous score (initially 0 for the
margin strategies, K for κ), so p stays defined for every class; the paper does not say.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..attacks import logit_margin, pgd, pgd_least_steps


def adversarial_margin(adv_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """m_i of Eq. 1: f^T(x_adv)_{y_i} − max_{j≠y_i} f^T(x_adv)_j."""
    return logit_margin(adv_logits, y)


def class_mean(values: torch.Tensor, y: torch.Tensor, num_classes: int,
               previous: torch.Tensor | None = None) -> torch.Tensor:
    """(1/N_c) Σ_{i: y_i = c} values_i per class; absent classes keep ``previous`` (default 0)."""
    values = values.double()
    sums = torch.zeros(num_classes, dtype=torch.float64, device=values.device).index_add_(0, y, values)
    counts = torch.bincount(y, minlength=num_classes).to(values.device)
    fallback = previous.double().to(values.device) if previous is not None else torch.zeros_like(sums)
    return torch.where(counts > 0, sums / counts.clamp_min(1), fallback)


def class_vulnerability(margins: torch.Tensor, y: torch.Tensor, num_classes: int,
                        previous: torch.Tensor | None = None) -> torch.Tensor:
    """D_c of Eq. 2: the mean negative adversarial margin of class c."""
    return class_mean(-margins, y, num_classes, previous)


def softmax_weights(scores: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """p = softmax(D / T) (§4.2; the paper uses T = 1)."""
    return torch.softmax(scores.double() / temperature, dim=0)


def minmax_weights(scores: torch.Tensor, low: float = 0.05, high: float = 0.2) -> torch.Tensor:
    """The authors' code: rescale D linearly to [low, high], then renormalise to sum 1.
    Equal scores give the uniform distribution."""
    scores = scores.double()
    span = scores.max() - scores.min()
    if span <= 0:
        return torch.full_like(scores, 1.0 / scores.numel())
    w = low + (scores - scores.min()) / span * (high - low)
    return w / w.sum()


def average_least_steps(lps: torch.Tensor, y: torch.Tensor, num_classes: int,
                        previous: torch.Tensor | None = None) -> torch.Tensor:
    """κ_c of Eq. 24: the class mean of the least PGD steps."""
    return class_mean(lps, y, num_classes, previous)


def _normalise(w: torch.Tensor) -> torch.Tensor:
    return w / w.sum()


def power_weights(kappa: torch.Tensor, beta: float = 2.0) -> torch.Tensor:
    """Eq. 25: ω_c = 1 / κ_c^β (κ_c clamped to ≥ 1 so a class broken at step 0 stays finite)."""
    return _normalise(1.0 / kappa.double().clamp_min(1.0) ** beta)


def linear_weights(kappa: torch.Tensor, steps: int) -> torch.Tensor:
    """Eq. 26: ω_c = 1 − κ_c / (K + 1)."""
    return _normalise(1.0 - kappa.double() / (steps + 1))


def sigmoid_weights(kappa: torch.Tensor, steps: int, lam: float = 0.0) -> torch.Tensor:
    """Eq. 27: ω_c = sigmoid(λ + 5·(1 − 2κ_c/K))."""
    return _normalise(torch.sigmoid(lam + 5.0 * (1.0 - 2.0 * kappa.double() / steps)))


def tanh_weights(kappa: torch.Tensor, steps: int, lam: float = 0.0) -> torch.Tensor:
    """Eq. 28: ω_c = (1 + tanh(λ + 5·(1 − 2κ_c/K))) / 2."""
    return _normalise((1.0 + torch.tanh(lam + 5.0 * (1.0 - 2.0 * kappa.double() / steps))) / 2.0)


@dataclass
class ReweightResult:
    """p (float64, sums to 1), the per-class scores behind it (D_c or κ_c) and per-sample values."""

    p: torch.Tensor
    scores: torch.Tensor
    per_sample: torch.Tensor
    strategy: str


MARGIN_STRATEGIES = ("softmax", "minmax")
LPS_STRATEGIES = ("power", "linear", "sigmoid", "tanh")


def reweight(teacher: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, *, strategy: str,
             eps: float, step: float, steps: int, generator: torch.Generator | None,
             previous_scores: torch.Tensor | None = None, temperature: float = 1.0, min_weight: float = 0.05,
             max_weight: float = 0.2, beta: float = 2.0, lam: float = 0.0, samples: str = "all") -> ReweightResult:
    """``reweight(L_class)`` of Algorithm 1 line 12 on a synthetic batch (x, y) against the teacher.

    ``samples="correct"`` scores each class only on the samples the teacher classifies correctly when
    clean: a sample the teacher already gets wrong has a negative margin whatever its robustness, so
    with a generator that fails on some labels the scores would track that failure instead
    (classes with no such sample keep their previous score, as absent classes do).
    """
    if samples not in ("all", "correct"):
        raise ValueError(f"reweighting.samples: expected 'all' or 'correct', got {samples!r}")
    if samples == "correct":
        with torch.no_grad():
            keep = teacher(x).argmax(1) == y
    else:
        keep = torch.ones_like(y, dtype=torch.bool)
    if strategy in MARGIN_STRATEGIES:
        x_adv = pgd(teacher, x, y, eps=eps, alpha=step, steps=steps, loss="ce", generator=generator)
        with torch.no_grad():
            margins = adversarial_margin(teacher(x_adv), y)
        scores = class_vulnerability(margins[keep], y[keep], num_classes, previous_scores)
        p = softmax_weights(scores, temperature) if strategy == "softmax" else minmax_weights(
            scores, min_weight, max_weight)
        return ReweightResult(p.cpu(), scores.cpu(), margins.detach().cpu(), strategy)
    if strategy in LPS_STRATEGIES:
        lps = pgd_least_steps(teacher, x, y, eps=eps, alpha=step, steps=steps)
        prev = previous_scores if previous_scores is not None else torch.full((num_classes,), float(steps))
        kappa = average_least_steps(lps[keep], y[keep], num_classes, prev)
        p = {"power": lambda: power_weights(kappa, beta), "linear": lambda: linear_weights(kappa, steps),
             "sigmoid": lambda: sigmoid_weights(kappa, steps, lam),
             "tanh": lambda: tanh_weights(kappa, steps, lam)}[strategy]()
        return ReweightResult(p.cpu(), kappa.cpu(), lps.cpu(), strategy)
    raise ValueError(f"reweighting.strategy: expected one of {MARGIN_STRATEGIES + LPS_STRATEGIES}, got {strategy!r}")
