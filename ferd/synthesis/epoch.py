"""The generation stage of Algorithm 1 (lines 6-12) for one epoch: the one loop every method runs.

y ~ p is drawn once per epoch (line 6); the method's generator then takes ``synthesis.iterations`` steps
on the method's objective against the frozen teacher and the current student (FERD: T_g Adam steps on
L_gen, Eq. 9, :mod:`ferd.synthesis.ferd`; the baselines: :mod:`ferd.baselines`); the batch with the lowest
loss is kept (``select``, line 10: the paper does not define it, this is what the authors' code and CMI
do); the caller adds it to the pool and reweights. A method is a :class:`GenerationMethod`: what it keeps
across epochs, how an epoch starts, its objective, and hooks around the shared optimiser step.

The teacher is frozen and in eval mode (its BatchNorm running statistics are the targets
of L_bn); the student is put in eval mode with gradients off for its parameters while the
generator trains (gradients flow through it to x only), then restored. A ``data_parallel`` method splits
the batch across torchrun's processes (:mod:`ferd.compute.distributed`); the others make the whole batch on
every process.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from ..compute import distributed
from ..core import rng
from ..settings.baseline_config import BaselineConfig
from ..settings.config import BottleneckConfig, SynthesisConfig
from ..settings.method import Method
from ..models import FerdModel
from ..compute.numerics import autocast, check_finite_loss
from ..core.kill_points import kill_point
from .bottleneck import non_robust_features
from .losses import BatchNormStatistics

log = logging.getLogger(__name__)


@dataclass
class EpochSynthesis:
    """The kept batch of one generation epoch and how the generator got there."""

    images: torch.Tensor
    labels: torch.Tensor
    best_loss: float
    best_terms: dict[str, float]
    last_terms: dict[str, float]
    teacher_top1_share: float = 0.0
    collapse_iterations: int = 0  # longest run of iterations with one class > 95 % of teacher top-1
    nonrobust_fraction: float | None = None  # share of channels Eq. 6 marks on the kept batch (synthesis.fae)
    history: list[dict[str, float]] = field(default_factory=list)


@contextlib.contextmanager
def frozen_student(student: nn.Module) -> Iterator[None]:
    """The student in eval mode with its parameters' gradients off (gradients still reach the input),
    restored afterwards: how every generator sees the student."""
    was_training = student.training
    grads = [q.requires_grad for q in student.parameters()]
    student.eval()
    student.requires_grad_(False)
    try:
        yield
    finally:
        student.train(was_training)
        for q, g in zip(student.parameters(), grads):
            q.requires_grad_(g)


def top1_counts(t_logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """How many samples of the batch the teacher puts in each class (top-1)."""
    return torch.bincount(t_logits.argmax(1), minlength=num_classes)


def collapse_run(counts: torch.Tensor, run: int) -> tuple[float, int]:
    """The share of the batch in the teacher's most predicted class (``counts``: :func:`top1_counts`), and
    the updated count of consecutive iterations where that share exceeded 95 % (generator-collapse detection)."""
    share = float(counts.max()) / int(counts.sum())
    return share, run + 1 if share > 0.95 else 0


def _global_figures(terms: dict[str, float], counts: torch.Tensor | None, split: bool
                    ) -> tuple[dict[str, float], torch.Tensor | None]:
    """An iteration's loss terms and the teacher's top-1 counts over the global batch: the means of the
    ranks' terms (each a mean over its rows; L_bn is already global) and the summed counts, in one
    all-reduce; unchanged in one process or when the batch is not ``split`` across processes."""
    size = distributed.world()[1]
    if size == 1 or not split or counts is None:
        return terms, counts
    total = distributed.sum_across(torch.tensor([*terms.values(), *counts.tolist()], dtype=torch.float64))
    n = len(terms)
    return dict(zip(terms, (total[:n] / size).tolist())), total[n:].long()


Objective = tuple[torch.Tensor, dict[str, float], "torch.Tensor | None", Any]
"""(loss, its terms as floats, the teacher's logits on the batch or None, what :meth:`GenerationMethod.end_epoch`
and :meth:`GenerationMethod.after_epoch` need)"""


class UndeclaredPasses(ValueError):
    """A method that declares no generator passes (:meth:`GenerationMethod.generator_passes`): refused by ``ferd
    bench`` in one line, like any other bad input."""


@dataclass(frozen=True)
class GeneratorPasses:
    """The model passes one generator iteration makes on its batch: what ``ferd bench`` times bare and counts
    (:meth:`GenerationMethod.generator_passes`; the student side's are :class:`ferd.distill.side.IterationPasses`).

    ``teacher_passes`` teacher forwards with the backward to the input (one per view), the first split at
    ``synthesis.layer`` (features, then head) when ``split``, with the BatchNorm statistics of its forward in
    the loss when ``bn_statistics`` (L_bn, Eq. 8, or a method's variant); ``student_passes`` forwards of the
    frozen student with the backward to the input; with ``bottleneck`` (L_uni: split only), the Eq. 4-6 fit on
    the split features (``bottleneck.iterations`` head passes with the backward to the head's input) and the
    masked head pass with the backward to the input."""

    teacher_passes: int
    student_passes: int
    bn_statistics: bool = False
    split: bool = False
    layer: str | None = None  # synthesis.layer (None: the teacher's default)
    bottleneck: BottleneckConfig | None = None

    def __post_init__(self) -> None:
        if self.bottleneck is not None and not (self.split and self.teacher_passes):
            raise ValueError("GeneratorPasses: the bottleneck runs on the split teacher's features; expected "
                             "split=True and teacher_passes >= 1 with bottleneck")

    def flops(self, teacher_macs: int, student_macs: int, batch: int, head_macs: int = 0) -> int:
        """FLOPs of the passes for ``batch`` samples, counted as ``ferd bench`` states: 2 FLOPs per MAC, a
        forward with the backward to the input two forwards; ``head_macs``: one pass of the teacher's head from
        ``layer`` (counted only with ``bottleneck``: its fit's passes and the masked one)."""
        head = 2 * (self.bottleneck.iterations + 1) * head_macs if self.bottleneck is not None else 0
        return 2 * batch * (2 * self.teacher_passes * teacher_macs + 2 * self.student_passes * student_macs + head)

    def loss(self, teacher: FerdModel, student: nn.Module, x: torch.Tensor, labels: torch.Tensor,
             noise: torch.Generator) -> torch.Tensor:
        """The passes alone on ``x`` (the student frozen: :func:`frozen_student`), summed into one tensor whose
        backward makes their input-backward passes: what ``ferd bench`` times as the bare passes."""
        loss = x.new_zeros(())
        with BatchNormStatistics(teacher) as bn:
            for i in range(self.teacher_passes):
                with contextlib.nullcontext() if self.bn_statistics and i == 0 else bn.paused():
                    if self.split and i == 0:
                        layer = teacher.check_layer(self.layer)
                        f = teacher.features(x, layer)
                        loss = loss + teacher.head(f, layer).sum()
                    else:
                        loss = loss + teacher(x).sum()
                if self.bn_statistics and i == 0:
                    loss = loss + bn.pop()
                if self.bottleneck is not None and i == 0:
                    with bn.paused():
                        f_nr, _ = non_robust_features(teacher, f, labels, layer, self.bottleneck, noise)
                        loss = loss + teacher.head(f_nr, layer).sum()
        for _ in range(self.student_passes):
            loss = loss + student(x).sum()
        return loss


@dataclass(frozen=True)
class SynthesisContext:
    """What a method's generation is built from: the synthesis settings, the baseline groups, the task's
    shape, the seed and the device."""

    cfg: SynthesisConfig
    b: BaselineConfig
    num_classes: int
    img_size: int
    seed: int
    device: str | torch.device


class GenerationMethod(Method):
    """A method's generation (as zju-vipa ``datafree``'s ``BaseSynthesis``): what it keeps across epochs
    (``generator``, ``optimizer``, anything else in ``state_dict``), how an epoch starts, its objective, and the
    few steps around the shared optimiser step. ``relabel_by_teacher``: the pool takes the teacher's top-1
    instead of the drawn labels. Registered in :data:`ferd.settings.method.METHODS` with its traits."""

    relabel_by_teacher: ClassVar[bool] = False

    def __init__(self, ctx: SynthesisContext) -> None:
        self.ctx = ctx
        self.generator: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    @classmethod
    def synthesizer(cls, plan: Any, num_classes: int, img_size: int) -> Synthesizer:
        cfg = plan.cfg
        return Synthesizer(cls(SynthesisContext(plan.synthesis, cfg.baseline, num_classes, img_size, cfg.seed,
                                                cfg.device)), amp=cfg.compute.amp)

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
    def start_epoch(self, epoch: int, labels: torch.Tensor, latent: torch.Generator
                    ) -> tuple[Callable[[], torch.Tensor], torch.optim.Optimizer]:
        """What produces the batch this epoch (this process's rows of it), and the optimiser of its steps;
        ``labels`` are the global batch's."""
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

    def after_epoch(self, teacher: FerdModel, best_x: torch.Tensor, labels: torch.Tensor, last_stats: Any
                    ) -> float | None:
        """After the epoch, hooks off; may return the share of non-robust channels on the kept batch."""
        return None

    # ---- what an iteration costs -------------------------------------------------------------------
    def generator_passes(self, epoch: int) -> GeneratorPasses:
        """The model passes :meth:`objective` makes in an iteration of ``epoch`` (``ferd bench`` times them bare and
        counts their FLOPs). No default: one would be silently wrong for any objective that differs from it, and
        bench would time and count passes the method never makes; only ``ferd bench`` asks, so a method that
        declares nothing still runs everywhere else."""
        raise UndeclaredPasses(f"method {self.name!r} declares no generator passes: define "
                                  f"{type(self).__name__}.generator_passes(epoch) returning a "
                                  "ferd.synthesis.epoch.GeneratorPasses (what ferd bench times and counts)")


class Synthesizer:
    """Runs one method's generation (:class:`GenerationMethod`) epoch by epoch — the one loop of every method;
    the method owns whatever it keeps across epochs."""

    def __init__(self, method: GenerationMethod, amp: str = "fp32") -> None:
        self.method, self.amp = method, amp  # compute.amp
        ctx = method.ctx
        self.cfg, self.num_classes, self.seed, self.device = ctx.cfg, ctx.num_classes, ctx.seed, ctx.device

    @property
    def generator(self) -> nn.Module | None:
        """The generator kept across epochs (None where there is none, or a fresh one every epoch)."""
        return self.method.generator

    def state_dict(self) -> dict:
        return self.method.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.method.load_state_dict(state)

    def run_epoch(self, teacher: FerdModel, student: nn.Module, p: torch.Tensor, epoch: int,
                  progress: bool = False) -> EpochSynthesis:
        """``synthesis.iterations`` steps of the method's objective with labels y ~ p; returns the kept batch.
        A data-parallel method makes this process's rows of the global batch (L_bn sees the global batch's
        statistics, the kept iteration is chosen on the global loss and the kept batch is gathered)."""
        cfg, method = self.cfg, self.method
        split = method.data_parallel
        labels = torch.multinomial(p.double().cpu(), cfg.batch_size, replacement=True,
                                   generator=rng.generator(self.seed, "labels", epoch)).to(self.device)
        synthesize, opt = method.start_epoch(epoch, labels, rng.generator(self.seed, "latent", epoch))
        if method.generator is not None:
            method.generator.train()
        (mine,) = distributed.shard(labels) if split else (labels,)  # this process's rows
        aug = rng.generator(self.seed, "views", epoch)
        best_loss, best_x, best_terms, last_terms = float("inf"), None, {}, {}
        run, collapse_iters, share, last_stats = 0, 0, 0.0, None
        history: list[dict[str, float]] = []
        with (frozen_student(student), BatchNormStatistics(teacher, global_batch=split) as bn_stats,
              autocast(self.amp, self.device)):
            for it in tqdm(range(cfg.iterations), desc=f"epoch {epoch} {method.name} generator", leave=False,
                           disable=not progress):
                x = synthesize()
                loss, terms, t_logits, last_stats = method.objective(x, mine, teacher, student, bn_stats, aug, epoch)
                check_finite_loss(loss, "synthesis", epoch, it, terms, {
                    "images": x, "labels": mine, **({} if t_logits is None else {"teacher_logits": t_logits})})
                kept = x.detach().float().clone()
                opt.zero_grad(set_to_none=True)
                method.zero_grad()
                loss.backward()
                method.after_backward()
                opt.step()
                method.after_step()
                counts = None if t_logits is None else top1_counts(t_logits, self.num_classes)
                last_terms, counts = _global_figures({**terms, "gen": loss.item()}, counts, split)
                history.append(last_terms)
                if counts is not None:
                    share, run = collapse_run(counts, run)
                    collapse_iters = max(collapse_iters, run)
                if last_terms["gen"] < best_loss:
                    best_loss, best_x, best_terms = last_terms["gen"], kept, last_terms
                kill_point("generator.iteration")
            method.end_epoch(teacher, best_x, bn_stats, aug)
        nonrobust = method.after_epoch(teacher, best_x, mine, last_stats)
        if split:
            best_x = distributed.gather_rows(best_x)
        if method.relabel_by_teacher:  # unconditional or student-only: the teacher labels the kept batch
            with torch.no_grad():
                labels = teacher(best_x).argmax(1)
        return EpochSynthesis(images=best_x, labels=labels, best_loss=best_loss, best_terms=best_terms,
                              last_terms=last_terms, teacher_top1_share=share, collapse_iterations=collapse_iters,
                              history=history, nonrobust_fraction=nonrobust)
