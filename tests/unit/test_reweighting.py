"""Reweighting end to end: a teacher made weak on one class gets the largest sampling weight there."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ferd.synthesis.reweighting import reweight


class WeakOnOneClass(nn.Module):
    """A linear 'teacher' on 4-pixel inputs: class c's logit is scale_c · x_c.

    Inputs of class c have x_c = 1 and the rest 0.5, so the margin of class c grows with
    scale_c; class 2 gets a tiny scale, so a small perturbation flips it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.tensor([8.0, 8.0, 0.5, 8.0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) * self.scale


def _batch(n_per_class: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    y = torch.arange(4).repeat_interleave(n_per_class)
    x = torch.full((len(y), 1, 2, 2), 0.5)
    x.view(len(y), 4)[torch.arange(len(y)), y] = 1.0
    return x, y


@pytest.mark.parametrize("strategy", ["softmax", "minmax", "power", "linear", "sigmoid", "tanh"])
def test_weak_class_gets_largest_weight(strategy):
    x, y = _batch()
    res = reweight(WeakOnOneClass(), x, y, 4, strategy=strategy, eps=0.3, step=0.05, steps=20,
                   generator=torch.Generator().manual_seed(0))
    assert res.p.sum().item() == pytest.approx(1.0)
    assert int(res.p.argmax()) == 2, res.p
    assert (res.p > 0).all()


def test_absent_class_keeps_previous_score():
    x, y = _batch()
    keep = y != 1
    prev = torch.tensor([0.0, 42.0, 0.0, 0.0], dtype=torch.float64)
    res = reweight(WeakOnOneClass(), x[keep], y[keep], 4, strategy="softmax", eps=0.3, step=0.05, steps=5,
                   generator=torch.Generator().manual_seed(0), previous_scores=prev)
    assert res.scores[1].item() == 42.0


def test_unknown_strategy_is_refused():
    x, y = _batch(1)
    with pytest.raises(ValueError, match="reweighting.strategy"):
        reweight(WeakOnOneClass(), x, y, 4, strategy="nope", eps=0.1, step=0.1, steps=1, generator=None)
