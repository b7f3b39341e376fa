"""The robust distillation stage of Algorithm 1 (lines 13-17) for one epoch.

Each of the T_s iterations samples a batch x_F uniformly from the pool D, builds UTAEs
x_U (Eq. 10) and takes one SGD step on L_stu (Eq. 11) in train mode. With
``distill.utae.cache: pool`` the batch's x_U (one of the K cached per FAE, drawn at random) and
f^T(x_F) come from the pool (:func:`ferd.distill.utae.cache_utaes`): no teacher pass at all.

``distill.augment`` (default on, every method): the sampled batch is random-cropped (pad 4) and,
where the dataset is flip-invariant, flipped (:func:`ferd.augment.crop_flip`) before anything
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

``hee`` (``method: dfhl``): DFHL's own robust distillation replaces Eq. 10-11: each pool batch
becomes high-entropy examples of the student (:func:`ferd.baselines.losses.high_entropy_examples`,
student in eval mode), the teacher labels them with its top-1 only (a hard-label query), and the
student takes a step on CE(f^S(x_hee), y) (LetheSec/DFHL-RS-Attack ``train.py``).
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import distributed, rng
from ..baselines.config import DfhlConfig
from ..augment import crop_flip
from ..baselines.losses import hee_start, high_entropy_examples
from ..compute import attack_model, keep_pool_on_device
from ..config import ComputeConfig, DistillConfig
from ..divergence import kl_logits
from ..numerics import NonFiniteLoss, autocast
from ..pool import FaePool
from .loss import robust_distillation_loss
from .utae import generate_utae, utae_start


class Distiller:
    """Owns the student's optimiser and LR schedule across epochs."""

    def __init__(self, student: nn.Module, cfg: DistillConfig, epochs: int, eps: float, step: float, seed: int,
                 device: str | torch.device = "cpu", hee: DfhlConfig | None = None, flip: bool = False,
                 compute: ComputeConfig | None = None) -> None:
        self.student, self.cfg, self.eps, self.step, self.seed, self.device = student, cfg, eps, step, seed, device
        self.hee, self.flip = hee, flip  # flip: the dataset is flip-invariant (with cfg.augment)
        self.compute = compute or ComputeConfig()
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
        attacker = attack_model(teacher, self.compute) if cfg.utae.target == "teacher" else self.student
        sample_rng = rng.generator(self.seed, "pool-sample", epoch)
        attack_rng = rng.generator(self.seed, "utae", epoch)
        augment_rng = rng.generator(self.seed, "augment", epoch) if cfg.augment else None
        gamma = cfg.utae.effective_gamma
        total = 0.0
        for it in tqdm(range(cfg.iterations), desc=f"epoch {epoch} student", leave=False, disable=not progress):
            with autocast(self.compute.amp, self.device):
                loss = self._iteration(teacher, attacker, pool, images, pool_logits, cached, sample_rng, attack_rng,
                                       augment_rng, gamma, epoch, it)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            total += loss.item()
        return {"loss": distributed.mean_across(total / cfg.iterations)}

    def _iteration(self, teacher: nn.Module, attacker: nn.Module, pool: FaePool, images: torch.Tensor,
                   pool_logits: torch.Tensor, cached: torch.Tensor | None, sample_rng: torch.Generator,
                   attack_rng: torch.Generator, augment_rng: torch.Generator | None, gamma: float, epoch: int,
                   it: int) -> torch.Tensor:
        """One student iteration's forward part: sample x_F (augmented), build x_U, return L_stu (Eq. 11)."""
        cfg, utae, student = self.cfg, self.cfg.utae, self.student
        # every draw is made for the global batch; under torchrun each rank keeps its rows (ferd.distributed)
        idx = pool.sample_indices(cfg.batch_size, sample_rng)
        x_f = images[idx]
        if cached is not None:  # (x_F, x_U, f^T(x_F)) from the pool: only the two student passes remain
            k = torch.randint(0, cached.shape[1], (idx.shape[0],), generator=attack_rng)
            x_u, t_logits = cached[idx, k], pool_logits[idx]
            if augment_rng is not None:
                x_f, x_u = crop_flip(x_f, x_u, padding=4, flip=self.flip, generator=augment_rng)
            x_f, x_u, t_logits = (t.to(self.device) for t in distributed.shard(x_f, x_u, t_logits))
            if augment_rng is not None:
                with torch.no_grad():
                    t_logits = teacher(x_f)
        else:
            if augment_rng is not None:
                (x_f,) = crop_flip(x_f, padding=4, flip=self.flip, generator=augment_rng)
            if self.hee is not None:
                (start,) = distributed.shard(hee_start(x_f, attack_rng))  # HEEs start from noisy x_F alone
                return self._hee_iteration(teacher, start.to(self.device), epoch, it)
            start = utae_start(x_f, self.eps, utae.random_start, attack_rng)
            x_f, start = (t.to(self.device) for t in distributed.shard(x_f, start))
            with torch.no_grad():
                t_logits = teacher(x_f)
            student.eval()  # attacker: the teacher (BN-folded with compute.fold_bn) or the student
            x_u = generate_utae(attacker, x_f, t_logits, eps=self.eps, alpha=self.step, steps=utae.steps,
                                gamma=gamma, start=start)
        student.train()
        s_clean, s_adv = self.passes(x_f, x_u)  # two passes, as RSLAD (BatchNorm sees each batch)
        loss = robust_distillation_loss(t_logits, s_clean, s_adv, cfg.lambda1, cfg.lambda2)
        if not torch.isfinite(loss):
            raise NonFiniteLoss("distillation", epoch, it, {
                "kl_clean": float(cfg.lambda1 * kl_logits(t_logits, s_clean)),
                "kl_adv": float(cfg.lambda2 * kl_logits(t_logits, s_adv)), "total": float(loss)},
                {"fae": x_f, "utae": x_u, "teacher_logits": t_logits, "student_clean_logits": s_clean,
                 "student_adv_logits": s_adv})
        return loss

    def _hee_iteration(self, teacher: nn.Module, start: torch.Tensor, epoch: int, it: int) -> torch.Tensor:
        """DFHL: CE(f^S(x_hee), argmax f^T(x_hee)) on the student's high-entropy examples from ``start``."""
        student = self.student
        student.eval()
        x_h = high_entropy_examples(student, start, steps=self.hee.hee_steps, step=self.hee.hee_step)
        with torch.no_grad():
            y = teacher(x_h).argmax(1)
        student.train()
        (logits,) = self.passes(x_h)
        loss = nn.functional.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            raise NonFiniteLoss("distillation", epoch, it, {"ce_hee": float(loss)}, {"hee": x_h, "labels": y})
        return loss
