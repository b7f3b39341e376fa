"""The paper's baselines (§5.1, A.8) as ``method:`` choices.

* :mod:`.losses` — each baseline's characteristic loss terms (hand-checked in
  ``tests/test_baseline_losses.py``);
* :mod:`.synthesis` — their generation stage (:class:`.synthesis.BaselineSynthesizer`);
* :func:`distill_config` — their distillation: deepinv, cmi, fast and zskt are made robust as A.8
  says (PGD, step 2/255, 10 iterations on the synthetic samples, RSLAD loss); dfhl keeps its own
  robust distillation (high-entropy examples labelled by the teacher's top-1,
  :func:`ferd.distill.stage.Distiller` with ``hee``);
* :mod:`.config` — their parameters (``baseline:`` group).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .config import METHODS

if TYPE_CHECKING:
    from ..config import DistillConfig, FerdConfig

__all__ = ["METHODS", "distill_config"]


def distill_config(cfg: FerdConfig) -> DistillConfig:
    """The distillation parameters ``cfg.method`` runs with.

    ``ferd`` and ``dfhl``: ``cfg.distill`` as given (dfhl swaps the loss, not the schedule). The
    A.8 conversions (deepinv, cmi, fast, zskt): ``cfg.distill`` with its UTAE replaced by RSLAD's
    attack (the student is attacked from x + 0.001·N(0, 1) on KL(f^T(x) ‖ f^S(x')), γ = 0,
    ``baseline.robust.attack_steps`` steps of ``threat.step``, by default FERD's ``distill.utae.steps``)
    and λ1, λ2 by RSLAD's weights (clean 1/6, adversarial 5/6). Optimiser, schedule, iterations and
    batch stay FERD's, so every method gets the same student budget. With ferd's default ``distill`` (RSLAD's side) the conversion
    changes nothing, so a baseline's arm and FERD's differ in synthesis only.
    ``baseline.robust.student_side: ferd`` skips the conversion: the baseline's pool is distilled exactly
    as FERD's ``distill`` says (with the paper's Eq. 10-11 there, the comparison's paper-student arms).
    """
    from .synthesis import BASELINES

    if cfg.method == "ferd" or not BASELINES[cfg.method].a8_conversion or cfg.baseline.robust.student_side == "ferd":
        return cfg.distill
    r = cfg.baseline.robust
    steps = r.attack_steps or cfg.distill.utae.steps
    utae = cfg.distill.utae.model_copy(update={"target": "student", "steps": steps, "gamma": 0.0,
                                               "random_start": r.random_start, "cache": "recompute"})
    return cfg.distill.model_copy(update={"lambda1": r.lambda_clean, "lambda2": r.lambda_adv, "utae": utae})
