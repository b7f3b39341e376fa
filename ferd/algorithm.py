"""Algorithm 1 of the paper, organised in rounds.

A round covers a contiguous range of epochs: first the generation stage of each of its
epochs (against the student as it was at the start of the round), then the distillation
stage of each of its epochs. With ``rounds = epochs`` (the default) every round is one
epoch and this is exactly Algorithm 1; with fewer rounds the same code is what the
stage-split DAG runs, one synthesis / pool / distillation triple per round, so a
stage-split run and a single-process run with the same parameters are bit-identical.

Every random number comes from a generator derived from (seed, stream, epoch)
(:mod:`ferd.rng`), so the state that crosses a round boundary is only: the student's
weights, its optimiser and LR schedule, the generator and its optimiser, the class
distribution p with its scores, and the pool. :class:`RunState` holds exactly that, and
a checkpoint of it taken after any round resumes bit-identically.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import rng
from .baselines import distill_config
from .baselines.synthesis import BaselineSynthesizer
from .checkpoint import atomic_write_bytes
from .compute import attack_model, compile_in_place, compile_settings, set_memory_format
from .config import FerdConfig
from .fingerprint import params_fingerprint
from .data import dataset_info, no_data_access
from .distill.stage import Distiller
from .distill.utae import cache_utaes
from .numerics import saving_debug_batch
from .models import FerdModel, create_model
from .pool import FaePool, Shard
from .synthesis.diversity import batch_diversity
from .synthesis.reweighting import reweight
from .synthesis.stage import Synthesizer

log = logging.getLogger(__name__)


def build_student(cfg: FerdConfig) -> FerdModel:
    """The student f^S with a seeded initialisation (θ_s, Algorithm 1 line 1)."""
    with rng.seeded(cfg.seed, "student-init"):
        return create_model(cfg.student.arch, num_classes=cfg.num_classes, mean=cfg.student.mean,
                            std=cfg.student.std).to(cfg.device)


def uses_hee(cfg: FerdConfig) -> bool:
    """DFHL distils with its own high-entropy examples, unless the comparison gives it FERD's student side."""
    from .baselines.synthesis import BASELINES

    return (cfg.method != "ferd" and BASELINES[cfg.method].high_entropy_examples
            and cfg.baseline.robust.student_side == "a8")


