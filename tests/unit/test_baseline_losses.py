"""Each baseline's characteristic loss term against a hand computation on a tiny case."""

from __future__ import annotations

import math

import pytest
import torch

from ferd.baselines.losses import (attention_map, attention_transfer_loss, contrastive_loss, deepinversion_loss,
                                   dfhl_generator_loss, hee_start, high_entropy_examples, jensen_shannon,
                                   masked_adversarial_kl, momentum_bn_loss, smoothed_targets, total_variation_l1,
                                   total_variation_l2, zskt_generator_loss, zskt_student_loss)

# one 1×1×2×2 image:  [[0, 1],
#                      [3, 5]]
IMG = torch.tensor([[[[0.0, 1.0], [3.0, 5.0]]]])


def test_total_variation_l1_by_hand():
    # horizontal |1-0|, |5-3| → mean 1.5; vertical |3-0|, |5-1| → mean 3.5
    assert total_variation_l1(IMG).item() == pytest.approx(5.0)


def test_total_variation_l2_by_hand():
    # right: (0-1, 3-5) → √5; down: (0-3, 1-5) → 5; diag x[1,0]-x[0,1] = 2 → 2; diag x[0,0]-x[1,1] = -5 → 5
    assert total_variation_l2(IMG).item() == pytest.approx(math.sqrt(5) + 5 + 2 + 5)


def test_jensen_shannon_by_hand():
    t = torch.tensor([[math.log(3.0), 0.0]])  # p_T = (3/4, 1/4) at τ = 1
    s = torch.tensor([[0.0, math.log(3.0)]])  # p_S = (1/4, 3/4)
    m = (0.5, 0.5)
    kl_m_s = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    kl_m_t = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert m == (0.5, 0.5)
    assert jensen_shannon(t, s, temperature=1.0).item() == pytest.approx(0.5 * (kl_m_s + kl_m_t))
    assert jensen_shannon(t, t, temperature=3.0).item() == pytest.approx(0.0, abs=1e-7)


def test_deepinversion_loss_combines_its_terms():
    x = IMG.expand(1, 3, 2, 2).clone()
    t = torch.tensor([[2.0, 0.0]])
    s = torch.tensor([[0.0, 2.0]])
    y = torch.tensor([0])
    ce = -math.log(math.exp(2) / (math.exp(2) + 1))
    got = deepinversion_loss(x, t, s, y, torch.tensor(0.7), bn=10, oh=1, adv=1, tv=1e-3, l2=0.5)
    want = 10 * 0.7 + ce - jensen_shannon(t, s).item() + 1e-3 * 5.0 + 0.5 * math.sqrt(3 * (0 + 1 + 9 + 25))
    assert got.item() == pytest.approx(want)


def test_masked_adversarial_kl_uses_only_agreeing_samples():
    t = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])
    s = torch.tensor([[0.0, -1.0], [0.0, 5.0]])  # agrees on row 0 only
    kl0 = (torch.softmax(t[0], 0) * (torch.log_softmax(t[0], 0) - torch.log_softmax(s[0], 0))).sum().item()
    assert masked_adversarial_kl(t, s).item() == pytest.approx(-kl0 / 2)


def test_contrastive_loss_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalised: e1, e2
    k = torch.tensor([[3.0, 0.0], [1.0, 1.0]])  # normalised: e1, (1,1)/√2
    tau = 0.5
    l0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp((1 / math.sqrt(2)) / tau)))
    l1 = -math.log(math.exp((1 / math.sqrt(2)) / tau) / (math.exp(0.0) + math.exp((1 / math.sqrt(2)) / tau)))
    assert contrastive_loss(a, k, tau).item() == pytest.approx((l0 + l1) / 2)
    assert contrastive_loss(a, k, tau, reduction="none").tolist() == pytest.approx([l0, l1])  # CMI's per-row split


def test_momentum_bn_loss_by_hand():
    mean, var = torch.tensor([1.0, 2.0]), torch.tensor([4.0, 4.0])
    rm, rv = torch.tensor([0.0, 0.0]), torch.tensor([1.0, 1.0])
    ema_m, ema_v = torch.tensor([3.0, 2.0]), torch.tensor([2.0, 1.0])
    # blended mean (0.1·1 + 0.9·3, 0.1·2 + 0.9·2) = (2.8, 2.0); var (0.1·4 + 0.9·2, 0.1·4 + 0.9·1) = (2.2, 1.3)
    want = math.hypot(2.8, 2.0) + math.hypot(1.2, 0.3)
    assert momentum_bn_loss(mean, var, rm, rv, ema_m, ema_v, 0.9).item() == pytest.approx(want)
    assert momentum_bn_loss(mean, var, rm, rv, None, None).item() == pytest.approx(math.hypot(1, 2) + math.hypot(3, 3))


def test_attention_transfer_by_hand():
    a = torch.tensor([[[[1.0, 0.0]], [[1.0, 2.0]]]])  # 1×2×1×2: mean_c A² = (1, 2) → (1, 2)/√5
    assert torch.allclose(attention_map(a), torch.tensor([[1.0, 2.0]]) / math.sqrt(5))
    b = torch.tensor([[[[2.0, 0.0]], [[0.0, 0.0]]]])  # → (2, 0) → (1, 0)
    diff = ((1 / math.sqrt(5) - 1) ** 2 + (2 / math.sqrt(5)) ** 2) / 2
    assert attention_transfer_loss([a], [b]).item() == pytest.approx(diff)
    with pytest.raises(ValueError, match="paired activations"):
        attention_transfer_loss([a, a], [b])


def test_zskt_losses_use_mean_reduction():
    t = torch.tensor([[math.log(3.0), 0.0]])
    s = torch.tensor([[0.0, 0.0]])
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert zskt_generator_loss(t, s).item() == pytest.approx(-kl / 2)
    a = torch.ones(1, 1, 1, 2)
    assert zskt_student_loss(t, s, [a], [a]).item() == pytest.approx(kl / 2)


def test_dfhl_generator_loss_by_hand():
    assert torch.allclose(smoothed_targets(torch.tensor([1]), 3, 0.8), torch.tensor([[0.1, 0.8, 0.1]]))
    s = torch.zeros(2, 2)  # p_S = (1/2, 1/2) for both rows
    y = torch.tensor([0, 1])  # ỹ = (0.8, 0.2) and (0.2, 0.8)
    kl = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    balance = 2 * 0.5 * math.log10(0.5)
    assert dfhl_generator_loss(s, y, 0.8, 3.0).item() == pytest.approx(kl + 3 * balance)


def test_high_entropy_examples_raise_the_student_entropy_without_an_eps_ball():
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x = torch.rand(4, 3, 2, 2)

    @torch.no_grad()
    def entropy(z: torch.Tensor) -> float:
        p = torch.softmax(student(z), 1)
        return float(-(p * p.log()).sum(1).mean())

    x_h = high_entropy_examples(student, hee_start(x, torch.Generator().manual_seed(0)), steps=10, step=0.03)
    assert entropy(x_h) > entropy(x)
    assert 0 <= x_h.min() and x_h.max() <= 1 and (x_h - x).abs().max() > 0.1  # 10 × 0.03: beyond 8/255
