"""Two architecture factories as a user would write them: ``build`` a :class:`ferd.models.FerdModel` (split
points, so FERD can use it as its teacher), ``plain`` an ordinary ``nn.Sequential`` (a student, or a
baseline's teacher)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ferd.models import FerdModel


class TinyNet(FerdModel):
    """conv(3→8) BN ReLU pool · conv(8→16) BN, then ReLU → global average pool → ``fc``."""

    layer_names = ("block1", "block2")
    default_layer = "block2"

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, num_classes)

    def _features(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        return x if layer == "block1" else self.bn2(self.conv2(x))

    def head(self, z: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        if self.check_layer(layer) == "block1":
            z = self.bn2(self.conv2(z))
        return self.fc(F.adaptive_avg_pool2d(F.relu(z), 1).flatten(1))


def build(num_classes: int) -> TinyNet:
    return TinyNet(num_classes)


def plain(num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
