"""One registry of model constructors by name (timm style).

``create_model("wrn-34-10", num_classes=10)`` or ``create_model("resnet18", num_classes=100,
width=64, mean=..., std=...)``. Pattern families such as ``wrn-<depth>-<width>`` and
``cnn-<width>`` are registered with a parser that turns the name into keyword arguments.

One resolver for every name a parameter may give (:func:`create_model`, checked by :func:`check_arch`):
a registered name (exact, or a pattern family), then a ``ferd.models`` entry point of an installed
package, then a ``package.module:factory`` reference (:mod:`ferd.models.foreign`: it imports and runs
that code — the user's own parameters, like a pickle would).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Any

import torch

from .base import FerdModel
from .foreign import build, dry_run, entry_points, load_factory, reference_of

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
    """Decorator: register a constructor for every name matching ``pattern`` (full match); ``parse`` turns the
    match into its keyword arguments, with a one-line ValueError for numbers the family has no model of (what
    :func:`check_arch` checks when the parameters are read)."""

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


PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
"""A name that is safe as one directory name and one DVC matrix item (every built-in name is)."""


def list_models() -> list[str]:
    """Exact names, one example of each pattern family, then the installed entry points' names."""
    return sorted(_EXACT) + [ex for *_, ex in _PATTERNS] + sorted(n for n in entry_points() if not is_builtin(n))


def is_builtin(name: str) -> bool:
    """Registered by ferd itself (exact or a pattern family): no code outside ferd runs to build it."""
    return name in _EXACT or any(p.fullmatch(name) for p, *_ in _PATTERNS)


def is_known_model(name: str) -> bool:
    """A built-in name or an installed ``ferd.models`` entry point."""
    return is_builtin(name) or name in entry_points()


def _reference(name: str) -> str:
    ref = reference_of(name)
    if ref is None:
        raise ValueError(f"unknown architecture {name!r}; expected one of {list_models()}, or "
                         "package.module:factory")
    return ref


def check_arch(name: str, num_classes: int | None = None, image_size: int = 32) -> str:
    """``name`` when it resolves; a one-line ValueError otherwise.

    A built-in name is only looked up (a pattern family's numbers checked by its ``parse``). Any other (entry point, ``module:factory``) has its module imported
    and its factory found callable; with ``num_classes`` the model is also built and run once on a
    1×3×S×S zero image (:func:`probe`), so a factory that raises, returns no ``nn.Module`` or gives logits
    of the wrong shape is refused before any work.
    """
    if is_builtin(name):
        if name not in _EXACT:
            _family(name)  # a family's numbers (cnn-0, wrn-11-2), checked without building
        return name
    if num_classes is None:
        load_factory(_reference(name))
    else:
        probe(name, num_classes, image_size)
    return name


@functools.lru_cache(maxsize=64)
def probe(name: str, num_classes: int, image_size: int = 32) -> tuple[str, ...]:
    """Build ``name`` (not a built-in one) and run it once (:func:`ferd.models.foreign.dry_run`); its split
    points (``layer_names``). Cached per process; the global RNG is left as it was (the build draws weights)."""
    with torch.random.fork_rng(devices=[]):
        model = build(name, _reference(name), num_classes)
        dry_run(model, name, num_classes, image_size)
    return tuple(model.layer_names)


def check_split(name: str, layer: str | None, num_classes: int, image_size: int = 32) -> None:
    """A teacher a method splits at ``layer`` (``None``: the model's default, Eq. 4-7) must have that split
    point: checked here for a name from outside ferd (a built-in model's layer is checked when it runs)."""
    if is_builtin(name):
        return
    layers = probe(name, num_classes, image_size)
    if not layers:
        raise ValueError(f"{name!r} is a plain nn.Module with no split points, and this method splits the "
                         "teacher at synthesis.layer (Eq. 4-7); return a ferd.models.FerdModel (layer_names, "
                         "_features, head), or use it as the student or with a baseline method")
    if layer is not None and layer not in layers:
        raise ValueError(f"synthesis.layer {layer!r} is not a split point of {name!r}; expected one of "
                         f"{list(layers)}")


def _family(name: str) -> tuple[Callable[..., FerdModel], dict[str, Any]] | None:
    """The pattern family ``name`` belongs to: its constructor and the keyword arguments its numbers give (its
    ``parse`` refuses numbers the family has no model of), or None."""
    for pattern, fn, parse, _ in _PATTERNS:
        if m := pattern.fullmatch(name):
            return fn, parse(m)
    return None


def create_model(name: str, num_classes: int, **kwargs: Any) -> FerdModel:
    """Build the model ``name`` resolves to (see the module docstring); a ValueError (one line) otherwise.

    ``mean``/``std`` in ``kwargs`` are ferd's normalisation: a built-in constructor takes them, a factory from
    outside ferd is called without them and its model gets the same :class:`~ferd.models.base.Normalize`
    (:func:`ferd.models.foreign.adopt`).
    """
    if name in _EXACT:
        return _EXACT[name](num_classes=num_classes, **kwargs)
    if (family := _family(name)) is not None:
        fn, numbers = family
        return fn(num_classes=num_classes, **numbers, **kwargs)
    try:
        return build(name, _reference(name), num_classes, **kwargs)
    except ValueError as exc:
        raise ValueError(f"arch: {exc}") from None
