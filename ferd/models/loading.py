"""Safe, strict loading of a model checkpoint (a teacher's or a student's).

:func:`load_model` builds the architecture from the registry and loads a checkpoint strictly (via
:mod:`ferd.core.checkpoint`, never plain unpickling), naming missing, unexpected or misshapen keys.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..core.checkpoint import _PREFIXES as STRIPPED_PREFIXES  # what load_state_dict strips from every key
from ..core.checkpoint import load_state_dict
from .base import FerdModel
from .registry import create_model

IGNORED_PREFIXES = ("sub_block1.",)
"""Keys dropped by name: TRADES-era WideResNets (RobustBench ``sub_block1=True``) store an
unused ``sub_block1`` network block that the forward pass never touches."""


def _classifier_key(model: nn.Module) -> str | None:
    """The state_dict key of the last ``nn.Linear``'s weight (the classifier: ``fc`` or ``linear``); ``None``
    for a model without one (an architecture from outside ferd may classify with a convolution)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        return None
    weight = linears[-1].weight
    return next((k for k, v in model.state_dict(keep_vars=True).items() if v is weight), None)


def _restore_prefixes(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Give back a ``module.``/``model.`` prefix that :func:`ferd.core.checkpoint.load_state_dict` stripped where the
    architecture itself has it (a model with a top-level ``model`` attribute)."""
    for key in set(expected) - set(state):
        bare = key
        while bare.startswith(STRIPPED_PREFIXES):
            bare = bare.split(".", 1)[1]
        if bare != key and bare in state and bare not in expected:
            state[key] = state.pop(bare)
    return state


def _listing(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], num_classes: int,
                     where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Drop ignored keys, then require the exact keys and shapes of ``model.state_dict()``.

    Raises ValueError saying expected vs found for a wrong number of classes, and listing
    every missing key, unexpected key and shape mismatch otherwise.
    """
    state = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}
    expected = model.state_dict()
    state = _restore_prefixes(state, expected)
    fc_key = _classifier_key(model)
    if fc_key is not None and fc_key in state and state[fc_key].ndim == 2 and state[fc_key].shape[0] != num_classes:
        raise ValueError(f"{where}: num_classes mismatch: expected {num_classes} classes, found "
                         f"{state[fc_key].shape[0]} rows in {fc_key}")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k}: expected {tuple(expected[k].shape)}, found {tuple(state[k].shape)}"
                    for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {_listing(shapes)}")
    if problems:
        raise ValueError(f"{where}: does not match architecture {type(model).__name__}; " + "; ".join(problems))
    return state


def load_model(path: str | os.PathLike[str], arch: str, num_classes: int,
               mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
               sha256: str | None = None) -> FerdModel:
    """Build ``arch`` (:func:`ferd.models.create_model`: a registered name, an entry point or
    ``module:factory``) and load the checkpoint at ``path`` strictly.

    ``mean``/``std`` add in-model normalisation (``None``: inputs used as they are, like
    RobustBench's CIFAR L∞ models). ``sha256`` is verified before parsing. Returns the
    model on the CPU in ``eval()`` mode with ``requires_grad=False`` on every parameter.
    """
    state = load_state_dict(path, sha256=sha256)
    model = create_model(arch, num_classes=num_classes, mean=mean, std=std)
    state = check_state_dict(model, state, num_classes, where=str(path))
    model.load_state_dict(state, strict=True)
    model.eval()
    model.requires_grad_(False)
    return model
