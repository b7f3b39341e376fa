"""evaluate_models on a real (tiny, adversarially trained) model: attack ordering, AutoAttack
parity with pyautoattack, determinism, eval mode and input checks.

The model is a 2-conv CNN trained for ~3 s with FGSM-RS adversarial training on
scikit-learn's digits (bilinearly resized to 16×16, 3 channels). At ε = 0.1 it is
robust on average but unequal across classes (see ../shared/notes/evaluation.md),
so the attacks separate. AutoAttack runs on 40 images only (it is slow on CPU).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from ferd.attacks import fgsm
from ferd.attacks.autoattack import ContiguousInputGrad
from ferd.evaluation.runner import (ATTACKS, attack_seed, evaluate_models, flat_metrics, per_class_table,
                                    stratified_subset)

EPS = 0.1
N_AA = 40


class TinyCNN(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        x = F.max_pool2d(F.relu(self.b2(self.c2(x))), 2)
        return self.fc(x.flatten(1))


def digits16() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
    x = F.interpolate(x, size=16, mode="bilinear", align_corners=False).clamp(0, 1).repeat(1, 3, 1, 1)
    y = torch.tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1400], perm[1400:]
    return x[tr].contiguous(), y[tr], x[te].contiguous(), y[te]


def train_tiny(x: torch.Tensor, y: torch.Tensor, epochs: int = 8) -> TinyCNN:
    """FGSM with random start (Wong et al., 2020), step 1.25 ε, clean + adversarial loss."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    model = TinyCNN()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 100):
            xb, yb = x[perm[i:i + 100]], y[perm[i:i + 100]]
            model.eval()
            xa = (xb + torch.empty_like(xb).uniform_(-EPS, EPS, generator=g)).clamp(0, 1)
            xa = torch.min(torch.max(fgsm(model, xa, yb, 1.25 * EPS), xb - EPS), xb + EPS)
            model.train()
            loss = F.cross_entropy(model(torch.cat([xb, xa])), torch.cat([yb, yb]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


pytestmark = pytest.mark.usefixtures("one_thread_module")  # tiny models: one intra-op thread


@pytest.fixture(scope="module")
def setup():
    xtr, ytr, xte, yte = digits16()
    model = train_tiny(xtr, ytr)
    idx = torch.from_numpy(stratified_subset(yte, N_AA, seed=0))
    return model, xte, yte, xte[idx].contiguous(), yte[idx]


@pytest.fixture(scope="module")
def full(setup):
    model, x, y, _, _ = setup
    return evaluate_models({"m": model}, x, y, num_classes=10, attacks=("clean", "fgsm", "pgd20", "cw"),
                           eps=EPS, batch_size=128, seed=0, progress=False)


@pytest.fixture(scope="module")
def with_aa(setup):
    model, _, _, xs, ys = setup
    state = torch.get_rng_state()
    result = evaluate_models({"m": model}, xs, ys, num_classes=10, attacks=ATTACKS, eps=EPS, batch_size=64,
                             seed=0, progress=False)
    assert torch.equal(state, torch.get_rng_state()), "the global RNG must be left as it was"
    return result


def assert_ordered(result, stronger: str, weaker: str, tol_samples: float) -> None:
    """Overall accuracy under ``stronger`` ≤ under ``weaker``; per class within tol_samples examples."""
    a_s = result.correct[("m", stronger)].mean()
    a_w = result.correct[("m", weaker)].mean()
    assert a_s <= a_w, f"{stronger} {a_s:.3f} > {weaker} {a_w:.3f}"
    counts = result.class_counts()
    slack = tol_samples / np.maximum(counts, 1)
    cs, cw = result.class_accuracy("m", stronger), result.class_accuracy("m", weaker)
    assert np.all(cs <= cw + slack + 1e-12), f"{stronger} vs {weaker} per class: {cs} vs {cw}"


def test_model_is_robust_but_unequal(full):
    st_clean, st_pgd = full.stats("m", "clean"), full.stats("m", "pgd20")
    assert st_clean["avg"] > 0.9
    assert 0.3 < st_pgd["avg"] < st_clean["avg"]
    assert st_pgd["nsd"] > st_clean["nsd"]


def test_attack_ordering_full_test_set(full):
    assert_ordered(full, "pgd20", "fgsm", tol_samples=2)
    assert_ordered(full, "fgsm", "clean", tol_samples=2)
    assert_ordered(full, "cw", "clean", tol_samples=2)


def test_attack_ordering_with_autoattack(with_aa):
    assert_ordered(with_aa, "aa", "cw", tol_samples=1)
    assert_ordered(with_aa, "aa", "pgd20", tol_samples=1)
    assert_ordered(with_aa, "pgd20", "fgsm", tol_samples=1)
    assert_ordered(with_aa, "fgsm", "clean", tol_samples=1)
    # AutoAttack only flips clean-correct points: robust ⊆ clean-correct, exactly
    assert not np.any(with_aa.correct[("m", "aa")] & ~with_aa.correct[("m", "clean")])


def test_autoattack_matches_pyautoattack_directly(setup, with_aa):
    from pyautoattack import AutoAttack

    model, _, _, xs, ys = setup
    adversary = AutoAttack(model, norm="Linf", eps=EPS, version="standard", seed=0, device="cpu")
    _, y_adv = adversary.run_standard_evaluation(xs, ys, batch_size=64)
    np.testing.assert_array_equal(with_aa.predictions[("m", "aa")], y_adv.numpy())
    np.testing.assert_array_equal(with_aa.correct[("m", "aa")], (y_adv == ys).numpy())
    assert with_aa.settings["aa"]["version"] == "standard" and with_aa.settings["eps"] == EPS


def test_flat_metrics_and_per_class_table(with_aa):
    flat = flat_metrics(with_aa)
    assert set(flat) == {f"m.{a}.{s}" for a in ATTACKS for s in ("avg", "worst", "worst10", "nsd")}
    for key, value in flat.items():
        if not key.endswith(".nsd"):
            assert 0.0 <= value <= 1.0
    assert flat["m.aa.avg"] == pytest.approx(with_aa.correct[("m", "aa")].mean())
    rows = per_class_table(with_aa, [f"d{i}" for i in range(10)])
    assert len(rows) == len(ATTACKS) * 10
    assert {r["model"] for r in rows} == {"m"} and rows[3]["class_name"] == "d3"
    assert sum(r["n"] for r in rows if r["attack"] == "aa") == N_AA
    for key in ("eps", "seed", "n_examples"):
        assert key in with_aa.settings
    assert with_aa.settings["pgd20"]["steps"] == 20 and with_aa.settings["cw"]["kappa"] == 50


def test_deterministic_and_order_independent(setup, with_aa):
    model, _, _, xs, ys = setup
    again = evaluate_models({"m": model}, xs, ys, num_classes=10, attacks=("cw", "pgd20"), eps=EPS,
                            batch_size=64, seed=0, progress=False)
    for attack in ("pgd20", "cw"):
        np.testing.assert_array_equal(again.predictions[("m", attack)], with_aa.predictions[("m", attack)])
    assert attack_seed(0, "m", "pgd20") != attack_seed(0, "m", "cw") != attack_seed(1, "m", "cw")


def test_eval_mode_enforced_and_batchnorm_untouched(setup):
    _, _, _, xs, ys = setup
    model = TinyCNN()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    evaluate_models({"m": model}, xs, ys, num_classes=10, attacks=("clean", "fgsm", "pgd20"), eps=EPS,
                    progress=False)
    assert not any(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_input_checks(setup):
    model, _, _, xs, ys = setup
    kw = dict(num_classes=10, attacks=("clean",), progress=False)
    with pytest.raises(ValueError, match=r"x: expected pixel values in \[0, 1\]"):
        evaluate_models({"m": model}, xs * 2, ys, **kw)
    with pytest.raises(ValueError, match=r"x: expected pixel values in \[0, 1\]"):
        evaluate_models({"m": model}, xs - 0.5, ys, **kw)
    with pytest.raises(ValueError, match="x: expected a tensor"):
        evaluate_models({"m": model}, xs[0], ys, **kw)
    with pytest.raises(ValueError, match="x: expected floating-point"):
        evaluate_models({"m": model}, (xs * 255).to(torch.uint8), ys, **kw)
    with pytest.raises(ValueError, match="y: expected a 1-D tensor of 40"):
        evaluate_models({"m": model}, xs, ys[:-1], **kw)
    with pytest.raises(ValueError, match=r"y: expected labels in \[0, 5\)"):
        evaluate_models({"m": model}, xs, ys, **{**kw, "num_classes": 5})
    with pytest.raises(ValueError, match="num_classes: model 'm' returns logits of shape"):
        evaluate_models({"m": model}, xs, ys.clamp(max=9) % 10, **{**kw, "num_classes": 12})
    with pytest.raises(ValueError, match="attacks"):
        evaluate_models({"m": model}, xs, ys, **{**kw, "attacks": ("clean", "pgd")})
    with pytest.raises(ValueError, match="models: name 'a.b'"):
        evaluate_models({"a.b": model}, xs, ys, **kw)
    with pytest.raises(ValueError, match="eps"):
        evaluate_models({"m": model}, xs, ys, eps=0.0, **kw)


def test_contiguous_grad_wrapper_channels_last(setup):
    model, _, _, xs, ys = setup
    cl = TinyCNN()
    cl.load_state_dict(model.state_dict())
    cl = cl.eval().to(memory_format=torch.channels_last)
    wrapped = ContiguousInputGrad(cl)
    x = xs[:4].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(wrapped(x), ys[:4]), x)
    assert grad.is_contiguous()
    torch.testing.assert_close(wrapped(xs[:4]), cl(xs[:4]))
