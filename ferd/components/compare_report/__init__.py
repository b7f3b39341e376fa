"""The ``compare_report`` component: ferd compare: the Table-1-style report over every arm."""

from .component import compare_report

__all__ = ["compare_report"]
