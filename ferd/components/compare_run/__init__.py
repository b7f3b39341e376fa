"""The ``compare_run`` component: ferd compare: one arm (method, student, seed) as a ferd run."""

from .component import compare_run

__all__ = ["compare_run"]
