"""The ``distillation`` component: stage 4 of the FERD DAG: one round of UTAE robust distillation."""

from .component import distillation

__all__ = ["distillation"]
