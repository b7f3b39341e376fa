"""Stages 2-4, one round of Algorithm 1 each: synthesis → FAE pool storage → UTAE distillation.

Round r covers the epochs ``cfg.round_schedule[r]``. Each stage rebuilds
:meth:`ferd.algorithm.RunState.initial` and loads into it exactly the state that crosses a
round boundary (see :mod:`ferd.algorithm`) from its input artifacts, then runs the same
:func:`~ferd.algorithm.generation_round` / :func:`~ferd.algorithm.distillation_round` as
``ferd run``. Every random number is derived from (seed, stream, epoch), so a stage-split
run is bit-identical to the single process.

================  =====================================================================
synthesis r       in: teacher; for r > 0 the distillation artifact of r-1 (student,
                  history) and the synthesis artifact of r-1 (generator, p, scores).
                  out: ``shard/round=<r>/part-0.parquet`` (the round's FAEs),
                  ``generator.pt`` (generator + Adam state), ``reweighting.pt`` (p, scores,
                  p at generation, per-sample margins and labels of every epoch; float64,
                  exact), ``class_weights.json`` (the same, readable), ``history.json``;
                  the manifest lists the round's synthesis figures (diversity within labels,
                  teacher confidence and accuracy, FAE mask fraction) per epoch.
pool r            in: the synthesis artifact of r; for r > 0 the pool artifact of r-1.
                  out: the pool, ``round=<k>/part-0.parquet`` for k = 0..r, ``pool.json``.
distillation r    in: teacher, synthesis artifact of r (history), pool artifact of r; for
                  r > 0 the distillation artifact of r-1 (student, optimiser, scheduler).
                  out: ``student.safetensors``, ``trainer.pt`` (SGD + LR-scheduler state),
                  ``rng.json`` (the seed and next epoch every stream is derived from),
                  ``history.json``, ``class_weights.json``.
================  =====================================================================

Every output directory also has ``manifest.json`` (:mod:`ferd.stages.artifacts`).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..algorithm import RunState, collapse_warnings, distillation_round, generation_round
from ..checkpoint import load_state_dict, save_state_dict
from ..config import FerdConfig
from ..data import dataset_info
from ..pool import FaePool, read_shard
from ..numerics import saving_debug_batch
from ..provenance import utc_now
from ..synthesis.diversity import synthesis_rows
from ..pool import write_shard as _write_shard
from ..checkpoint import copy_file
from .artifacts import (ArtifactError, load_tensors, read_json, read_manifest, save_tensors,
                        write_json, write_manifest)
from ..compute import set_memory_format
from .teacher_fetch import load_teacher

log = logging.getLogger(__name__)

SYNTHESIS, POOL, DISTILLATION = "synthesis", "pool", "distillation"
STUDENT_FILE, TRAINER_FILE, GENERATOR_FILE, REWEIGHT_FILE = ("student.safetensors", "trainer.pt", "generator.pt",
                                                             "reweighting.pt")
HISTORY_FILE, CLASS_WEIGHTS_FILE, POOL_INDEX = "history.json", "class_weights.json", "pool.json"
RNG_STREAMS = ("labels", "latent", "bottleneck", "generator", "reweight", "pool-sample", "utae", "augment")


@dataclass(frozen=True)
class SynthesisArtifact:
    dir: Path
    round: int
    epochs: range
    shard: Path
    rows: int
    p: list[float]

    def summary(self) -> dict:
        return {"dir": self.dir, "round": self.round, "epochs": [self.epochs.start, self.epochs.stop],
                "shard": self.shard, "rows": self.rows, "p": self.p}


@dataclass(frozen=True)
class PoolArtifact:
    dir: Path
    round: int
    rounds: list[int]
    rows: int

    def summary(self) -> dict:
        return {"dir": self.dir, "round": self.round, "rounds": self.rounds, "rows": self.rows}


@dataclass(frozen=True)
class DistillationArtifact:
    dir: Path
    round: int
    epochs: range
    student: Path
    complete: bool  # the last round: the student is Algorithm 1's output
    losses: dict[int, dict]

    def summary(self) -> dict:
        return {"dir": self.dir, "round": self.round, "epochs": [self.epochs.start, self.epochs.stop],
                "student": self.student, "complete": self.complete, "losses": self.losses}


def shard_path(synthesis_dir: str | os.PathLike[str], round_index: int) -> Path:
    return Path(synthesis_dir) / "shard" / f"round={round_index}" / "part-0.parquet"


def _schedule(cfg: FerdConfig, round_index: int) -> range:
    rounds = cfg.num_rounds
    if not 0 <= round_index < rounds:
        raise ValueError(f"round: expected 0 <= round < {rounds} (rounds of {cfg.epochs} epochs), got {round_index}")
    return cfg.round_schedule[round_index]


def _previous(round_index: int, what: str, path: str | os.PathLike[str] | None) -> None:
    if round_index == 0 and path is not None:
        raise ArtifactError(f"{what}: round 0 starts from the initial state; no previous artifact may be given")
    if round_index > 0 and path is None:
        raise ArtifactError(f"{what}: round {round_index} needs the artifact of round {round_index - 1}")


def _initial_state(cfg: FerdConfig) -> RunState:
    return RunState.initial(cfg, dataset_info(cfg.dataset).image_size)


def _load_student(state: RunState, distillation_dir: Path) -> None:
    state.student.load_state_dict(load_state_dict(distillation_dir / STUDENT_FILE))


def _class_weights(history: list[dict]) -> list[dict]:
    return [{"epoch": h["epoch"], "p": h["p"], "scores": h["scores"], "strategy": h["strategy"]} for h in history]


# ---- stage 2: synthesis with reweighting ----------------------------------------------------
def synthesis(cfg: FerdConfig, round_index: int, teacher_dir: str | os.PathLike[str],
              out_dir: str | os.PathLike[str], *, student_dir: str | os.PathLike[str] | None = None,
              previous_dir: str | os.PathLike[str] | None = None, progress: bool = False) -> SynthesisArtifact:
    """The generation stage of round ``round_index`` (Algorithm 1 lines 6-12 for each of its epochs)."""
    started = utc_now()
    epochs = _schedule(cfg, round_index)
    _previous(round_index, "student", student_dir)
    _previous(round_index, "previous synthesis", previous_dir)
    teacher, _ = load_teacher(cfg, teacher_dir)
    set_memory_format(teacher, cfg.compute.channels_last)
    state = _initial_state(cfg)
    if round_index > 0:
        student_dir, previous_dir = Path(student_dir), Path(previous_dir)
        read_manifest(student_dir, DISTILLATION, cfg, round_index=round_index - 1, what="student")
        read_manifest(previous_dir, SYNTHESIS, cfg, round_index=round_index - 1, what="previous synthesis")
        _load_student(state, student_dir)
        state.synthesizer.load_state_dict(load_tensors(previous_dir / GENERATOR_FILE, cfg.device))
        rw = load_tensors(previous_dir / REWEIGHT_FILE)
        state.p, state.scores = rw["p"], rw["scores"]
        state.history = read_json(student_dir / HISTORY_FILE)
    per_sample: list[dict] = []
    with saving_debug_batch(out_dir):
        shard = generation_round(state, teacher, round_index, epochs, progress=progress, per_sample=per_sample)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_shard(shard, out / "shard")
    save_tensors(state.synthesizer.state_dict(), out / GENERATOR_FILE)
    new = [h for h in state.history if h["round"] == round_index]
    save_tensors({"p": state.p, "scores": state.scores, "round": round_index,
                  "epochs": torch.tensor(list(epochs), dtype=torch.int64),
                  "p_generation": torch.tensor([h["p_generation"] for h in new], dtype=torch.float64),
                  "margin_epochs": torch.tensor([m["epoch"] for m in per_sample], dtype=torch.int64),
                  "margin_labels": [m["labels"] for m in per_sample],
                  "margins": [m["values"] for m in per_sample]}, out / REWEIGHT_FILE)
    write_json(out / CLASS_WEIGHTS_FILE, [{**c, "margin_by_class": _margin_by_class(m, cfg.num_classes)}
                                          for c, m in _pair(_class_weights(new), per_sample)])
    write_json(out / HISTORY_FILE, state.history)
    warnings = collapse_warnings(new)
    write_manifest(out, SYNTHESIS, cfg, round_index=round_index, started=started,
                   inputs={"teacher": teacher_dir, "student": student_dir, "previous": previous_dir},
                   extra={"epochs": [epochs.start, epochs.stop], "rows": len(shard.labels), "warnings": warnings,
                          "synthesis": synthesis_rows(new)})
    return SynthesisArtifact(out, round_index, epochs, shard_path(out, round_index), len(shard.labels),
                             state.p.tolist())


def _pair(weights: list[dict], per_sample: list[dict]) -> list[tuple[dict, dict | None]]:
    by_epoch = {m["epoch"]: m for m in per_sample}
    return [(w, by_epoch.get(w["epoch"])) for w in weights]


def _margin_by_class(m: dict | None, num_classes: int) -> list[float | None] | None:
    """The mean per-sample value (margin, or least PGD steps) of each class in the epoch's batch."""
    if m is None:
        return None
    values, labels = m["values"].double(), m["labels"]
    return [float(values[labels == c].mean()) if bool((labels == c).any()) else None for c in range(num_classes)]


