"""The ``stage`` component: any stage of the FERD graph that has no component folder of its own."""

from .component import stage

__all__ = ["stage"]
