"""The one registry of methods by ``method:`` name — FERD and the §5.1 baselines alike.

A method is one class registered here with its traits; :func:`ferd.plan.resolve.resolve` reads them, and nothing
downstream asks which method it is:

* ``synthesizer(plan, num_classes, img_size)`` — its generation stage (an object with ``run_epoch``,
  ``state_dict``, ``load_state_dict`` and ``generator``);
* ``reweights`` — whether labels are drawn from the reweighted p (Eq. 1-2; the baselines draw them
  uniformly, §3);
* ``student_side`` — ``given``: ``distill.*`` as written (Eq. 10-11); ``a8``: the A.8 conversion (RSLAD's
  attack and loss, ``baseline.robust``); ``own``: the method's own (``own_student_side``, DFHL's HEEs).
  ``baseline.robust.student_side: ferd`` turns ``a8`` and ``own`` into ``given`` (the comparison's arm
  that separates synthesis from distillation);
* ``groups`` — the parameter groups it reads beyond the shared ones (``baseline.robust``,
  ``baseline.<name>``): its results' fingerprint depends on these and on no other method's;
* ``synthesis_groups`` — those of its ``groups`` that hold a synthesis of its own (``baseline.<name>``): such a
  method does not read ``synthesis.*``'s generator settings;
* ``data_parallel`` — whether its generation splits the batch across torchrun's processes.
* ``splits_teacher`` — whether it splits the teacher at ``synthesis.layer`` (``features``/``head``, Eq. 4-7):
  such a method needs a teacher with split points (:func:`ferd.models.check_split`).

The shipped methods live in :mod:`ferd.synthesis.ferd` and :mod:`ferd.baselines` (one module each); they
register on import, which :func:`ferd.plan.methods.method_class` triggers the first time a name is looked up (this
module is a leaf: it imports no method).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..core.registry import Registry

if TYPE_CHECKING:
    from ..plan.resolve import Plan

StudentSideKind = Literal["given", "a8", "own"]


class Method:
    """A method's traits and its two factories (synthesiser, own student side)."""

    name: ClassVar[str]
    reweights: ClassVar[bool] = False
    student_side: ClassVar[StudentSideKind] = "a8"
    groups: ClassVar[tuple[str, ...]] = ()
    synthesis_groups: ClassVar[tuple[str, ...]] = ()
    data_parallel: ClassVar[bool] = False
    splits_teacher: ClassVar[bool] = False

    @classmethod
    def synthesizer(cls, plan: Plan, num_classes: int, img_size: int) -> Any:
        raise NotImplementedError

    @classmethod
    def own_student_side(cls, plan: Plan) -> Any:
        """The student side of a method whose ``student_side`` is ``own`` (:class:`ferd.distill.side.StudentSide`)."""
        raise NotImplementedError(f"method {cls.name!r} has no student side of its own")


METHODS = Registry("method")
"""Registered methods by name."""
register = METHODS.register

