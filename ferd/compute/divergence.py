"""KL divergences between the softmax distributions of logits, as FERD uses them.

Notation of the paper: KL(f(a), f(b)) = KL(softmax f(a) ‖ softmax f(b)) = Σ_j p_j (log p_j − log q_j),
and KL(U, f(b)) = Σ_j (1/C)(log(1/C) − log q_j). Both are averaged over the batch
("batchmean") unless ``reduction='sum'`` (attacks use the sum so that each sample's
sign-gradient step is independent of the batch size).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

Reduction = Literal["batchmean", "sum", "none"]


def _reduce(per_sample: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "batchmean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


def kl_logits(p_logits: torch.Tensor, q_logits: torch.Tensor, reduction: Reduction = "batchmean") -> torch.Tensor:
    """KL(softmax(p_logits) ‖ softmax(q_logits)) per row, reduced."""
    log_p = F.log_softmax(p_logits, dim=1)
    log_q = F.log_softmax(q_logits, dim=1)
    return _reduce((log_p.exp() * (log_p - log_q)).sum(1), reduction)


def kl_uniform(q_logits: torch.Tensor, reduction: Reduction = "batchmean") -> torch.Tensor:
    """KL(U ‖ softmax(q_logits)) with U the uniform distribution over the C classes."""
    c = q_logits.shape[1]
    log_q = F.log_softmax(q_logits, dim=1)
    return _reduce((-math.log(c) - log_q).mean(1), reduction)
