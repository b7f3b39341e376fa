"""Architectures from outside ferd: a ``package.module:factory`` reference, or a name an installed
package registers in the ``ferd.models`` entry-point group (``[project.entry-points."ferd.models"]
my-net = "my_pkg.models:build"``).

The factory is called as ``factory(num_classes=C)`` and must return a ``torch.nn.Module`` taking
N×3×H×W images in [0, 1] and returning N×C logits. Normalisation is ferd's, as for a registered
architecture: ``teacher.mean``/``teacher.std`` (``student.*``) put :class:`~ferd.models.base.Normalize`
in front of the model. A :class:`~ferd.models.base.FerdModel` is used as it is (its ``normalize`` slot
replaced when mean/std are set) and can be split at its ``layer_names`` (FERD's teacher must be); any
other module is wrapped in :class:`ForeignModel`, whose state_dict keys stay the module's own.

Security: resolving such a name imports that module and calls the factory — it runs that code with the
rights of the process, as unpickling a checkpoint would. The name comes only from the run's own
parameters (params file, ``-S``, DVC params; for Kubeflow, the overrides of whoever owns the pipeline),
never from a file ferd reads back (``ferd export`` resolves a name its run directory gives only when the user
repeats it as ``--trust-arch``); use references to code you trust.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import re
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .base import FerdModel, Normalize

ENTRY_POINT_GROUP = "ferd.models"
REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
"""``package.module:attr`` (``attr`` may be dotted: ``pkg.mod:Class.build``)."""


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:limit] if text else ''}".rstrip(": ")


@functools.cache
def entry_points() -> dict[str, str]:
    """Name → ``module:attr`` of every installed ``ferd.models`` entry point (read once per process)."""
    return {ep.name: f"{ep.module}:{ep.attr}" for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def reference_of(name: str) -> str | None:
    """The ``module:attr`` that ``name`` stands for: its entry point's value, itself when it has a ``:``,
    ``None`` when it is neither (an unknown name)."""
    if name in entry_points():
        return entry_points()[name]
    if ":" not in name:
        return None
    if not REFERENCE.fullmatch(name):
        raise ValueError(f"{name!r} is not a module:factory reference; expected package.module:callable "
                         "(e.g. my_models.tiny:build)")
    return name


def load_factory(ref: str) -> Callable[..., Any]:
    """Import the module of ``ref`` (``module:attr``) and return its callable ``attr``; one-line ValueErrors."""
    module_name, _, attr = ref.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises while it is imported
        raise ValueError(f"{ref!r}: cannot import module {module_name!r} ({_first_line(exc)}); is it installed "
                         "in this environment or on PYTHONPATH?") from None
    path = module_name
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{ref!r}: {path} has no attribute {part!r}")
        obj, path = getattr(obj, part), f"{path}.{part}"
    if not callable(obj):
        raise ValueError(f"{ref!r}: {path} ({type(obj).__name__}) is not callable; expected a "
                         "factory(num_classes=...) returning a torch.nn.Module")
    return obj


def build(name: str, ref: str, num_classes: int, mean: Any = None, std: Any = None, **kwargs: Any) -> FerdModel:
    """``factory(num_classes=C, **kwargs)`` of ``ref``, checked to be an ``nn.Module`` and given ferd's
    normalisation (:func:`adopt`)."""
    factory = load_factory(ref)
    try:
        module = factory(num_classes=num_classes, **kwargs)
    except Exception as exc:
        raise ValueError(f"{name!r}: the factory raised {_first_line(exc)} (called as "
                         f"{ref.partition(':')[2]}(num_classes={num_classes}))") from None
    return adopt(module, name, num_classes, mean, std)


def adopt(module: object, name: str, num_classes: int, mean: Any = None, std: Any = None) -> FerdModel:
    """A :class:`FerdModel` as is (``normalize`` replaced when mean/std are given); any other ``nn.Module``
    wrapped in :class:`ForeignModel`; anything else refused."""
    if not isinstance(module, nn.Module):
        raise ValueError(f"{name!r}: the factory returned a {type(module).__name__}, expected a torch.nn.Module")
    if isinstance(module, FerdModel):
        if mean is not None or std is not None:
            module.normalize = Normalize(mean, std)
        return module
    return ForeignModel(module, num_classes, name, mean, std)


def dry_run(model: nn.Module, name: str, num_classes: int, image_size: int) -> None:
    """One forward pass of a 1×3×S×S zero image in eval mode; its output must be 1×C logits."""
    was_training = model.training
    shape = f"1×3×{image_size}×{image_size}"
    try:
        model.eval()
        with torch.no_grad():
            out = model(torch.zeros(1, 3, image_size, image_size))
    except Exception as exc:
        raise ValueError(f"{name!r}: the forward pass of a {shape} zero image raised {_first_line(exc)}") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"{name!r}: a {shape} image gave output {got}, expected logits of shape "
                         f"(1, {num_classes}) (num_classes of the dataset)")


def _drop_prefix(module: nn.Module, state: dict[str, Any], prefix: str, _meta: Any) -> None:
    """state_dict post-hook: ``<prefix>net.k`` → ``<prefix>k`` (the wrapped module's own keys)."""
    inner = prefix + "net."
    for key in [k for k in state if k.startswith(inner)]:
        state[prefix + key[len(inner):]] = state.pop(key)


def _add_prefix(module: nn.Module, state: dict[str, Any], prefix: str, *_: Any) -> None:
    """load_state_dict pre-hook: the inverse of :func:`_drop_prefix` (every key under ``prefix`` is in the
    wrapped module's own layout, even one that itself begins with ``net.``)."""
    for key in [k for k in state if k.startswith(prefix)]:
        state[prefix + "net." + key[len(prefix):]] = state.pop(key)


class ForeignModel(FerdModel):
    """A plain ``nn.Module`` behind ferd's :class:`Normalize`: ``forward(x) = net(normalize(x))``.

    Its state_dict is ``net``'s own (no ``net.`` prefix), so checkpoints written by the user's code load
    and students written by ferd are the user's layout. It has no split points (``layer_names`` empty):
    it serves as a student, and as the teacher of a method that does not split it (the baselines).
    """

    def __init__(self, net: nn.Module, num_classes: int, arch: str, mean: Any = None, std: Any = None) -> None:
        super().__init__(num_classes, mean, std)
        self.net = net
        self.arch = arch
        self.register_state_dict_post_hook(_drop_prefix)
        self.register_load_state_dict_pre_hook(_add_prefix)

    def check_layer(self, layer: str | None) -> str:
        raise ValueError(f"layer: {self.arch!r} is a plain {type(self.net).__name__} with no split points; "
                         "return a ferd.models.FerdModel (layer_names, _features, head) to split it")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))
