"""FERD as a method (:mod:`ferd.method`): its generation stage is :class:`~ferd.synthesis.epoch.Synthesizer`
(Eq. 4-9: L_adv, L_bn, L_oh and the fairness term L_uni on the non-robust channels), it reweights the labels
(Eq. 1-2), its student side is ``distill.*`` as written (Eq. 10-11), it reads no baseline group, and its
generation is data-parallel under torchrun."""

from __future__ import annotations

from ..method import Method, register
from .epoch import Synthesizer


@register
class Ferd(Method):
    name = "ferd"
    reweights = True
    student_side = "given"
    groups = ()
    data_parallel = True

    @classmethod
    def synthesizer(cls, plan, num_classes: int, img_size: int) -> Synthesizer:
        cfg = plan.cfg
        return Synthesizer(plan.synthesis, num_classes, img_size, cfg.seed, cfg.device, amp=cfg.compute.amp)
