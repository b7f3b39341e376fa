"""Every equation of the paper against a value computed by hand on a tiny tensor.

Eq. 1-2 (margins, class vulnerability), 4-6 (bottleneck), 7 (L_uni), 8 (L_adv, L_bn, L_oh),
9 (L_gen), 10 (UTAE objective and step), 11 (student loss), 24-28 (A.6 strategies).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ferd.distill.loss import robust_distillation_loss, robust_distillation_terms
from ferd.distill.utae import generate_utae, utae_objective, utae_start
from ferd.compute.divergence import kl_logits, kl_uniform
from ferd.synthesis.bottleneck import (bottleneck_objective, bottleneck_regulariser, channel_variance,
                                       noisy_features, non_robust_mask)
from ferd.synthesis.losses import (BatchNormStatistics, GeneratorLossTerms, adversarial_loss, bn_statistics_loss,
                                   generator_loss, one_hot_loss, uniform_prediction_loss)
from ferd.synthesis.reweighting import (adversarial_margin, average_least_steps, class_vulnerability, linear_weights,
                                        minmax_weights, power_weights, sigmoid_weights, softmax_weights,
                                        tanh_weights)

LN2, LN3 = math.log(2), math.log(3)


def test_eq1_adversarial_margin():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 4.0, 1.0]])
    y = torch.tensor([0, 2])
    # row 0: 3 - max(1, 2) = 1 ; row 1: 1 - max(0, 4) = -3
    assert adversarial_margin(logits, y).tolist() == [1.0, -3.0]


def test_eq2_class_vulnerability_mean_negative_margin():
    margins = torch.tensor([1.0, -3.0, 2.0, 0.5])
    y = torch.tensor([0, 1, 0, 1])
    # class 0: mean(-1, -2) = -1.5 ; class 1: mean(3, -0.5) = 1.25 ; class 2 absent -> previous (0.7)
    d = class_vulnerability(margins, y, 3, previous=torch.tensor([9.0, 9.0, 0.7]))
    assert torch.allclose(d, torch.tensor([-1.5, 1.25, 0.7], dtype=torch.float64))


def test_softmax_and_minmax_weights():
    d = torch.tensor([0.0, math.log(3.0)])
    assert torch.allclose(softmax_weights(d), torch.tensor([0.25, 0.75], dtype=torch.float64))
    # min-max to [0.05, 0.2]: scores 0, 1, 2 -> 0.05, 0.125, 0.2 -> / 0.375
    w = minmax_weights(torch.tensor([0.0, 1.0, 2.0]))
    assert torch.allclose(w, torch.tensor([0.05, 0.125, 0.2], dtype=torch.float64) / 0.375)
    assert torch.allclose(minmax_weights(torch.ones(4)), torch.full((4,), 0.25, dtype=torch.float64))


def test_eq24_to_28_least_steps_strategies():
    lps = torch.tensor([0.0, 4.0, 10.0, 10.0])
    y = torch.tensor([0, 0, 1, 1])
    kappa = average_least_steps(lps, y, 2)
    assert kappa.tolist() == [2.0, 10.0]
    k = torch.tensor([2.0, 10.0])
    # Eq. 25 (β = 2): 1/4, 1/100 -> normalised
    assert torch.allclose(power_weights(k, 2.0), torch.tensor([0.25, 0.01], dtype=torch.float64) / 0.26)
    # Eq. 26 (K = 20): 1 - 2/21, 1 - 10/21
    w = torch.tensor([19 / 21, 11 / 21], dtype=torch.float64)
    assert torch.allclose(linear_weights(k, 20), w / w.sum())
    # Eq. 27 (K = 20, λ = 0): sigmoid(5·(1 - 0.2)) = sigmoid(4), sigmoid(5·0) = 0.5
    s = torch.tensor([1 / (1 + math.exp(-4)), 0.5], dtype=torch.float64)
    assert torch.allclose(sigmoid_weights(k, 20, 0.0), s / s.sum())
    # Eq. 28: (1 + tanh(4)) / 2, (1 + tanh(0)) / 2
    t = torch.tensor([(1 + math.tanh(4)) / 2, 0.5], dtype=torch.float64)
    assert torch.allclose(tanh_weights(k, 20, 0.0), t / t.sum())


def test_eq4_noisy_features():
    z = torch.zeros(1, 2, 1, 1)
    lam = torch.tensor([0.0, math.log(math.e - 1)])  # softplus -> ln 2, 1
    noise = torch.ones(1, 2, 1, 1)
    out = noisy_features(z, lam, noise)
    assert torch.allclose(out.flatten(), torch.tensor([LN2, 1.0]))


def test_eq5_bottleneck_objective():
    v = torch.tensor([1.0, 2.0])
    sigma2 = torch.tensor([2.0, 2.0])
    # channel 0: 1/2 + ln 2 - 1 ; channel 1: 1 + 0 - 1 = 0
    reg = 0.5 + LN2 - 1
    assert torch.isclose(bottleneck_regulariser(v, sigma2, "paper"), torch.tensor(reg))
    assert torch.isclose(bottleneck_regulariser(v, sigma2, "authors"), torch.tensor(0.5 * reg / 2))
    logits = torch.zeros(1, 2)  # CE = ln 2
    obj = bottleneck_objective(logits, torch.tensor([0]), v, sigma2, beta=0.3, mode="paper")
    assert torch.isclose(obj, torch.tensor(LN2 + 0.3 * reg))


def test_channel_variance_modes():
    z = torch.tensor([[[[0.0, 2.0]], [[1.0, 1.0]]], [[[4.0, 6.0]], [[1.0, 3.0]]]])  # B=2, C=2, 1×2
    # paper: channel 0 values 0,2,4,6 -> var 5 ; channel 1: 1,1,1,3 -> mean 1.5, var 0.75
    assert torch.allclose(channel_variance(z, "paper"), torch.tensor([5.0, 0.75]))
    # authors: per sample: [[1, 0], [1, 1]]
    assert torch.allclose(channel_variance(z, "authors"), torch.tensor([[1.0, 0.0], [1.0, 1.0]]))


def test_eq6_mask_marks_exactly_channels_below_max_variance():
    v = torch.tensor([0.5, 3.0, 1.0, 2.0])
    sigma2 = torch.tensor([4.0, 2.9, 3.0, 0.1])  # max v = 3.0: channels 1 and 3 are < 3 ; 2 is equal, 0 above
    mask = non_robust_mask(sigma2, v, "paper")
    assert mask.shape == (1, 4, 1, 1)
    assert mask.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    va = torch.tensor([[0.5, 1.0], [2.0, 0.1]])  # global max 2.0
    sa = torch.tensor([[1.0, 2.5], [2.0, 1.9]])
    assert non_robust_mask(sa, va, "authors").flatten().tolist() == [1.0, 0.0, 0.0, 1.0]


def test_eq7_uniform_prediction_loss():
    # softmax of [0, ln 3] = [1/4, 3/4]; KL(U || q) = 1/2 (ln(1/2) - ln(1/4)) + 1/2 (ln(1/2) - ln(3/4))
    logits = torch.tensor([[0.0, LN3]])
    expected = 0.5 * (math.log(0.5 / 0.25)) + 0.5 * math.log(0.5 / 0.75)
    assert math.isclose(float(uniform_prediction_loss(logits)), expected, rel_tol=1e-6)
    assert float(uniform_prediction_loss(torch.zeros(3, 5))) == pytest.approx(0.0, abs=1e-7)


def test_eq8_adv_and_oh():
    t = torch.tensor([[0.0, LN3]])  # p = [1/4, 3/4]
    s = torch.zeros(1, 2)  # q = [1/2, 1/2]
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert math.isclose(float(kl_logits(t, s)), kl, rel_tol=1e-6)
    assert math.isclose(float(adversarial_loss(t, s)), -kl, rel_tol=1e-6)  # the generator maximises KL
    assert math.isclose(float(one_hot_loss(t, torch.tensor([1]))), -math.log(0.75), rel_tol=1e-6)


def test_eq8_bn_term_hand_value():
    # ||(1, 2) - (1, 0)|| + ||(3, 4) - 0|| = 2 + 5
    val = bn_statistics_loss(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), torch.tensor([1.0, 0.0]),
                             torch.zeros(2))
    assert float(val) == pytest.approx(7.0)


def test_eq8_bn_loss_zero_when_batch_matches_running_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1),
                        nn.BatchNorm2d(2))
    x = torch.rand(16, 3, 8, 8)
    net.train()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0  # running stats := this batch's stats
    with torch.no_grad():
        net(x)
    # running_var is updated with the unbiased variance: store the biased one the hook compares with
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = x.shape[0] * 8 * 8
            m.running_var.mul_((n - 1) / n)
    net.eval()
    with BatchNormStatistics(net) as hooks:
        net(x)
        assert hooks.pop().item() == pytest.approx(0.0, abs=1e-4)
        net(x + 1.0)
        assert hooks.pop().item() > 0.1


def test_eq9_generator_loss_weights():
    terms = GeneratorLossTerms(adv=torch.tensor(-1.0), bn=torch.tensor(2.0), oh=torch.tensor(3.0),
                               uni=torch.tensor(4.0))
    assert float(generator_loss(terms, 1, 5, 1, 5)) == pytest.approx(-1 + 10 + 3 + 20)


def test_eq10_objective_and_gamma_term():
    clean = torch.tensor([[0.0, LN3]])  # [1/4, 3/4]
    adv = torch.zeros(1, 2)  # uniform: KL(U || q) = 0
    kl = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert float(utae_objective(clean, adv, 0.5)) == pytest.approx(kl, rel=1e-6)
    adv2 = torch.tensor([[LN3, 0.0]])  # [3/4, 1/4]
    kl2 = 0.25 * math.log(0.25 / 0.75) + 0.75 * math.log(0.75 / 0.25)
    klu = kl_uniform(adv2).item()
    assert klu == pytest.approx(0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25), rel=1e-6)
    assert float(utae_objective(clean, adv2, 0.5)) == pytest.approx(kl2 - 0.5 * klu, rel=1e-6)


def test_eq10_one_step_by_hand():
    """A linear 'teacher' z = W x: one signed step of size α from x (no random start noise, γ = 0)."""

    class Lin(nn.Module):
        def forward(self, x):
            return torch.cat([x.flatten(1)[:, :1], -x.flatten(1)[:, :1]], dim=1)

    x = torch.full((1, 1, 1, 2), 0.5)
    clean = Lin()(x)
    g = torch.Generator().manual_seed(0)
    # gaussian start is 0.001·N: tiny; after one step the first pixel moves by ±α and is projected to ε = 0.1
    out = generate_utae(Lin(), x, clean, eps=0.1, alpha=0.3, steps=1, gamma=0.0,
                        start=utae_start(x, 0.1, "gaussian", g))
    assert abs(float(out[0, 0, 0, 0]) - 0.5) == pytest.approx(0.1, abs=1e-6)  # clipped to the ε-ball
    assert float(out[0, 0, 0, 1]) == pytest.approx(0.5, abs=0.01)  # zero gradient: sign 0, stays near x
    assert float((out - x).abs().max()) <= 0.1 + 1e-7


def test_eq11_student_loss():
    t = torch.tensor([[0.0, LN3]])
    s_clean = torch.zeros(1, 2)
    s_adv = torch.tensor([[LN3, 0.0]])
    kl1 = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    kl2 = 0.25 * math.log(1 / 3) + 0.75 * math.log(3)
    assert float(robust_distillation_loss(t, s_clean, s_adv, 5 / 6, 1 / 6)) == pytest.approx(5 / 6 * kl1 + 1 / 6 * kl2, rel=1e-6)
    terms = robust_distillation_terms(t, s_clean, s_adv)  # the two KL terms before λ1, λ2 (what a run logs)
    assert [float(v) for v in terms] == pytest.approx([kl1, kl2], rel=1e-6)


def test_diversity_loss_mode_seeking_within_labels_by_hand():
    from ferd.synthesis.losses import diversity_loss

    # same-label pairs after a stable sort: (0, 1): |0−1| / |0−2| = 1/2; (2, 3): |3−0| / |0−1| = 3 → −(1/2 + 3)/2
    x = torch.tensor([0.0, 1.0, 3.0, 0.0]).view(4, 1, 1, 1)
    z = torch.tensor([[0.0], [2.0], [0.0], [1.0]])
    assert float(diversity_loss(x, z, torch.tensor([0, 0, 1, 1]))) == pytest.approx(-1.75)
    assert float(diversity_loss(x, z, torch.tensor([0, 1, 2, 3]))) == 0.0  # no pair shares a label
