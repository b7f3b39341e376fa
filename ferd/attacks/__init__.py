"""L∞ attacks: the gradient functions (:mod:`.gradient`: FGSM, PGD, CW, least PGD steps) shared by the
evaluation, the reweighting of Eq. 1-2 / Eq. 24, teacher training and the A.8 baselines; and the
evaluation's attacks as registered objects (:mod:`.base`, :mod:`.standard`, :mod:`.autoattack`)."""

from . import standard  # noqa: F401  (registers clean, fgsm, pgd20, cw: the order of strength)
from . import autoattack  # noqa: F401,I001  (then aa)
from .base import ATTACKS, Attack, ThreatContext, attack_label, build_attack, check_attack_names, register
from .gradient import (CW_CONFIDENCE, LOSSES, ce_loss, cw_loss, fgsm, logit_margin, pgd, pgd_least_steps, project,
                       random_start)

__all__ = ["ATTACKS", "Attack", "CW_CONFIDENCE", "LOSSES", "ThreatContext", "attack_label", "build_attack",
           "ce_loss", "check_attack_names", "cw_loss", "fgsm", "logit_margin", "pgd", "pgd_least_steps", "project",
           "random_start", "register"]
