"""The ``run_params`` component: a pipeline run's typed parameters resolved into the overrides of every stage."""

from .component import run_params

__all__ = ["run_params"]