@dataclass
class RunState:
    """Everything that crosses a round boundary."""

    cfg: FerdConfig
    student: FerdModel
    synthesizer: Synthesizer | BaselineSynthesizer
    distiller: Distiller
    pool: FaePool
    p: torch.Tensor
    scores: torch.Tensor
    next_round: int = 0
    history: list[dict] = field(default_factory=list)

    @classmethod
    def initial(cls, cfg: FerdConfig, img_size: int) -> RunState:
        student = build_student(cfg)
        c = cfg.num_classes
        amp = cfg.compute.amp
        if cfg.method == "ferd":
            synthesizer = Synthesizer(cfg.synthesis, c, img_size, cfg.seed, cfg.device, amp=amp)
        else:
            synthesizer = BaselineSynthesizer(cfg.method, cfg.synthesis, cfg.baseline, c, img_size, cfg.seed,
                                              cfg.device, amp=amp)
        return cls(cfg=cfg, student=student, synthesizer=synthesizer,
                   distiller=Distiller(student, distill_config(cfg), cfg.epochs, cfg.threat.eps, cfg.threat.step,
                                       cfg.seed, cfg.device, hee=cfg.baseline.dfhl if uses_hee(cfg) else None,
                                       flip=dataset_info(cfg.dataset).flip_invariant, compute=cfg.compute),
                   pool=FaePool(), p=torch.full((c,), 1.0 / c, dtype=torch.float64),  # line 2: uniform p
                   scores=torch.zeros(c, dtype=torch.float64))._with_compute()

    def _with_compute(self) -> RunState:
        c = self.cfg.compute
        compile_in_place(self.student, compile_settings(c))
        if c.channels_last:
            set_memory_format(self.student, True)
            if self.synthesizer.generator is not None:
                set_memory_format(self.synthesizer.generator, True)
        return self

    # ---- checkpointing (weights_only-loadable: tensors, numbers, strings) -------------------
    def checkpoint_dict(self) -> dict:
        return {"next_round": self.next_round, "params_sha256": params_fingerprint(self.cfg, "distillation"), "student": self.student.state_dict(),
                "synthesizer": self.synthesizer.state_dict(), "distiller": self.distiller.state_dict(),
                "p": self.p, "scores": self.scores, "history": json.dumps(self.history)}

    def load_checkpoint_dict(self, state: dict) -> None:
        if state.get("params_sha256") != params_fingerprint(self.cfg, "distillation"):
            raise ValueError("checkpoint: state.pt was written by a run with other parameters; resume with the "
                             "same parameters, or use a fresh output directory")
        self.next_round = int(state["next_round"])
        self.student.load_state_dict(state["student"])
        self.synthesizer.load_state_dict(state["synthesizer"])
        self.distiller.load_state_dict(state["distiller"])
        self.p, self.scores = state["p"], state["scores"]
        self.history = json.loads(state["history"])

    def save(self, directory: str | Path) -> None:
        """Write the pool and ``state.pt`` atomically under ``directory`` (the pool first, so a
        ``state.pt`` never refers to rounds that are not on disk)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # a round's shard never changes once appended: write only those not yet on disk (O(R), not O(R²))
        on_disk = {int(p.parent.name.split("=")[1]) for p in (directory / "pool").glob("round=*/part-0.parquet")}
        self.pool.save(directory / "pool", rounds=[r for r in self.pool.rounds if r not in on_disk])
        buf = io.BytesIO()
        torch.save(self.checkpoint_dict(), buf)
        atomic_write_bytes(directory / "state.pt", buf.getvalue())

    def load(self, directory: str | Path) -> None:
        directory = Path(directory)
        self.load_checkpoint_dict(torch.load(directory / "state.pt", map_location=self.cfg.device,
                                             weights_only=True))
        self.pool = FaePool.load(directory / "pool")
        self.pool.drop_rounds_from(self.next_round)  # written before a kill, after the last checkpoint


COLLAPSE_ITERATIONS = 5  # consecutive generator iterations with one class > 95 % of teacher top-1


def generation_round(state: RunState, teacher: FerdModel, round_index: int, epochs: range,
                     progress: bool = False, per_sample: list[dict] | None = None) -> Shard:
    """Lines 6-12 for every epoch of the round: synthesise, select, reweight. Returns the round's shard.

    ``per_sample``, when given, receives one ``{"epoch", "labels", "values"}`` dict per reweighted
    epoch: the per-sample values behind p (PGD-20 margins, or least PGD steps for the A.6
    strategies). It only observes; the result does not depend on it.
    """
    cfg = state.cfg
    rw = cfg.synthesis.reweighting
    reweighting = rw.enabled and cfg.method == "ferd"  # the baselines sample labels uniformly (§3)
    parts = []
    with no_data_access("synthesis is data-free"):
        for epoch in epochs:
            out = state.synthesizer.run_epoch(teacher, state.student, state.p, epoch, progress=progress)
            p_gen = state.p
            if reweighting:
                res = reweight(attack_model(teacher, cfg.compute), out.images, out.labels, cfg.num_classes,
                               strategy=rw.strategy, eps=cfg.threat.eps, step=cfg.threat.step, steps=rw.pgd_steps,
                               generator=rng.generator(cfg.seed, "reweight", epoch), previous_scores=state.scores,
                               temperature=rw.temperature, min_weight=rw.min_weight, max_weight=rw.max_weight,
                               beta=rw.beta, lam=rw.lam, samples=rw.samples)
                state.p, state.scores = res.p, res.scores
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
                                  "strategy": rw.strategy if reweighting else "uniform",
                                  "best_loss": out.best_loss, "best_terms": out.best_terms,
                                  "collapse_iterations": out.collapse_iterations,
                                  "nonrobust_fraction": out.nonrobust_fraction, **diversity})
    shard = Shard(round=round_index,
                  images=torch.cat([o.images for o, _ in parts]).cpu(),
                  labels=torch.cat([o.labels for o, _ in parts]).cpu(),
                  teacher_logits=torch.cat([_teacher_logits(teacher, o.images) for o, _ in parts]).cpu(),
                  class_weight=torch.cat([pg[o.labels.cpu()] for o, pg in parts]),
                  epochs=torch.cat([torch.full((o.labels.shape[0],), e, dtype=torch.int32)
                                    for (o, _), e in zip(parts, epochs)]))
    if cfg.distill.utae.cache == "pool":
        shard.utaes = shard_utaes(cfg, teacher, shard.images, shard.teacher_logits, round_index)
    return shard


def shard_utaes(cfg: FerdConfig, teacher: FerdModel, images: torch.Tensor, teacher_logits: torch.Tensor,
                round_index: int) -> torch.Tensor:
    """The K cached UTAEs of a round's FAEs against the teacher (``distill.utae.cache: pool``;
    :func:`ferd.distill.utae.cache_utaes`), random starts from the round's ``utae-cache`` stream."""
    utae = cfg.distill.utae
    return cache_utaes(attack_model(teacher, cfg.compute), images, teacher_logits, eps=cfg.threat.eps,
                       alpha=cfg.threat.step, steps=utae.steps, gamma=utae.effective_gamma,
                       random_start=utae.random_start,
                       starts=utae.cache_starts, generator=rng.generator(cfg.seed, "utae-cache", round_index),
                       batch_size=cfg.distill.batch_size, device=cfg.device)


