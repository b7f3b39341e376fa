"""Pre-activation ResNet-18 / -34 (He et al., 2016b): the paper's Tiny-ImageNet teacher
(PreActResNet-34) and student (PreActResNet-18), FERD §5.1 and A.5.

Layout of the PreActResNet in RobustBench / Rice et al. ("Overfitting in adversarially
robust deep learning"): ``conv1``, ``layer<k>.<i>.{bn1,conv1,bn2,conv2,shortcut.0}``, a final
``bn`` and ``linear``. 3×3 stem with stride 1, no max-pool; global average pooling makes
it work for 32×32 and 64×64 inputs alike.

Split points for Eq. 4-7: ``layer1`` … ``layer4``; the default ``layer4`` is layer4
followed by the final ``bn`` (pre-ReLU), head = ReLU → global average pool → ``linear``.
For earlier layers the head runs the remaining stages, then ``bn`` → ReLU → pool → linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import RESNET_BLOCKS, FourStageResNet
from .registry import register_depths


class PreActBlock(nn.Module):
    """BN-ReLU-conv ×2; the projection shortcut (when needed) sees the activated input."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut: nn.Sequential | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(FourStageResNet):
    """Pre-activation ResNet with basic blocks; base channels ``width`` (64 by default)."""

    block = PreActBlock
    final_norm = True

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        return self.bn(out)

    def _classify(self, out: torch.Tensor) -> torch.Tensor:
        return self.linear(F.adaptive_avg_pool2d(F.relu(out), 1).flatten(1))


register_depths("preactresnet", PreActResNet, RESNET_BLOCKS)
