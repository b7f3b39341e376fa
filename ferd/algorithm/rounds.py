"""Algorithm 1 of the paper, organised in rounds.

A round covers a contiguous range of epochs: first the generation stage of each of its
epochs (against the student as it was at the start of the round), then the distillation
stage of each of its epochs. The same code is what the stage-split DAG runs, one
synthesis / pool / distillation triple per round, so a stage-split run and a single-process
run with the same parameters are bit-identical.

With ``rounds = epochs`` every round is one epoch and this is exactly Algorithm 1. A round of
k > 1 epochs changes exactly two things, and nothing else (every random stream is still drawn
per epoch, and p's update, Eq. 1-3 on the teacher, does not involve the student):

* **the student that L_adv sees** (Eq. 8, and the student terms of the baselines'
  generator losses): generation epoch e of the round is optimised against the student as it was
  at the round's start, up to k − 1 epochs of distillation older than Algorithm 1's;
* **the pool distillation epoch e samples from** (line 14): it already holds the FAEs of the
  round's later epochs e+1 … (up to k − 1 epochs' worth that Algorithm 1 would add later).

The paper presets use 22 rounds of 10 epochs (a DAG of 68 tasks instead of 662); the README's
"Rounds" section measures what rounds of several epochs cost on the embedded default.

Every random number comes from a generator derived from (seed, stream, epoch)
(:mod:`ferd.core.rng`), so the state that crosses a round boundary is small:
:class:`ferd.algorithm.round_state.RunState`, saved one way by the stages and by ``ferd run``'s checkpoint,
and a checkpoint of it taken after any round resumes bit-identically. ``ferd run`` executes the
stage graph on it (:mod:`ferd.stages.run`), each stage's ``step`` calling the functions here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from ..compute import distributed
from ..core import rng
from ..compute.switches import attack_model
from ..data import no_data_access
from ..distill.utae import cache_utaes
from ..models import FerdModel
from ..plan.resolve import Plan
from ..data.pool import Shard
from .round_state import RunState
from ..synthesis.diversity import batch_diversity
from ..synthesis.reweighting import reweight
from ..core.tracking import DISTILLATION, GENERATION, distillation_line, generation_line

OnEpoch = Callable[[str, dict], None]  # (GENERATION or DISTILLATION, the epoch's history entry), as each epoch ends

log = logging.getLogger(__name__)


COLLAPSE_ITERATIONS = 5  # consecutive generator iterations with one class > 95 % of teacher top-1


def generation_round(state: RunState, teacher: FerdModel, round_index: int, epochs: range,
                     progress: bool = False, per_sample: list[dict] | None = None,
                     on_epoch: OnEpoch | None = None) -> Shard:
    """Lines 6-12 for every epoch of the round: synthesise, select, reweight. Returns the round's shard.
    Each epoch logs one line (:func:`ferd.core.tracking.generation_line`) and is passed to ``on_epoch``.

    ``per_sample``, when given, receives one ``{"epoch", "labels", "values"}`` dict per reweighted
    epoch: the per-sample values behind p (PGD-20 margins, or least PGD steps for the A.6
    strategies). It only observes; the result does not depend on it.
    """
    cfg, rw = state.cfg, state.plan.reweighting  # None: p stays uniform (baselines, §3; the ablation)
    parts = []
    with no_data_access("synthesis is data-free"):
        for epoch in epochs:
            out = state.synthesizer.run_epoch(teacher, state.student, state.p, epoch, progress=progress)
            distributed.broadcast_(out.images)  # one batch on every rank (gathered, or made by each: baselines)
            p_gen = state.p
            if rw is not None:
                res = reweight(attack_model(teacher, cfg.compute), out.images, out.labels, cfg.num_classes,
                               strategy=rw.strategy, eps=cfg.threat.eps, step=cfg.threat.step, steps=rw.pgd_steps,
                               generator=rng.generator(cfg.seed, "reweight", epoch), previous_scores=state.scores,
                               temperature=rw.temperature, min_weight=rw.min_weight, max_weight=rw.max_weight,
                               beta=rw.beta, lam=rw.lam, samples=rw.samples)
                state.p, state.scores = distributed.broadcast_(res.p), distributed.broadcast_(res.scores)
                if per_sample is not None:
                    per_sample.append({"epoch": epoch, "labels": out.labels.cpu(), "values": res.per_sample})
            with torch.no_grad():
                t_logits = teacher(out.images)
            parts.append((out, p_gen))
            diversity = batch_diversity(out.images, out.labels, t_logits)
            if out.collapse_iterations >= COLLAPSE_ITERATIONS:
                log.warning("epoch %d: possible generator collapse: the teacher predicted one class for >95%% "
                            "of the synthetic batch for %d consecutive iterations", epoch, out.collapse_iterations)
            state.history.append({"epoch": epoch, "round": round_index, "p_generation": p_gen.tolist(),
                                  "p": state.p.tolist(), "scores": state.scores.tolist(),
                                  "strategy": rw.strategy if rw is not None else "uniform",
                                  "best_loss": out.best_loss, "best_terms": out.best_terms,
                                  "collapse_iterations": out.collapse_iterations,
                                  "nonrobust_fraction": out.nonrobust_fraction, **diversity})
            _epoch_done(GENERATION, state.history[-1], cfg.epochs, on_epoch)
    shard = Shard(round=round_index,
                  images=torch.cat([o.images for o, _ in parts]).cpu(),
                  labels=torch.cat([o.labels for o, _ in parts]).cpu(),
                  teacher_logits=torch.cat([_teacher_logits(teacher, o.images) for o, _ in parts]).cpu(),
                  class_weight=torch.cat([pg[o.labels.cpu()] for o, pg in parts]),
                  epochs=torch.cat([torch.full((o.labels.shape[0],), e, dtype=torch.int32)
                                    for (o, _), e in zip(parts, epochs)]))
    if state.plan.distill.utae.cache == "pool":
        shard.utaes = shard_utaes(state.plan, teacher, shard.images, shard.teacher_logits, round_index)
    return shard


def shard_utaes(plan: Plan, teacher: FerdModel, images: torch.Tensor, teacher_logits: torch.Tensor,
                round_index: int) -> torch.Tensor:
    """The K cached UTAEs of a round's FAEs against the teacher (``distill.utae.cache: pool``;
    :func:`ferd.distill.utae.cache_utaes`), random starts from the round's ``utae-cache`` stream."""
    cfg, utae = plan.cfg, plan.distill.utae
    return cache_utaes(attack_model(teacher, cfg.compute), images, teacher_logits, eps=cfg.threat.eps,
                       alpha=cfg.threat.step, steps=utae.steps, gamma=utae.gamma,
                       random_start=utae.random_start,
                       starts=utae.cache_starts, generator=rng.generator(cfg.seed, "utae-cache", round_index),
                       batch_size=plan.distill.batch_size, device=cfg.device)