# ---- stage 3: FAE pool storage ----------------------------------------------------------------
def pool_store(cfg: FerdConfig, round_index: int, synthesis_dir: str | os.PathLike[str],
               out_dir: str | os.PathLike[str], *, previous_dir: str | os.PathLike[str] | None = None) -> PoolArtifact:
    """Append the round's shard to the pool (Parquet, partitioned by round). Idempotent: the
    round's partition is replaced, never duplicated; partitions of later rounds (left by an
    earlier run in the same directory) are removed, so the result is the pool after round r."""
    started = utc_now()
    _schedule(cfg, round_index)
    _previous(round_index, "previous pool", previous_dir)
    read_manifest(synthesis_dir, SYNTHESIS, cfg, round_index=round_index, what="synthesis")
    src = shard_path(synthesis_dir, round_index)
    shard = read_shard(src)  # validates the schema and the round before anything is written
    if shard.round != round_index:
        raise ArtifactError(f"synthesis: {src} holds round {shard.round}, expected {round_index}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if previous_dir is not None:
        previous_dir = Path(previous_dir)
        # in place (the previous pool is the output directory, e.g. a pool kept at one path) the
        # directory may already hold this round or later ones, from an earlier run: replaced below
        in_place = previous_dir.resolve() == out.resolve()
        prev = read_manifest(previous_dir, POOL, cfg, round_index=None if in_place else round_index - 1,
                             what="previous pool")
        if prev.get("pool_rounds", [])[:round_index] != list(range(round_index)) or prev["round"] < round_index - 1:
            raise ArtifactError(f"previous pool: {previous_dir} holds rounds {prev.get('pool_rounds')}, "
                                f"expected 0..{round_index - 1}")
        if not in_place:
            for k in range(round_index):
                rel = Path(f"round={k}") / "part-0.parquet"
                copy_file(previous_dir / rel, out / rel)
    copy_file(src, out / f"round={round_index}" / "part-0.parquet")
    for stale in out.glob("round=*"):
        if int(stale.name.split("=", 1)[1]) > round_index:
            log.warning("pool: removing %s, left by a later round of an earlier run", stale)
            shutil.rmtree(stale)
    pool = FaePool.load(out)
    if pool.rounds != list(range(round_index + 1)):
        raise ArtifactError(f"pool: {out} holds rounds {pool.rounds} after round {round_index}; expected "
                            f"0..{round_index}")
    rows = {str(k): int(pool.shard(k).labels.shape[0]) for k in pool.rounds}
    write_json(out / POOL_INDEX, {"rounds": pool.rounds, "rows": rows, "total_rows": len(pool),
                                  "layout": "round=<r>/part-0.parquet", "columns": pool_columns(out, round_index)})
    write_manifest(out, POOL, cfg, round_index=round_index, started=started,
                   inputs={"synthesis": synthesis_dir, "previous": previous_dir},
                   extra={"pool_rounds": pool.rounds, "rows": len(pool)})
    return PoolArtifact(out, round_index, pool.rounds, len(pool))


def pool_columns(pool_dir: Path, round_index: int) -> dict[str, str]:
    """Column name → Arrow type of the pool's Parquet files."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(pool_dir / f"round={round_index}" / "part-0.parquet")
    return {f.name: str(f.type) for f in schema}


# ---- stage 4: UTAE distillation -----------------------------------------------------------------
def distillation(cfg: FerdConfig, round_index: int, teacher_dir: str | os.PathLike[str],
                 synthesis_dir: str | os.PathLike[str], pool_dir: str | os.PathLike[str],
                 out_dir: str | os.PathLike[str], *, previous_dir: str | os.PathLike[str] | None = None,
                 progress: bool = False) -> DistillationArtifact:
    """The distillation stage of round ``round_index`` (Algorithm 1 lines 13-17 for each of its epochs)."""
    started = utc_now()
    epochs = _schedule(cfg, round_index)
    _previous(round_index, "previous distillation", previous_dir)
    teacher, card = load_teacher(cfg, teacher_dir)
    set_memory_format(teacher, cfg.compute.channels_last)
    read_manifest(synthesis_dir, SYNTHESIS, cfg, round_index=round_index, what="synthesis")
    read_manifest(pool_dir, POOL, cfg, round_index=round_index, what="pool")
    state = _initial_state(cfg)
    if round_index > 0:
        previous_dir = Path(previous_dir)
        read_manifest(previous_dir, DISTILLATION, cfg, round_index=round_index - 1, what="previous distillation")
        _load_student(state, previous_dir)
        state.distiller.load_state_dict(load_tensors(previous_dir / TRAINER_FILE, cfg.device)["distiller"])
    state.history = read_json(Path(synthesis_dir) / HISTORY_FILE)
    state.pool = FaePool.load(pool_dir)
    if state.pool.rounds != list(range(round_index + 1)):
        raise ArtifactError(f"pool: {pool_dir} holds rounds {state.pool.rounds}, expected 0..{round_index}")
    with saving_debug_batch(out_dir):
        distillation_round(state, teacher, epochs, progress=progress)
    state.next_round = round_index + 1

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    complete = state.next_round == cfg.num_rounds
    save_state_dict(state.student.state_dict(), out / STUDENT_FILE,
                    metadata={"arch": cfg.student.arch, "num_classes": str(cfg.num_classes),
                              "teacher_sha256": card["sha256"], "round": str(round_index),
                              "complete": str(complete).lower()})
    save_tensors({"distiller": state.distiller.state_dict(), "round": round_index, "next_epoch": epochs.stop},
                 out / TRAINER_FILE)
    write_json(out / "rng.json", {"seed": cfg.seed, "next_epoch": epochs.stop, "streams": list(RNG_STREAMS),
                                  "derivation": "ferd.rng.derive_seed(seed, stream, epoch): no generator state "
                                                "crosses a round; the next round derives its streams from the "
                                                "seed and its epochs"})
    write_json(out / HISTORY_FILE, state.history)
    write_json(out / CLASS_WEIGHTS_FILE, _class_weights(state.history))
    write_manifest(out, DISTILLATION, cfg, round_index=round_index, started=started,
                   inputs={"teacher": teacher_dir, "synthesis": synthesis_dir, "pool": pool_dir,
                           "previous": previous_dir},
                   extra={"epochs": [epochs.start, epochs.stop], "next_round": state.next_round,
                          "complete": complete})
    losses = {h["epoch"]: h.get("distill", {}) for h in state.history if h["epoch"] in epochs}
    return DistillationArtifact(out, round_index, epochs, out / STUDENT_FILE, complete, losses)
