"""The interface of a baseline's generation stage (as zju-vipa ``datafree``'s ``BaseSynthesis``): one module
per baseline (:mod:`.deepinv`, :mod:`.cmi`, :mod:`.fast`, :mod:`.zskt`, :mod:`.dfhl`) subclasses
:class:`BaselineMethod` and registers it in the one registry of methods (:data:`ferd.method.METHODS`);
:class:`.synthesis.BaselineSynthesizer` runs any of them with the same loop. A new baseline is one module
plus its config class (:mod:`.config`, the group ``baseline.<name>``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from .. import rng
from ..method import METHODS, Method
from ..synthesis.generator import Generator
from .synthesis import BaselineSynthesizer, SynthesisContext

Objective = tuple[torch.Tensor, dict[str, float], "torch.Tensor | None", Any]
"""(loss, its terms, the teacher's logits on the batch or None, what :meth:`BaselineMethod.after_epoch` needs)"""


def value(t: torch.Tensor | float) -> float:
    """A loss term as a float for the records."""
    return float(t.detach()) if isinstance(t, torch.Tensor) else float(t)


class BaselineMethod(Method):
    """One baseline's generation: what it keeps across epochs, how an epoch starts, its objective, and the
    few steps around the shared optimiser step. ``relabel_by_teacher``: the pool takes the teacher's top-1
    (ZSKT, DFHL) instead of the drawn labels. No baseline reweights (§3: labels are drawn from a uniform p).
    Its student side is A.8's conversion unless it says ``own`` (:mod:`ferd.method`); it reads
    ``baseline.robust`` and its own group ``baseline.<name>``."""

    relabel_by_teacher: ClassVar[bool] = False
    persistent_generator: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and "groups" not in cls.__dict__:
            cls.groups = ("baseline.robust", f"baseline.{cls.name}")

    @classmethod
    def synthesizer(cls, plan, num_classes: int, img_size: int) -> BaselineSynthesizer:
        cfg = plan.cfg
        return BaselineSynthesizer(cls, plan.synthesis, cfg.baseline, num_classes, img_size, cfg.seed, cfg.device,
                                   amp=cfg.compute.amp)

    def __init__(self, ctx: SynthesisContext) -> None:
        self.ctx = ctx
        self.generator: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        if self.persistent_generator:
            g = ctx.cfg.generator
            with rng.seeded(ctx.seed, "generator"):
                self.generator = Generator(nz=g.nz, ngf=g.ngf, img_size=ctx.img_size).to(ctx.device)

    # ---- state across rounds ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        out: dict = {}
        if self.generator is not None:
            out["generator"] = self.generator.state_dict()
        if self.optimizer is not None:
            out["optimizer"] = self.optimizer.state_dict()
        return out

    def load_state_dict(self, state: dict) -> None:
        if "generator" in state:
            self.generator.load_state_dict(state["generator"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])

    # ---- one epoch ---------------------------------------------------------------------------------
    def start_epoch(self, epoch: int, latent: torch.Generator
                    ) -> tuple[Callable[[], torch.Tensor], torch.optim.Optimizer]:
        """What produces the batch this epoch, and the optimiser of its steps."""
        raise NotImplementedError

    def objective(self, x: torch.Tensor, labels: torch.Tensor, teacher: nn.Module, student: nn.Module,
                  bn: Any, aug: torch.Generator, epoch: int) -> Objective:
        raise NotImplementedError

    def zero_grad(self) -> None:
        """Beside the step optimiser's ``zero_grad``."""

    def after_backward(self) -> None:
        """Between ``backward`` and the optimiser step."""

    def after_step(self) -> None:
        """After the optimiser step."""

    def end_epoch(self, teacher: nn.Module, best_x: torch.Tensor, bn: Any, aug: torch.Generator) -> None:
        """After the last step, BatchNorm hooks still on."""

    def after_epoch(self, last_stats: Any) -> None:
        """After the epoch, hooks off."""


register = METHODS.register
