"""One registry of model constructors by name (timm style).

``create_model("wrn-34-10", num_classes=10)`` or ``create_model("resnet18", num_classes=100,
width=64, mean=..., std=...)``. Pattern families such as ``wrn-<depth>-<width>`` and
``cnn-<width>`` are registered with a parser that turns the name into keyword arguments.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

from .base import FerdModel

_EXACT: dict[str, Callable[..., FerdModel]] = {}
_PATTERNS: list[tuple[re.Pattern[str], Callable[..., FerdModel], Callable[[re.Match[str]], dict[str, Any]], str]] = []


def register_model(name: str) -> Callable[[Callable[..., FerdModel]], Callable[..., FerdModel]]:
    """Decorator: register a constructor under an exact name."""

    def deco(fn: Callable[..., FerdModel]) -> Callable[..., FerdModel]:
        _EXACT[name] = fn
        return fn

    return deco


def register_pattern(pattern: str, parse: Callable[[re.Match[str]], dict[str, Any]], example: str
                     ) -> Callable[[Callable[..., FerdModel]], Callable[..., FerdModel]]:
    """Decorator: register a constructor for every name matching ``pattern`` (full match)."""

    def deco(fn: Callable[..., FerdModel]) -> Callable[..., FerdModel]:
        _PATTERNS.append((re.compile(pattern), fn, parse, example))
        return fn

    return deco


def register_depths(prefix: str, builder: Callable[..., FerdModel],
                    blocks: dict[int, tuple[int, ...]]) -> None:
    """Register ``<prefix><depth>`` for each depth in ``blocks``: ``builder`` with that ``num_blocks``
    (timm's variants through one builder; one depth table for every residual family)."""
    for depth, num_blocks in blocks.items():
        _EXACT[f"{prefix}{depth}"] = functools.partial(builder, num_blocks=num_blocks)


def list_models() -> list[str]:
    """Exact names plus one example of each pattern family."""
    return sorted(_EXACT) + [ex for *_, ex in _PATTERNS]


def is_known_model(name: str) -> bool:
    return name in _EXACT or any(p.fullmatch(name) for p, *_ in _PATTERNS)


def check_arch(name: str) -> str:
    """``name`` when the registry knows it; a ValueError naming the known ones otherwise."""
    if not is_known_model(name):
        raise ValueError(f"unknown architecture {name!r}; expected one of {list_models()}")
    return name


def create_model(name: str, num_classes: int, **kwargs: Any) -> FerdModel:
    """Build the model registered as ``name``; unknown names raise a ValueError listing the known ones."""
    if name in _EXACT:
        return _EXACT[name](num_classes=num_classes, **kwargs)
    for pattern, fn, parse, _ in _PATTERNS:
        m = pattern.fullmatch(name)
        if m:
            return fn(num_classes=num_classes, **parse(m), **kwargs)
    raise ValueError(f"arch: unknown architecture {name!r}; expected one of {list_models()}")
