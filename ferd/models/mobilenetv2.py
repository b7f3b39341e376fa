"""CIFAR MobileNetV2 (Sandler et al., 2018), the paper's MobileNet-V2 student (FERD §5.1).

The kuangliu ``pytorch-cifar`` variant used by ARD / RSLAD / DFRD code: 3×3 stem with
stride 1 and the CIFAR stride configuration (the second stage has stride 1 instead of 2),
so a 32×32 input ends at 4×4. Key names follow that code (``conv1``, ``bn1``,
``layers.<i>.{conv1,bn1,conv2,bn2,conv3,bn3,shortcut.0,shortcut.1}``, ``conv2``, ``bn2``,
``linear``). ``width`` is the usual width multiplier (channels rounded to multiples of 8;
the last 1×1 conv keeps 1280 channels for ``width <= 1``), 1.0 by default.

Split points for Eq. 4-7, one per row of the inverted-residual configuration plus the
final 1×1 conv: ``stage1`` … ``stage7`` (the output of that stage's last block) and
``conv_last`` (default: the final 1×1 conv followed by its BatchNorm ``bn2``, pre-ReLU;
head = ReLU → global average pool → ``linear``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import FerdModel
from .registry import register_model

# (expansion, out_planes, num_blocks, stride); stride of the second row is 1 for CIFAR.
CFG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _divisible(c: float, divisor: int = 8) -> int:
    """Round ``c`` to the nearest multiple of ``divisor`` (never below 90 % of it, never < divisor)."""
    new = max(divisor, int(c + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * c else new


class Block(nn.Module):
    """Inverted residual: expand 1×1 → depthwise 3×3 → linear 1×1 projection."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_planes != out_planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, bias=False),
                                          nn.BatchNorm2d(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return out + self.shortcut(x) if self.stride == 1 else out


class MobileNetV2(FerdModel):
    """CIFAR MobileNetV2 with width multiplier ``width``."""

    layer_names = ("stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7", "conv_last")
    default_layer = "conv_last"

    def __init__(self, num_classes: int, width: float = 1.0, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None) -> None:
        super().__init__(num_classes, mean, std, width=width)
        stem = _divisible(32 * width)
        self.conv1 = nn.Conv2d(3, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        blocks: list[nn.Module] = []
        ends: list[int] = []  # index (exclusive) in ``layers`` where each stage ends
        in_planes = stem
        for expansion, out, n, stride in CFG:
            out_planes = _divisible(out * width)
            for i in range(n):
                blocks.append(Block(in_planes, out_planes, expansion, stride if i == 0 else 1))
                in_planes = out_planes
            ends.append(len(blocks))
        self.layers = nn.Sequential(*blocks)
        self._stage_ends = tuple(ends)
        last = _divisible(1280 * max(1.0, width))
        self.conv2 = nn.Conv2d(in_planes, last, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(last)
        self.linear = nn.Linear(last, num_classes)
        self.feature_channels = last

    def _run_blocks(self, out: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for block in self.layers[start:stop]:
            out = block(out)
        return out

    def _features(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if layer == "conv_last":
            return self.bn2(self.conv2(self._run_blocks(out, 0, len(self.layers))))
        return self._run_blocks(out, 0, self._stage_ends[self.layer_names.index(layer)])

    def head(self, z: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        layer = self.check_layer(layer)
        out = z
        if layer != "conv_last":
            out = self._run_blocks(out, self._stage_ends[self.layer_names.index(layer)], len(self.layers))
            out = self.bn2(self.conv2(out))
        return self.linear(F.adaptive_avg_pool2d(F.relu(out), 1).flatten(1))


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int, width: float = 1.0, **kwargs: object) -> MobileNetV2:
    """CIFAR MobileNetV2, the paper's MobileNet-V2 student."""
    return MobileNetV2(num_classes, width=width, **kwargs)  # type: ignore[arg-type]
