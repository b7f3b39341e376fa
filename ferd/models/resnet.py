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

from .base import RESNET_BLOCKS, FourStageResNet
from .registry import register_depths


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

    block = BasicBlock
    stem_norm = True

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn1(self.conv1(x)))

    def _classify(self, out: torch.Tensor) -> torch.Tensor:
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


register_depths("resnet", ResNet, RESNET_BLOCKS)
