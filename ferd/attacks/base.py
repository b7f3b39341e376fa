"""The attack interface and its registry, as AutoAttack's attacks are: one small class per attack with one
``perturb(model, x, y, generator)``; the evaluation, the CLI, the config and the reports read
:data:`ATTACKS`. A new attack is one class with :func:`register` (and nothing else).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.registry import Registry


@dataclass(frozen=True)
class ThreatContext:
    """What an attack is built from: the L∞ radius, the PGD step, the evaluation seed and batch size,
    the number of classes and the device."""

    eps: float
    step: float
    seed: int = 0
    num_classes: int = 10
    batch_size: int = 256
    device: str = "cpu"


class Attack:
    """An L∞ attack on a model taking inputs in [0, 1]. ``batched`` attacks are given one evaluation
    batch at a time (and a seeded ``generator`` for their random start); the others the whole set."""

    name: ClassVar[str]
    label: ClassVar[str]
    batched: ClassVar[bool] = True

    def __init__(self, ctx: ThreatContext) -> None:
        self.ctx = ctx

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """The adversarial examples for ``(x, y)``, in [0, 1] and within ε of ``x``."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any] | None:
        """The settings recorded with a result (``settings.json``); None when there are none."""
        return None

    @staticmethod
    def describe(settings: dict[str, Any], eps: float) -> str | None:
        """One line of ``report.md`` from the recorded settings."""
        return None


ATTACKS = Registry("attack")
"""Registered attacks by name, in order of (expected) strength."""
register = ATTACKS.register


def check_attack_names(names: list[str] | tuple[str, ...]) -> list[str]:
    """A non-empty list of distinct registered names (``evaluation.attacks``, ``ferd evaluate --attacks``)."""
    names = list(names)
    if not names or any(n not in ATTACKS for n in names) or len(set(names)) != len(names):
        raise ValueError(f"expected distinct names among {list(ATTACKS)}, got {names}"[:300])
    return names


def build_attack(name: str, ctx: ThreatContext) -> Attack:
    if name not in ATTACKS:
        raise ValueError(f"attacks: expected one of {list(ATTACKS)}, got {name!r}")
    return ATTACKS[name](ctx)


def attack_label(name: str) -> str:
    """The name a table or figure shows (``PGD-20`` for ``pgd20``)."""
    return ATTACKS[name].label if name in ATTACKS else name
