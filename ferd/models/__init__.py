"""Model zoo: every architecture registers itself by name on import.

``create_model("wrn-34-10", num_classes=10)``; see :mod:`ferd.models.registry`. A name may also be a
``package.module:factory`` or a ``ferd.models`` entry point (:mod:`ferd.models.foreign`). Every
model is a :class:`FerdModel` taking [0, 1] images and splitting at named layers for
FERD Eq. 4-7 (``features`` / ``head``).
"""

from __future__ import annotations

import torch
from torch import nn

from . import cnn, mobilenetv2, preactresnet, resnet, wrn  # noqa: F401  (registration)
from .base import FerdModel, Normalize
from .foreign import ForeignModel
from .registry import (PLAIN_NAME, check_arch, check_split, create_model, is_builtin, is_known_model, list_models,
                       register_model, register_pattern)

__all__ = ["FerdModel", "ForeignModel", "Normalize", "PLAIN_NAME", "check_arch", "check_split", "count_macs",
           "create_model", "is_builtin", "is_known_model", "list_models", "register_model", "register_pattern"]


def count_macs(model: nn.Module, input_shape: tuple[int, ...] = (1, 3, 32, 32)) -> int:
    """Multiply-accumulates of one forward pass on a zero tensor of ``input_shape``.

    Counted with forward hooks on ``nn.Conv2d`` and ``nn.Linear`` only:
    conv = output elements × in_channels / groups × kh × kw; linear = in × out per row
    (× the rows of the input). Biases, BatchNorm, ReLU, pooling and normalisation are not
    counted. The batch dimension is included, so the default shape gives MACs per image.
    The model runs in ``eval()`` under ``no_grad`` and its train/eval mode is restored.
    """
    total = 0

    def conv_hook(m: nn.Conv2d, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, inp: tuple[torch.Tensor, ...], _out: torch.Tensor) -> None:
        nonlocal total
        total += inp[0].numel() // m.in_features * m.in_features * m.out_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)
