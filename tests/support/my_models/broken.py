"""Factories that are wrong in each way ferd refuses (tests/unit/test_arch_spec.py)."""

from __future__ import annotations

from torch import nn

NOT_CALLABLE = 3


def raises(num_classes: int) -> nn.Module:
    raise RuntimeError("no weights for this size\nsecond line")


def not_a_module(num_classes: int) -> list[int]:
    return [num_classes]


def wrong_classes(num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes + 1))


def wrong_input(num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(7, num_classes))
