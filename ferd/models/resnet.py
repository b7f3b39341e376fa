"""CIFAR ResNet-18 / ResNet-34 (He et al., 2016), the paper's ResNet-18 student (FERD §5.1).

CIFAR variant as in the kuangliu ``pytorch-cifar`` code that ARD / RSLAD / RobustBench use:
3×3 stem convolution with stride 1, no max-pool, four stages of basic blocks with base
width ``width`` (64 by default) doubling at each stage. Key names follow that code
(``conv1``, ``bn1``, ``layer<k>.<i>.{conv1,bn1,conv2,bn2,shortcut.0,shortcut.1}``,
``linear``) so its checkpoints load unchanged.

Split points for Eq. 4-7: ``layer1`` … ``layer4`` (default ``layer4``, the last conv
block). A standard ResNet has no final BatchNorm and every basic block ends with a ReLU,
so the ``layer4`` feature is already post-ReLU and its head is global average pool →
``linear`` (no extra ReLU: it would be the identity). For earlier layers the head runs
the remaining stages first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import FourStageResNet, residual_stages
from .registry import register_model


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN pairs with a (projection) shortcut; ReLU after the sum."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(FourStageResNet):
    """CIFAR ResNet with basic blocks; ``num_blocks`` per stage, base channels ``width``."""

    def __init__(self, num_classes: int, num_blocks: tuple[int, int, int, int] = (2, 2, 2, 2),
                 width: int = 64, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None) -> None:
        super().__init__(num_classes, mean, std, width=width)
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, in_planes = residual_stages(BasicBlock, num_blocks, width)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(in_planes, num_classes)
        self.feature_channels = in_planes

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))

    def _classify(self, out: torch.Tensor) -> torch.Tensor:
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model("resnet18")
def resnet18(num_classes: int, width: int = 64, **kwargs: object) -> ResNet:
    """ResNet-18 (2-2-2-2 basic blocks), the paper's CIFAR student."""
    return ResNet(num_classes, (2, 2, 2, 2), width=width, **kwargs)  # type: ignore[arg-type]


@register_model("resnet34")
def resnet34(num_classes: int, width: int = 64, **kwargs: object) -> ResNet:
    """ResNet-34 (3-4-6-3 basic blocks)."""
    return ResNet(num_classes, (3, 4, 6, 3), width=width, **kwargs)  # type: ignore[arg-type]
