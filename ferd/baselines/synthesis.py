"""The generation stage of the paper's baselines (``method: deepinv | cmi | fast | zskt | dfhl``).

Same contract as FERD's :class:`ferd.synthesis.stage.Synthesizer`: each epoch draws labels from p
(uniform: the baselines do not reweight, §3 of the paper), takes ``synthesis.iterations`` steps and
returns the lowest-loss batch, which the caller adds to the pool. What differs is the generator and
its objective, per reference (``../shared/notes/baselines.md``; losses in :mod:`.losses`):

=========  ======================================================================================
deepinv    no generator: the pixels themselves, Adam (β = 0.5, 0.99), jitter (roll ± 4 px + flip),
           clamped to [0, 1] after each step; bn·L_BN + oh·CE − adv·JS + tv·TV₁ + l2·‖x‖₂.
cmi        a generator re-initialised every epoch (N(0, 0.02) weights) with a learnable z;
           bn·L_BN + oh·CE − adv·masked KL + cr·L_cr on a global (crop + flip) and a local
           (resized crop) view; features = per-sample channel means of every teacher BN input;
           a persistent projection head and a FIFO bank of kept batches' features.
fast       a persistent meta-generator; each epoch a clone with a fresh learnable z takes the
           steps, and the sum of its gradients updates the meta-generator (FOMAML, Adam with
           lr·steps); bn·L_BN^mmt + oh·CE − adv·masked KL on a crop + flip view.
zskt       a persistent generator, a fresh z every step, one Adam step on −KL(T‖S) ('mean'
           reduction), gradient-norm clip 5; pool labels are the teacher's top-1.
dfhl       a persistent generator, a fresh learnable z and a fresh Adam every epoch, student only
           (eval): KL(ỹ‖p_S) + 3·Σ p̄ log₁₀ p̄ on a crop + flip view; pool labels are the
           teacher's top-1 (a hard-label query, as DFHL keeps them).
=========  ======================================================================================

Deviations shared by all, stated once: generators end in a Sigmoid so samples are images in
[0, 1] (ZSKT's ends in BN(3), unbounded; PGD needs a box); the kept batch is the lowest-loss
iterate (the datafree DeepInversion keeps the last one through an in-place view, a bug);
augmentations are :mod:`.views` (seeded, differentiable); DFHL's ``strong_aug`` is not used.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .. import rng
from ..config import SynthesisConfig
from ..models import FerdModel
from ..numerics import autocast, check_finite_loss
from ..synthesis.generator import Generator
from ..synthesis.losses import BatchNormStatistics, bn_batch_statistics
from ..synthesis.stage import EpochSynthesis, collapse_run, frozen_student
from .config import BaselineConfig
from .losses import (contrastive_loss, deepinversion_loss, dfhl_generator_loss, masked_adversarial_kl,
                     momentum_bn_loss, zskt_generator_loss)
from .views import crop_flip, resized_crop_flip, roll_flip


def _f(t: torch.Tensor | float) -> float:
    return float(t.detach()) if isinstance(t, torch.Tensor) else float(t)


def channel_means(bn_inputs: list[torch.Tensor]) -> torch.Tensor:
    """CMI's feature: each sample's channel means at every BN input, concatenated (N × Σ channels)."""
    return torch.cat([a.mean(dim=(2, 3)) for a in bn_inputs], dim=1)


def _cmi_init(gen: nn.Module) -> None:
    """CMI's re-initialisation: conv/linear weights N(0, 0.02), BN γ N(1, 0.02), biases 0."""
    for m in gen.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class BaselineSynthesizer:
    """Owns whatever a baseline keeps across epochs (generator, optimiser, CMI head and bank, Fast's EMA)."""

    def __init__(self, method: str, cfg: SynthesisConfig, baseline: BaselineConfig, num_classes: int,
                 img_size: int, seed: int, device: str | torch.device = "cpu", amp: str = "fp32") -> None:
        self.method, self.cfg, self.b = method, cfg, baseline
        self.num_classes, self.img_size, self.seed, self.device = num_classes, img_size, seed, device
        self.amp = amp  # compute.amp
        g = cfg.generator
        self.generator: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        if method in ("fast", "zskt", "dfhl"):
            with rng.seeded(seed, "generator"):
                self.generator = Generator(nz=g.nz, ngf=g.ngf, img_size=img_size).to(device)
        if method == "fast":  # FOMAML: the summed clone gradients, at lr_g · inner steps
            self.optimizer = torch.optim.Adam(self.generator.parameters(),
                                              lr=baseline.fast.meta_lr or baseline.fast.lr * cfg.iterations,
                                              betas=(g.beta1, g.beta2))
        elif method == "zskt":
            self.optimizer = torch.optim.Adam(self.generator.parameters(), lr=baseline.zskt.lr)
        self.head: nn.Module | None = None  # CMI, built at the first epoch (its width is the teacher's)
        self.head_optimizer: torch.optim.Optimizer | None = None
        self.bank = torch.empty(0)
        self.ema: list[tuple[torch.Tensor, torch.Tensor]] = []  # Fast's BN statistics EMA
        self._pending_head: dict | None = None

    # ---- state across rounds -------------------------------------------------------------------
    def state_dict(self) -> dict:
        out: dict = {}
        if self.generator is not None:
            out["generator"] = self.generator.state_dict()
        if self.optimizer is not None:
            out["optimizer"] = self.optimizer.state_dict()
        if self.head is not None:
            out["head"] = {"model": self.head.state_dict(), "optimizer": self.head_optimizer.state_dict()}
            out["bank"] = self.bank
        if self.ema:
            out["ema_mean"] = [m for m, _ in self.ema]
            out["ema_var"] = [v for _, v in self.ema]
        return out

    def load_state_dict(self, state: dict) -> None:
        if "generator" in state:
            self.generator.load_state_dict(state["generator"])
        if "optimizer" in state:
            self.optimizer.load_state_dict(state["optimizer"])
        if "head" in state:
            self._pending_head, self.bank = state["head"], state["bank"]
        if "ema_mean" in state:
            self.ema = list(zip(state["ema_mean"], state["ema_var"]))

    def _ensure_head(self, dim: int) -> None:
        if self.head is None:
            c = self.b.cmi
            with rng.seeded(self.seed, "cmi-head"):
                self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True),
                                          nn.Linear(dim, c.head_dim)).to(self.device)
            self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=c.lr, betas=(0.5, 0.999))
            if self._pending_head is not None:
                self.head.load_state_dict(self._pending_head["model"])
                self.head_optimizer.load_state_dict(self._pending_head["optimizer"])
                self._pending_head = None

    # ---- one epoch -----------------------------------------------------------------------------
    def run_epoch(self, teacher: FerdModel, student: nn.Module, p: torch.Tensor, epoch: int,
                  progress: bool = False) -> EpochSynthesis:
        """``synthesis.iterations`` steps of the method's objective; returns the lowest-loss batch."""
        cfg, g = self.cfg, self.cfg.generator
        labels = torch.multinomial(p.double().cpu(), cfg.batch_size, replacement=True,
                                   generator=rng.generator(self.seed, "labels", epoch)).to(self.device)
        latent = rng.generator(self.seed, "latent", epoch)
        aug = rng.generator(self.seed, "views", epoch)
        n, m = cfg.batch_size, self.method
        clone, grad_sum = None, None
        if m == "deepinv":
            x_param = (0.5 + 0.25 * torch.randn((n, 3, self.img_size, self.img_size), generator=latent))
            x_param = x_param.clamp(0, 1).to(self.device).requires_grad_(True)
            opt = torch.optim.Adam([x_param], lr=self.b.deepinv.lr, betas=(0.5, 0.99))
            synthesize = lambda: x_param  # noqa: E731
        elif m == "zskt":
            opt = self.optimizer
            synthesize = lambda: self.generator(torch.randn((n, g.nz), generator=latent).to(self.device))  # noqa: E731
        else:
            z = torch.randn((n, g.nz), generator=latent).to(self.device).requires_grad_(True)
            if m == "cmi":
                with rng.seeded(self.seed, "generator", epoch):
                    gen = Generator(nz=g.nz, ngf=g.ngf, img_size=self.img_size)
                    _cmi_init(gen)  # on the CPU, under the seed (a CUDA init would use the CUDA RNG)
                gen = gen.to(self.device)
                opt = torch.optim.Adam([*gen.parameters(), z], lr=self.b.cmi.lr, betas=(0.5, 0.999))
            elif m == "fast":
                self._maybe_reset_l0(epoch)
                gen = clone = copy.deepcopy(self.generator)
                grad_sum = [torch.zeros_like(q) for q in clone.parameters()]
                opt = torch.optim.Adam([{"params": clone.parameters()}, {"params": [z], "lr": self.b.fast.lr_z}],
                                       lr=self.b.fast.lr, betas=(g.beta1, g.beta2))
            else:  # dfhl: fresh z and a fresh Adam every epoch
                gen = self.generator
                opt = torch.optim.Adam([{"params": gen.parameters()}, {"params": [z], "lr": self.b.dfhl.lr_z}],
                                       lr=self.b.dfhl.lr, betas=(g.beta1, g.beta2))
            gen.train()
            synthesize = lambda: gen(z)  # noqa: E731
        if self.generator is not None:
            self.generator.train()
        objective = getattr(self, f"_loss_{m}")
        best_loss, best_x, best_terms, last_terms = float("inf"), None, {}, {}
        run, collapse_iters, share, last_stats = 0, 0, 0.0, None
        history: list[dict[str, float]] = []
        with (frozen_student(student), BatchNormStatistics(teacher) as bn_stats,
              autocast(self.amp, self.device)):
            for it in tqdm(range(cfg.iterations), desc=f"epoch {epoch} {m} generator", leave=False,
                           disable=not progress):
                x = synthesize()
                loss, terms, t_logits, last_stats = objective(x, labels, teacher, student, bn_stats, aug, epoch)
                check_finite_loss(loss, "synthesis", epoch, it, terms, {"images": x, "labels": labels})
                kept = x.detach().float().clone()
                opt.zero_grad(set_to_none=True)
                if self.head_optimizer is not None:
                    self.head_optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if m == "zskt":
                    nn.utils.clip_grad_norm_(self.generator.parameters(), self.b.zskt.grad_clip)
                if grad_sum is not None:
                    for s, q in zip(grad_sum, clone.parameters()):
                        if q.grad is not None:
                            s += q.grad
                opt.step()
                if m == "cmi":
                    self.head_optimizer.step()
                if m == "deepinv":
                    with torch.no_grad():
                        x_param.clamp_(0, 1)
                last_terms = {**terms, "gen": loss.item()}
                history.append(last_terms)
                if t_logits is not None:
                    share, run = collapse_run(t_logits, self.num_classes, run)
                    collapse_iters = max(collapse_iters, run)
                if loss.item() < best_loss:
                    best_loss, best_x, best_terms = loss.item(), kept, last_terms
            if m == "cmi":
                self._bank_append(teacher, best_x, bn_stats, aug)
        if m == "fast":
            self._meta_step(grad_sum, last_stats)
        if m in ("zskt", "dfhl"):  # unconditional or student-only: the teacher labels the kept batch
            with torch.no_grad():
                labels = teacher(best_x).argmax(1)
        return EpochSynthesis(images=best_x, labels=labels, best_loss=best_loss, best_terms=best_terms,
                              last_terms=last_terms, teacher_top1_share=share, collapse_iterations=collapse_iters,
                              history=history)

    # ---- objectives: (loss, terms, teacher logits or None, BN statistics for Fast's EMA) ---------
    def _loss_deepinv(self, x, labels, teacher, student, bn_stats, aug, epoch):
        d = self.b.deepinv
        xv = roll_flip(x, d.jitter, aug)
        t, s = teacher(xv), student(xv)
        l_bn = bn_stats.pop()
        loss = deepinversion_loss(xv, t, s, labels, l_bn, bn=d.lambda_bn, oh=d.lambda_oh, adv=d.lambda_adv,
                                  tv=d.lambda_tv, l2=d.lambda_l2)
        return loss, {"bn": _f(l_bn), "oh": _f(F.cross_entropy(t, labels))}, t, None

    def _loss_cmi(self, x, labels, teacher, student, bn_stats, aug, epoch):
        c = self.b.cmi
        xg, xl = crop_flip(x, 4, aug), resized_crop_flip(x, aug)
        t, acts = bn_stats.run(teacher, xg)
        f_g, l_bn = channel_means(acts), bn_stats.pop()
        with bn_stats.paused():
            _, acts_l = bn_stats.run(teacher, xl)
        f_l = channel_means(acts_l)
        self._ensure_head(f_g.shape[1])
        l_oh, l_adv = F.cross_entropy(t, labels), masked_adversarial_kl(t, student(xg))
        n = x.shape[0]
        anchors, keys = f_l, f_g
        k = min(c.bank_sample, self.bank.shape[0])
        if k:
            rows = self.bank[torch.randperm(self.bank.shape[0], generator=aug)[:k]].to(x.device)
            anchors, keys = torch.cat([f_l, rows[:, :f_l.shape[1]]]), torch.cat([f_g, rows[:, f_l.shape[1]:]])
        per_row = contrastive_loss(self.head(anchors), self.head(keys).detach(), c.temperature, reduction="none")
        l_cr = per_row[:n].mean() + (per_row[n:].mean() if k else 0.0)
        loss = c.lambda_bn * l_bn + c.lambda_oh * l_oh + c.lambda_adv * l_adv + c.lambda_cr * l_cr
        return loss, {"bn": _f(l_bn), "oh": _f(l_oh), "adv": _f(l_adv), "cr": _f(l_cr)}, t, None

    def _bank_append(self, teacher, x, bn_stats, aug) -> None:
        """CMI's memory bank: [f_local, f_global] of the kept batch, FIFO of ``bank_size`` rows."""
        with torch.no_grad(), bn_stats.paused():
            f_g = channel_means(bn_stats.run(teacher, crop_flip(x, 4, aug))[1])
            f_l = channel_means(bn_stats.run(teacher, resized_crop_flip(x, aug))[1])
        rows = torch.cat([f_l, f_g], dim=1).float().cpu()
        self.bank = torch.cat([self.bank.reshape(-1, rows.shape[1]), rows])[-self.b.cmi.bank_size:]

    def _loss_fast(self, x, labels, teacher, student, bn_stats, aug, epoch):
        f = self.b.fast
        xa = crop_flip(x, 4, aug)
        with bn_stats.paused():
            t, acts = bn_stats.run(teacher, xa)
        stats = [bn_batch_statistics(a) for a in acts]
        ema = self.ema or [(None, None)] * len(stats)
        l_bn = sum(momentum_bn_loss(mu, var, layer.running_mean, layer.running_var, em, ev, f.bn_momentum)
                   for (mu, var), (em, ev), layer in zip(stats, ema, bn_stats.layers))
        l_oh = F.cross_entropy(t, labels)
        l_adv = masked_adversarial_kl(t, student(xa)) if epoch >= f.adv_warmup else x.new_zeros(())
        loss = f.lambda_bn * l_bn + f.lambda_oh * l_oh + f.lambda_adv * l_adv
        return loss, {"bn": _f(l_bn), "oh": _f(l_oh), "adv": _f(l_adv)}, t, stats

    def _meta_step(self, grad_sum: list[torch.Tensor], stats) -> None:
        """FOMAML: the clone's summed gradients update the meta-generator; the BN EMA takes the last step's stats."""
        self.optimizer.zero_grad(set_to_none=True)
        for q, s in zip(self.generator.parameters(), grad_sum):
            q.grad = s
        self.optimizer.step()
        m = self.b.fast.bn_momentum
        new = [(mu.detach(), var.detach()) for mu, var in stats]
        self.ema = new if not self.ema else [(m * em + (1 - m) * mu, m * ev + (1 - m) * var)
                                             for (em, ev), (mu, var) in zip(self.ema, new)]

    def _maybe_reset_l0(self, epoch: int) -> None:
        if self.b.fast.reset_l0_epoch == epoch:  # Fast's reset_l0: first Linear and first BN to N(0, 0.02)
            with rng.seeded(self.seed, "reset-l0"), torch.no_grad():
                for mod in (self.generator.l1, self.generator.conv_blocks[0]):
                    mod.weight.copy_(torch.randn(mod.weight.shape) * 0.02)  # CPU draw under the seed
                    mod.bias.zero_()

    def _loss_zskt(self, x, labels, teacher, student, bn_stats, aug, epoch):
        with bn_stats.paused():
            t = teacher(x)
        loss = zskt_generator_loss(t, student(x))
        return loss, {"adv": _f(loss)}, t, None

    def _loss_dfhl(self, x, labels, teacher, student, bn_stats, aug, epoch):
        d = self.b.dfhl
        loss = dfhl_generator_loss(student(crop_flip(x, 4, aug)), labels, d.confidence, d.balance)
        return loss, {"dfhl": _f(loss)}, None, None