def _teacher_logits(teacher: FerdModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return teacher(x).float()


def distillation_round(state: RunState, teacher: FerdModel, epochs: range, progress: bool = False) -> None:
    """Lines 13-17 for every epoch of the round."""
    with no_data_access("distillation is data-free"):
        for epoch in epochs:
            losses = state.distiller.run_epoch(teacher, state.pool, epoch, progress=progress)
            for h in state.history:
                if h["epoch"] == epoch:
                    h["distill"] = losses


def collapse_warnings(history: list[dict]) -> list[str]:
    """One line per epoch whose generator collapsed (the teacher predicted one class for > 95 % of
    the synthetic batch for at least :data:`COLLAPSE_ITERATIONS` consecutive iterations)."""
    return [f"epoch {h['epoch']}: possible generator collapse: the teacher predicted one class for >95 % of the "
            f"synthetic batch for {h['collapse_iterations']} consecutive iterations"
            for h in history if h.get("collapse_iterations", 0) >= COLLAPSE_ITERATIONS]


def run_algorithm1(teacher: FerdModel, cfg: FerdConfig, img_size: int, *, checkpoint_dir: str | Path | None = None,
                   progress: bool = True) -> RunState:
    """Algorithm 1 end to end (resuming from ``checkpoint_dir/state.pt`` when present)."""
    set_memory_format(teacher.eval().requires_grad_(False), cfg.compute.channels_last)
    state = RunState.initial(cfg, img_size)
    if checkpoint_dir is not None and (Path(checkpoint_dir) / "state.pt").is_file():
        state.load(checkpoint_dir)
        log.info("resuming from %s at round %d", checkpoint_dir, state.next_round)
    schedule = cfg.round_schedule
    from tqdm.auto import tqdm

    bar = tqdm(total=len(schedule), initial=state.next_round, desc="FERD rounds", disable=not progress)
    for r in range(state.next_round, len(schedule)):
        with saving_debug_batch(checkpoint_dir):
            shard = generation_round(state, teacher, r, schedule[r], progress=progress)
            state.pool.append(shard)
            distillation_round(state, teacher, schedule[r], progress=progress)
        state.next_round = r + 1
        if checkpoint_dir is not None and (state.next_round % cfg.checkpoint_every == 0
                                           or state.next_round == len(schedule)):
            state.save(checkpoint_dir)
        bar.update(1)
        last = state.history[-1]
        bar.set_postfix(p_max=f"{max(last['p']):.3f}", loss=f"{last.get('distill', {}).get('loss', 0):.4f}")
    bar.close()
    return state
