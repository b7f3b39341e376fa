"""A small, fast CNN for the embedded CPU task (digits): teacher ``cnn-32``, student ``cnn-16``.

Not in the paper; it exists so the whole FERD pipeline runs in minutes on a laptop CPU.
``cnn-<w>``: conv3×3(3→w) BN ReLU maxpool2 · conv3×3(w→2w) BN ReLU maxpool2 ·
conv3×3(2w→4w) BN, then the head ReLU → global average pool → ``fc``
(``cnn-32`` ≈ 0.094 M parameters, the CNN measured in the evaluation notes).

Split points for Eq. 4-7: ``block1`` / ``block2`` are the pooled outputs of the first two
conv blocks; ``block3`` (default, the last conv block, §5.1) is conv3 → bn3, pre-ReLU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import FerdModel, check_width
from .registry import register_pattern


class SmallCNN(FerdModel):
    """Three conv-BN blocks of width w, 2w, 4w."""

    layer_names = ("block1", "block2", "block3")
    default_layer = "block3"

    def __init__(self, num_classes: int, width: int = 32, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None) -> None:
        super().__init__(num_classes, mean, std, width=width)
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.conv3 = nn.Conv2d(2 * width, 4 * width, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * width)
        self.fc = nn.Linear(4 * width, num_classes)
        self.feature_channels = 4 * width

    def _block(self, k: int, x: torch.Tensor) -> torch.Tensor:
        if k == 0:
            return F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        if k == 1:
            return F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        return self.bn3(self.conv3(x))

    def _features(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        for k in range(self.layer_names.index(layer) + 1):
            x = self._block(k, x)
        return x

    def head(self, z: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        for k in range(self.layer_names.index(self.check_layer(layer)) + 1, len(self.layer_names)):
            z = self._block(k, z)
        return self.fc(F.adaptive_avg_pool2d(F.relu(z), 1).flatten(1))


@register_pattern(r"cnn-(\d+)", lambda m: {"width": check_width(int(m.group(1)))}, example="cnn-<width>")
def cnn(num_classes: int, width: int, **kwargs: object) -> SmallCNN:
    """``cnn-32`` (embedded teacher), ``cnn-16`` (embedded student)."""
    return SmallCNN(num_classes, width=width, **kwargs)  # type: ignore[arg-type]
