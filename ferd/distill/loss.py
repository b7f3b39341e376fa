"""The student's robust distillation loss (Eq. 11)."""

from __future__ import annotations

import torch

from ..divergence import kl_logits


def robust_distillation_loss(teacher_clean_logits: torch.Tensor, student_clean_logits: torch.Tensor,
                             student_adv_logits: torch.Tensor, lambda1: float, lambda2: float) -> torch.Tensor:
    """L_stu of Eq. 11: λ1·KL(f^T(x_F) ‖ f^S(x_F)) + λ2·KL(f^T(x_F) ‖ f^S(x_U)), batch mean.

    Both terms take the teacher's prediction on the *clean* FAE as the target. λ1, λ2 come from
    ``distill.lambda1/2``: the paper's 5/6, 1/6, or RSLAD's 1/6, 5/6 (5/6 on the adversarial term; the
    default, measured in the README).
    """
    t = teacher_clean_logits.detach()
    return lambda1 * kl_logits(t, student_clean_logits) + lambda2 * kl_logits(t, student_adv_logits)
