"""The ``compare_teacher`` component: ferd compare: the comparison's shared teacher, evaluated once."""

from .component import compare_teacher

__all__ = ["compare_teacher"]
