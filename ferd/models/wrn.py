"""WideResNet (Zagoruyko & Komodakis, 2016) in the TRADES / RobustBench state_dict layout.

The paper's CIFAR teachers are WRN-34-10 (FERD §5.1); the shared checkpoint is a
WRN-16-2. Module names follow the TRADES ``wideresnet.py`` that RobustBench builds its
``WideResNet(depth, widen_factor)`` from, so their checkpoints load with strict key
matching: ``conv1``, ``block{1,2,3}.layer.<i>.{bn1,conv1,bn2,conv2,convShortcut}``,
``bn1``, ``fc``. (``relu1``/``relu2`` exist in the reference code but hold no parameters.)
Dropout is 0, as in every robust checkpoint we load.

Split points for Eq. 4-7 (``features`` / ``head``):

* ``block1`` / ``block2``: the output of that network block; the head runs the remaining
  blocks, then ``bn1`` → ReLU → global average pool → ``fc``.
* ``block3`` (default, "the last convolutional layer", §5.1 and A.9.1): ``block3`` followed
  by the final ``bn1`` (pre-ReLU), as in the authors' code; the head is ReLU → pool → ``fc``.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from .base import StagedModel, check_width
from .registry import register_pattern


class BasicBlock(nn.Module):
    """Pre-activation wide basic block (TRADES layout)."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.convShortcut = (None if self.equal_in_out
                             else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        # TRADES: when shapes differ, the shortcut sees the *activated* input.
        shortcut = x if self.convShortcut is None else self.convShortcut(act)
        return shortcut + out


class NetworkBlock(nn.Module):
    """``nb_layers`` basic blocks; the first one changes width/stride (keys ``layer.<i>``)."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
            for i in range(nb_layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(StagedModel):
    """WRN-``depth``-``width`` for 32×32 (or larger) inputs in [0, 1]."""

    layer_names = ("block1", "block2", "block3")
    default_layer = "block3"

    def __init__(self, num_classes: int, depth: int = 34, width: int = 10,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> None:
        super().__init__(num_classes, mean, std, width=width)
        self.depth = depth
        n = blocks_per_stage(depth)
        ch = [16, 16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(ch[3], num_classes)
        self.feature_channels = ch[3]
        for m in self.modules():  # the TRADES initialisation
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(x)

    def _stage_list(self) -> list[nn.Module]:
        return [self.block1, self.block2, self.block3]

    def _finish(self, out: torch.Tensor) -> torch.Tensor:
        return self.bn1(out)

    def _classify(self, out: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.relu(out), 1).flatten(1))


def blocks_per_stage(depth: int) -> int:
    """The n of a WRN of ``depth`` = 6n + 4 (n ≥ 1); a one-line ValueError naming the depth otherwise."""
    if depth < 10 or (depth - 4) % 6 != 0:
        raise ValueError(f"depth: expected 6n+4 with n >= 1 (10, 16, 22, 28, 34, ...), got {depth}")
    return (depth - 4) // 6


def _numbers(m: re.Match[str]) -> dict[str, int]:
    depth, width = int(m.group(1)), int(m.group(2))
    blocks_per_stage(depth)
    return {"depth": depth, "width": check_width(width)}


@register_pattern(r"wrn-(\d+)-(\d+)", _numbers,
                  example="wrn-<depth>-<width>")
def wrn(num_classes: int, depth: int, width: int, **kwargs: object) -> WideResNet:
    """``wrn-34-10`` (paper teacher), ``wrn-16-2`` (shared teacher), ``wrn-10-1`` (tests)."""
    return WideResNet(num_classes, depth=depth, width=width, **kwargs)  # type: ignore[arg-type]