def _teacher_logits(teacher: FerdModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return teacher(x).float()


def distillation_round(state: RunState, teacher: FerdModel, epochs: range, progress: bool = False,
                       on_epoch: OnEpoch | None = None) -> None:
    """Lines 13-17 for every epoch of the round; each epoch logs one line
    (:func:`ferd.core.tracking.distillation_line`) and is passed to ``on_epoch``."""
    with no_data_access("distillation is data-free"):
        for epoch in epochs:
            losses = state.distiller.run_epoch(teacher, state.pool, epoch, progress=progress)
            for h in state.history:
                if h["epoch"] == epoch:
                    h["distill"] = losses
                    _epoch_done(DISTILLATION, h, state.cfg.epochs, on_epoch)


def _epoch_done(side: str, h: dict, epochs: int, on_epoch: OnEpoch | None) -> None:
    if distributed.is_main():
        log.info(generation_line(h, epochs) if side == GENERATION else distillation_line(h, epochs))
    if on_epoch is not None:
        on_epoch(side, h)


def collapse_warnings(history: list[dict]) -> list[str]:
    """One line per epoch whose generator collapsed (the teacher predicted one class for > 95 % of
    the synthetic batch for at least :data:`COLLAPSE_ITERATIONS` consecutive iterations)."""
    return [f"epoch {h['epoch']}: possible generator collapse: the teacher predicted one class for >95 % of the "
            f"synthetic batch for {h['collapse_iterations']} consecutive iterations"
            for h in history if h.get("collapse_iterations", 0) >= COLLAPSE_ITERATIONS]
