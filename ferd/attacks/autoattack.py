"""AutoAttack (Croce & Hein, 2020) through the reference implementation, ``pyautoattack``.

FERD §5.1 reports robustness under AA, the standard L∞ version at ε = 8/255:
APGD-CE (100 iterations), APGD-T (9 target classes), FAB-T (9 target classes)
and Square (5,000 queries), each run only on the points still robust. We call
``pyautoattack.AutoAttack`` (fra31/auto-attack repackaged, attack code
unchanged) rather than a re-implementation (torchattacks' AutoAttack, which
Fair-ARD's ``eval.py`` uses, targets C − 1 classes).

The evaluation scores AA as it scores every attack, and as RobustBench's benchmark scores AA: by predicting
the returned ``x_adv`` again, batch by batch (:mod:`ferd.evaluation.runner`). ``run_autoattack`` also returns
the package's own labels, ``y_adv`` (the clean prediction, overwritten only where an attack succeeds), and
``tests/integration/test_evaluation_runner.py`` checks that the evaluation's per-sample predictions equal them
(on the CPU; a GPU's batch-dependent kernels could move a point that sits on the decision boundary).

Pitfalls handled here (see ``../shared/notes/evaluation.md``): the package's
default ε is 0.3 (we always pass it); every attack calls ``torch.manual_seed``
(we restore the caller's RNG state afterwards); APGD-T fails on non-contiguous
input gradients (inputs are made contiguous and a wrapper makes the gradient
contiguous, e.g. for ``channels_last`` models); its ``check_dynamic`` calls
``sys.settrace(None)`` (we put the previous trace function back, so coverage and
debuggers survive); its ``check_randomized`` runs forward passes (the model must
be in ``eval()``: enforced).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .base import Attack, register

logger = logging.getLogger(__name__)

AA_VERSION = "standard"
AA_NORM = "Linf"
AA_TARGETS = 9
"""Target classes of APGD-T and FAB-T in the standard version (fewer when C ≤ 9)."""


@dataclass(frozen=True)
class AutoAttackOutput:
    """Per-sample AutoAttack results, on the device of the inputs."""

    correct: torch.Tensor
    """bool (N,): the model is still right on the worst adversarial example found."""
    y_adv: torch.Tensor
    """int64 (N,): prediction on that example (the clean prediction where no attack succeeded)."""
    x_adv: torch.Tensor
    """float (N, 3, H, W): the adversarial examples (the clean input where no attack succeeded)."""


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward returns a contiguous gradient (pyautoattack calls ``grad.view``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return grad.contiguous()


class ContiguousInputGrad(nn.Module):
    """Wraps a model so that gradients w.r.t. its input come back NCHW-contiguous.

    Numerically the identity (same logits, same gradient values), so AutoAttack's
    results on the wrapper equal those on the bare model whenever the bare model
    works with pyautoattack at all.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(_ContiguousGrad.apply(x))


def _rng_devices(device: torch.device) -> list[int]:
    if device.type == "cuda" and torch.cuda.is_available():
        return [device.index if device.index is not None else torch.cuda.current_device()]
    return []


def run_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float = 8 / 255,
                   batch_size: int = 256, seed: int = 0, device: str | torch.device = "cpu",
                   version: str = AA_VERSION, norm: str = AA_NORM) -> AutoAttackOutput:
    """Run AutoAttack ``version`` (standard) on ``model`` and return per-sample results.

    ``model`` must already be on ``device`` and in ``eval()`` mode (a ValueError
    otherwise: AutoAttack's checks would change BatchNorm statistics); it takes
    inputs in [0, 1] and returns logits. ``x`` (N×3×H×W float32 in [0, 1]) and
    ``y`` may live on the CPU: pyautoattack moves each batch to ``device``. With
    the same ``model``, data and ``seed`` the result is identical to calling
    ``AutoAttack(model, norm=norm, eps=eps, version=version, seed=seed,
    device=device).run_standard_evaluation(x, y, batch_size=batch_size)`` directly.
    The caller's global torch RNG state (CPU, and CUDA for a CUDA ``device``) is the
    same after the call as before it.
    """
    from pyautoattack import AutoAttack  # local import: heavy and only needed for 'aa'

    if model.training:
        raise ValueError("model: AutoAttack needs the model in eval() mode "
                         "(its randomness check runs forward passes that would update BatchNorm)")
    device = torch.device(device)
    x = x.detach().float().contiguous()
    y = y.detach().long().contiguous()
    num_classes = None
    with torch.no_grad():
        num_classes = int(model(x[:1].to(device)).shape[1])
    wrapped = ContiguousInputGrad(model).eval()
    trace = sys.gettrace()
    with torch.random.fork_rng(devices=_rng_devices(device)):
        adversary = AutoAttack(wrapped, norm=norm, eps=eps, version=version, seed=seed, device=device)
        if version == "standard" and num_classes <= AA_TARGETS:
            # The reference code assumes ≥ 10 classes; with fewer, target every other class.
            adversary.apgd_targeted.n_target_classes = num_classes - 1
            adversary.fab.n_target_classes = num_classes - 1
            logger.warning("AutoAttack: %d classes, using %d target classes for APGD-T and FAB-T",
                           num_classes, num_classes - 1)
        try:
            x_adv, y_adv = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
        finally:
            sys.settrace(trace)
    y_adv = y_adv.to(y.device).long()
    return AutoAttackOutput(correct=y_adv == y, y_adv=y_adv, x_adv=x_adv.detach())


@register
class AutoAttackStandard(Attack):
    """AutoAttack standard (Croce & Hein, 2020) through ``pyautoattack`` (:func:`run_autoattack`), on the
    whole set at once (it batches itself, with ``batch_size``) and seeded with the evaluation seed."""

    name, label, batched = "aa", "AA", False

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        logger.info("AutoAttack %s on %d examples", AA_VERSION, x.shape[0])
        c = self.ctx
        return run_autoattack(model, x.contiguous(), y, eps=c.eps, batch_size=c.batch_size, seed=c.seed,
                              device=c.device).x_adv

    def settings(self) -> dict[str, Any]:
        from importlib.metadata import version

        return {"version": AA_VERSION, "norm": AA_NORM, "seed": self.ctx.seed,
                "target_classes": min(AA_TARGETS, self.ctx.num_classes - 1),
                "package": f"pyautoattack {version('pyautoattack')}"}

    @staticmethod
    def describe(settings: dict[str, Any], eps: float) -> str:
        return (f"- AutoAttack: version `{settings['version']}`, norm {settings['norm']}, seed {settings['seed']}, "
                f"{settings['target_classes']} target classes for APGD-T / FAB-T, {settings['package']}.")
