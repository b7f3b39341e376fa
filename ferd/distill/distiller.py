"""The robust distillation stage of Algorithm 1 (lines 13-17) for one epoch.

Each of the T_s iterations samples a batch x_F uniformly from the pool D, builds UTAEs
x_U (Eq. 10) and takes one SGD step on L_stu (Eq. 11) in train mode. With
``distill.utae.cache: pool`` the batch's x_U (one of the K cached per FAE, drawn at random) and
f^T(x_F) come from the pool (:func:`ferd.distill.utae.cache_utaes`): no teacher pass at all.

``distill.augment`` (default on, every method): the sampled batch is random-cropped (pad 4) and,
where the dataset is flip-invariant, flipped (:func:`ferd.data.augment.crop_flip`) before anything
sees it, as Fast, RSLAD and the authors' code do; the paper is silent. The teacher's logits are
then taken on the augmented view (one teacher pass). With the UTAE cache the cached x_U is moved
by the same crop and flip as its FAE — a whole-pixel move, so it stays in the ε-ball of the
augmented FAE — and the pool's f^T(x_F) (which belongs to the un-augmented view) is not used:
the cache then saves the attack passes but not the one clean teacher pass. Measured against
``distill.augment: false`` in tier 1 (``ferd-no-augment``, README).

LR schedule (the paper gives only the initial 0.1): cosine annealing to 0 over all
T·T_s student iterations, stepped once per iteration (the authors' code anneals with
cosine over all epochs). During the optional warm-up epochs (authors' code: 20
generator-only epochs) the schedule is stepped without training, as in their code.

What the iteration computes from the drawn batch is the run's student side
(:mod:`ferd.distill.side`, chosen by :func:`ferd.plan.resolve.resolve`): Eq. 10-11 (:class:`~ferd.distill.side.UtaeSide`)
or a method's own (DFHL's high-entropy examples, :mod:`ferd.baselines.dfhl`).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from tqdm.auto import tqdm

from ..compute import distributed
from ..core import rng
from ..data.augment import crop_flip
from ..compute.switches import keep_pool_on_device
from ..settings.config import ComputeConfig, DistillConfig
from ..compute.numerics import autocast
from ..core.kill_points import kill_point
from ..data.pool import FaePool
from .side import Draw, StudentSide


class Distiller:
    """Owns the student's optimiser and LR schedule across epochs; ``side`` computes each iteration's loss."""

    def __init__(self, student: nn.Module, cfg: DistillConfig, side: StudentSide, epochs: int, eps: float,
                 step: float, seed: int, device: str | torch.device = "cpu", flip: bool = False,
                 compute: ComputeConfig | None = None) -> None:
        self.student, self.cfg, self.eps, self.step, self.seed, self.device = student, cfg, eps, step, seed, device
        self.side, self.flip = side, flip  # flip: the dataset is flip-invariant (with cfg.augment)
        self.compute = compute or ComputeConfig()
        self._sums: dict[str, torch.Tensor] = {}  # the epoch's loss terms (record)
        self.passes = distributed.data_parallel(student)  # the training passes (DDP under torchrun)
        self.optimizer = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        total = epochs * cfg.iterations
        if cfg.schedule == "cosine":
            lr_lambda = lambda it: 0.5 * (1.0 + math.cos(math.pi * min(it, total) / total))  # noqa: E731
        else:
            lr_lambda = lambda it: 1.0  # noqa: E731
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def augment(self, generator: torch.Generator | None, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``distill.augment``: the same random crop (pad 4) and flip of each tensor; unchanged when off."""
        return xs if generator is None else crop_flip(*xs, padding=4, flip=self.flip, generator=generator)

    def run_epoch(self, teacher: nn.Module, pool: FaePool, epoch: int, progress: bool = False) -> dict[str, float]:
        """T_s iterations (or, in a warm-up epoch, T_s scheduler steps). Returns mean losses."""
        cfg = self.cfg
        if epoch < cfg.warmup_epochs:
            with warnings.catch_warnings():  # stepping the schedule without training is intended here
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(cfg.iterations):
                    self.scheduler.step()
            return {"warmup": 1.0}
        images, _, pool_logits = pool.tensors()
        cached = pool.utaes() if cfg.utae.cache == "pool" else None
        if keep_pool_on_device(self.compute.pool_on_device, self.device, images, pool_logits, cached):
            images, pool_logits = images.to(self.device), pool_logits.to(self.device)
            cached = cached.to(self.device) if cached is not None else None
        self.side.start_epoch(self, teacher)
        sample_rng = rng.generator(self.seed, "pool-sample", epoch)
        attack_rng = rng.generator(self.seed, "utae", epoch)
        augment_rng = rng.generator(self.seed, "augment", epoch) if cfg.augment else None
        total, self._sums = 0.0, {}
        for it in tqdm(range(cfg.iterations), desc=f"epoch {epoch} student", leave=False, disable=not progress):
            with autocast(self.compute.amp, self.device):
                # every draw is made for the global batch; under torchrun each rank keeps its rows (ferd.compute.distributed)
                idx = pool.sample_indices(cfg.batch_size, sample_rng)
                draw = Draw(idx, images[idx], pool_logits, cached, attack_rng, augment_rng)
                loss = self.side.loss(self, teacher, draw, epoch, it)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            total += loss.item()
            kill_point("student.iteration")
        return {"loss": distributed.mean_across(total / cfg.iterations),
                **{k: distributed.mean_across(float(v) / cfg.iterations) for k, v in sorted(self._sums.items())}}

    def record(self, **terms: torch.Tensor) -> None:
        """Add an iteration's loss terms (e.g. the two of Eq. 11) to the epoch's means that :meth:`run_epoch`
        returns beside ``loss``; summed on the device, read once per epoch."""
        for name, value in terms.items():
            value = value.detach().float()
            self._sums[name] = self._sums[name] + value if name in self._sums else value
