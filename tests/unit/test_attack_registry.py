"""Attacks as registered objects (ferd.attacks): the built-ins in order, and a new attack is one class."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ferd.attacks import ATTACKS, ThreatContext, attack_label, build_attack, register
from ferd.core.params_io import ConfigError
from ferd.plan.resolve import load_config
from ferd.evaluation import evaluate_models
from ferd.evaluation.report import _settings_md


def test_builtin_attacks_in_order_of_strength():
    assert list(ATTACKS) == ["clean", "fgsm", "pgd20", "cw", "aa"]
    assert attack_label("pgd20") == "PGD-20" and attack_label("unknown") == "unknown"
    ctx = ThreatContext(eps=8 / 255, step=2 / 255, seed=3, num_classes=10)
    assert build_attack("cw", ctx).settings() == {"steps": 20, "step_size": 2 / 255, "loss": "cw_margin",
                                                  "random_start": "uniform[-eps,eps], clamped", "kappa": 50.0}
    assert build_attack("clean", ctx).settings() is None and not build_attack("aa", ctx).batched
    with pytest.raises(ValueError, match="attacks: expected one of"):
        build_attack("pgd7", ctx)


@pytest.fixture()
def corner_attack():
    """A throwaway attack (``support.throwaway_extensions.Corner``), registered the way a new one would be (one
    class), removed afterwards."""
    from support.throwaway_extensions import Corner

    register(Corner)
    yield Corner
    del ATTACKS["corner"]


def test_a_new_attack_is_one_class(corner_attack):
    cfg = load_config("params/ci.yaml", ["evaluation.attacks=[clean,corner]"])
    assert cfg.evaluation.attacks == ["clean", "corner"]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    x, y = torch.rand(8, 3, 2, 2), torch.randint(0, 3, (8,))
    res = evaluate_models({"m": model}, x, y, num_classes=3, attacks=cfg.evaluation.attacks, eps=0.1,
                          batch_size=4, progress=False)
    x_adv = (x + 0.1 * torch.where(x < 0.5, -1.0, 1.0)).clamp(0, 1)
    with torch.no_grad():
        assert (res.predictions[("m", "corner")] == model(x_adv).argmax(1).numpy()).all()
    assert res.settings["corner"] == {"step_size": 0.1}
    assert "- Corner: every pixel 25.5/255 towards its nearer bound." in _settings_md(res)


def test_unknown_attack_in_the_parameters_is_refused():
    with pytest.raises(ConfigError, match="evaluation.attacks"):
        load_config("params/ci.yaml", ["evaluation.attacks=[clean,corner]"])
