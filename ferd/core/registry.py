"""A registry of classes by their ``name`` (attacks, baselines): a dict in registration order whose
:meth:`~Registry.register` is the class decorator that adds a class once."""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


class Registry(dict[str, Any]):
    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def register(self, cls: T) -> T:
        """Class decorator: add ``cls`` under ``cls.name``."""
        name = cls.name  # type: ignore[attr-defined]
        if name in self:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self[name] = cls
        return cls
