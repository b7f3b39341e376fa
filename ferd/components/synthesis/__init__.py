"""The ``synthesis`` component: stage 2 of the FERD DAG: one round of fairness-enhanced synthesis with reweighting."""

from .component import synthesis

__all__ = ["synthesis"]
