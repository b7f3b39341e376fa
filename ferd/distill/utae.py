"""Uniform-target adversarial examples, UTAEs (Eq. 10).

x_U^{t+1} = Π_{x + S}( x_U^t + α · sign ∇ [ KL(f(x) ‖ f(x_U^t)) − γ · KL(U ‖ f(x_U^t)) ] ),
with S the L∞ ball of radius ε, the projection also clamping to [0, 1].

``target`` (``distill.utae.target``):

* ``student`` (default; the authors' code, RSLAD's inner maximisation): the attacked model is
  the student (put in eval mode while attacking, as RSLAD does), the reference is the
  teacher's clean prediction: KL(f^T(x) ‖ f^S(x_U)) − γ · KL(U ‖ f^S(x_U)). The authors'
  code has γ's term commented out, and so has the default (γ = 0, ``distill.utae.gamma``).
* ``teacher`` (Eq. 10 as printed; preset ``paper-as-printed``): f = f^T in both terms; the
  clean reference is f^T(x_F). A UTAE then depends only on the teacher and the FAE — and the
  student never trains against its own attack directions: measured, it reaches 0.0 % PGD-20
  on tier 1 (36 % clean) where pure clean distillation reaches 3.3 %, so it is not the default.

``random_start``: ``gaussian`` 0.001·N(0, 1) (RSLAD and the authors' code; default) or
``uniform`` U[-ε, ε] (PGD; the paper does not say). The objective is summed over
the batch so each sample's step is its own sign-gradient. γ = 0 is plain PGD on the KL
term (RSLAD's inner maximisation; the "w/o UTAEs" ablation of Table 3).
"""

from __future__ import annotations

import torch
from torch import nn

from ..attacks import project
from ..compute.divergence import kl_logits, kl_uniform


def utae_objective(clean_logits: torch.Tensor, adv_logits: torch.Tensor, gamma: float) -> torch.Tensor:
    """The bracket of Eq. 10, summed over the batch: KL(f(x) ‖ f(x_U)) − γ·KL(U ‖ f(x_U))."""
    return kl_logits(clean_logits, adv_logits, reduction="sum") - gamma * kl_uniform(adv_logits, reduction="sum")


def utae_start(x: torch.Tensor, eps: float, kind: str, generator: torch.Generator | None) -> torch.Tensor:
    """The starting point x_U^0: x + U[-ε, ε] or x + 0.001·N(0, 1), clamped to the ε-ball and [0, 1]."""
    if kind == "uniform":
        noise = torch.empty(x.shape).uniform_(-eps, eps, generator=generator)
    elif kind == "gaussian":
        noise = 0.001 * torch.randn(x.shape, generator=generator)
    else:
        raise ValueError(f"distill.utae.random_start: expected 'uniform' or 'gaussian', got {kind!r}")
    return project(x + noise.to(x.device), x, eps)


def generate_utae(model: nn.Module, x: torch.Tensor, clean_logits: torch.Tensor, *, eps: float, alpha: float,
                  steps: int, gamma: float, start: torch.Tensor) -> torch.Tensor:
    """Run Eq. 10 for ``steps`` steps against ``model`` (teacher or student) from ``start`` (x_U^0,
    :func:`utae_start`); returns x_U (detached).

    ``clean_logits`` is f(x) of the reference model (the teacher's logits on the FAEs).
    The caller sets the model's mode (teacher: always eval; student: eval while attacking).
    """
    x = x.detach()
    clean_logits = clean_logits.detach()
    x_u = start.detach()
    for _ in range(steps):
        with torch.enable_grad():
            x_u.requires_grad_(True)
            loss = utae_objective(clean_logits, model(x_u), gamma)
            (grad,) = torch.autograd.grad(loss, x_u)
        x_u = project(x_u.detach() + alpha * grad.sign(), x, eps)
    return x_u.detach()


def cache_utaes(teacher: nn.Module, images: torch.Tensor, teacher_logits: torch.Tensor, *, eps: float,
                alpha: float, steps: int, gamma: float, random_start: str, starts: int,
                generator: torch.Generator, batch_size: int, device: str | torch.device = "cpu") -> torch.Tensor:
    """K = ``starts`` UTAEs per FAE against the frozen teacher (``distill.utae.cache: pool``).

    As Eq. 10 is printed a UTAE depends only on the teacher and the FAE, so it can be computed
    once, when the FAE enters the pool, instead of every student iteration (issue: the ten
    teacher passes per iteration are ~95 % of a student iteration's cost at the paper's
    settings). The difference to the uncached path: each FAE has K fixed random starts instead
    of a fresh one each time it is drawn. Returns N×K×C×H×W float32 on the CPU, in chunks of
    ``batch_size`` rows; the random starts come from ``generator`` (row order, then start).
    """
    out = torch.empty((images.shape[0], starts, *images.shape[1:]), dtype=torch.float32)
    for k in range(starts):
        for lo in range(0, images.shape[0], batch_size):
            x = images[lo:lo + batch_size].to(device)
            logits = teacher_logits[lo:lo + batch_size].to(device)
            start = utae_start(x, eps, random_start, generator)
            out[lo:lo + batch_size, k] = generate_utae(teacher, x, logits, eps=eps, alpha=alpha, steps=steps,
                                                       gamma=gamma, start=start).float().cpu()
    return out
