"""The student's robust distillation loss (Eq. 11)."""

from __future__ import annotations

import torch

from ..compute.divergence import kl_logits


def robust_distillation_loss(teacher_clean_logits: torch.Tensor, student_clean_logits: torch.Tensor,
                             student_adv_logits: torch.Tensor, lambda1: float, lambda2: float) -> torch.Tensor:
    """L_stu of Eq. 11: λ1·KL(f^T(x_F) ‖ f^S(x_F)) + λ2·KL(f^T(x_F) ‖ f^S(x_U)), batch mean.

    Both terms take the teacher's prediction on the *clean* FAE as the target. λ1, λ2 come from
    ``distill.lambda1/2``: the paper's 5/6, 1/6, or RSLAD's 1/6, 5/6 (5/6 on the adversarial term; the
    default, measured in the README).
    """
    kl_clean, kl_adv = robust_distillation_terms(teacher_clean_logits, student_clean_logits, student_adv_logits)
    return lambda1 * kl_clean + lambda2 * kl_adv


def robust_distillation_terms(teacher_clean_logits: torch.Tensor, student_clean_logits: torch.Tensor,
                              student_adv_logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two KL terms of Eq. 11 before λ1, λ2: KL(f^T(x_F) ‖ f^S(x_F)) and KL(f^T(x_F) ‖ f^S(x_U)), batch means,
    the teacher's side detached."""
    t = teacher_clean_logits.detach()
    return kl_logits(t, student_clean_logits), kl_logits(t, student_adv_logits)
