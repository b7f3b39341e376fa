"""The ``evaluation`` component: stage 5 of the FERD DAG: per-class robustness of teacher and final student."""

from .component import evaluation

__all__ = ["evaluation"]
