"""The ``teacher_fetch`` component: stage 1 of the FERD DAG: a verified teacher checkpoint and its model card."""

from .component import teacher_fetch

__all__ = ["teacher_fetch"]
