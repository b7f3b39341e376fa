"""The interface every ferd model implements.

Every model takes images in [0, 1] (N×3×H×W) and returns logits. Mean/std
normalisation, when a checkpoint expects it, lives *inside* the model
(:class:`Normalize` as the first op), so attacks and synthesis always work in
pixel space.

FERD needs the model split at an intermediate layer ``l`` (paper Eq. 4-7):
``features(x, layer)`` returns Z = f_l(x) and ``head(z, layer)`` returns
f_{l+}(Z), with ``head(features(x, l), l) == forward(x)`` exactly.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` with buffers that are *not* saved in the state_dict.

    Keeping them out of the state_dict means checkpoints in the RobustBench /
    TRADES layout (which have no normalisation keys) load unchanged.
    """

    def __init__(self, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.enabled = mean is not None
        if (mean is None) != (std is None):
            raise ValueError("normalization: give both mean and std, or neither")
        m = torch.tensor(mean if mean is not None else (0.0, 0.0, 0.0)).view(1, -1, 1, 1)
        s = torch.tensor(std if std is not None else (1.0, 1.0, 1.0)).view(1, -1, 1, 1)
        if (s <= 0).any():
            raise ValueError(f"normalization.std: expected every value > 0, got {std}")
        self.register_buffer("mean", m, persistent=False)
        self.register_buffer("std", s, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return (x - self.mean) / self.std


RESNET_BLOCKS: dict[int, tuple[int, int, int, int]] = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
"""Basic blocks per stage of a ResNet of each depth (He et al., 2016), pre-activation or not."""


def residual_stages(block: type[nn.Module], num_blocks: tuple[int, ...], width: int) -> tuple[list[nn.Sequential], int]:
    """The four stages of a CIFAR (pre-activation) ResNet: ``num_blocks[k]`` blocks of ``width·2^k`` channels,
    stride 2 at the start of every stage but the first. Returns the stages and their output channels."""
    in_planes, stages = width, []
    for k, (n, stride) in enumerate(zip(num_blocks, (1, 2, 2, 2))):
        planes = width * 2 ** k
        blocks = []
        for i in range(n):
            blocks.append(block(in_planes, planes, stride if i == 0 else 1))
            in_planes = planes
        stages.append(nn.Sequential(*blocks))
    return stages, in_planes


W = TypeVar("W", int, float)


def check_width(width: W) -> W:
    """``width`` (channels, or a multiplier) when positive; a one-line ValueError naming it otherwise."""
    if width <= 0:
        raise ValueError(f"width: expected a positive {'integer' if isinstance(width, int) else 'multiplier'}, "
                         f"got {width}")
    return width


class FerdModel(nn.Module):
    """Base class: ``forward = head ∘ features`` at any named layer.

    Subclasses define ``layer_names`` (ordered, shallow to deep),
    ``default_layer`` (the last conv block, §5.1) and implement
    ``_features(x_normalised, layer)`` and ``head(z, layer)``.
    """

    layer_names: tuple[str, ...] = ()
    default_layer: str = ""

    def __init__(self, num_classes: int, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None, width: float | None = None) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes}")
        if width is not None:
            check_width(width)
        self.num_classes = num_classes
        if width is not None:
            self.width = width
        self.normalize = Normalize(mean, std)

    def check_layer(self, layer: str | None) -> str:
        layer = layer or self.default_layer
        if layer not in self.layer_names:
            raise ValueError(f"layer: expected one of {list(self.layer_names)}, got {layer!r}")
        return layer

    def features(self, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        """Z = f_l(x) for images ``x`` in [0, 1] (Eq. 4)."""
        return self._features(self.normalize(x), self.check_layer(layer))

    def _features(self, x: torch.Tensor, layer: str) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def head(self, z: torch.Tensor, layer: str | None = None) -> torch.Tensor:  # pragma: no cover - abstract
        """f_{l+}(Z): from the feature map of ``layer`` to the logits (Eq. 5, 7)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer_names[-1]
        return self.head(self.features(x, layer), layer)


class StagedModel(FerdModel):
    """A network that is a stem, a sequence of stages (one per name in ``layer_names``), a final
    normalisation after the last stage (pre-activation nets; identity otherwise) and a classifier.
    ``_features`` and ``head`` split it at any stage; subclasses give the four parts."""

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def _stage_list(self) -> list[nn.Module]:
        raise NotImplementedError  # pragma: no cover - abstract

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        return out

    def _classify(self, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError  # pragma: no cover - abstract

    def _features(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        idx = self.layer_names.index(layer)
        out = self._stem(x)
        for stage in self._stage_list()[: idx + 1]:
            out = stage(out)
        return self._finish(out) if idx == len(self.layer_names) - 1 else out

    def head(self, z: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        idx = self.layer_names.index(self.check_layer(layer))
        out = z
        if idx < len(self.layer_names) - 1:
            for stage in self._stage_list()[idx + 1:]:
                out = stage(out)
            out = self._finish(out)
        return self._classify(out)


class FourStageResNet(StagedModel):
    """A CIFAR (pre-activation) ResNet's split points: its four stages ``layer1``-``layer4``."""

    layer_names = ("layer1", "layer2", "layer3", "layer4")
    default_layer = "layer4"
    block: type[nn.Module]
    """The residual block of every stage."""
    stem_norm: bool = False
    """A BatchNorm ``bn1`` after the stem convolution (standard ResNet)."""
    final_norm: bool = False
    """A BatchNorm ``bn`` after the last stage (pre-activation ResNet)."""

    def __init__(self, num_classes: int, num_blocks: tuple[int, ...] = RESNET_BLOCKS[18], width: int = 64,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> None:
        super().__init__(num_classes, mean, std, width=width)
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        if self.stem_norm:
            self.bn1 = nn.BatchNorm2d(width)
        stages, in_planes = residual_stages(self.block, num_blocks, width)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        if self.final_norm:
            self.bn = nn.BatchNorm2d(in_planes)
        self.linear = nn.Linear(in_planes, num_classes)
        self.feature_channels = in_planes

    def _stage_list(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

