"""The state that crosses a round boundary of Algorithm 1, and its one on-disk layout.

Algorithm 1 grouped in rounds (:mod:`ferd.algorithm.rounds`) carries from round r to round r+1 only: the
student θ_s with its optimiser and LR schedule, the generator with its optimiser, the class
distribution p with its scores, the pool 𝒫 and the history. Every random number is derived from
(seed, stream, epoch) (:mod:`ferd.core.rng`), so no generator state crosses a round. :class:`RunState`
holds exactly that, and its parts are saved and loaded one way, whoever writes them:

=============  ===============  ===============================================================
part           written by       files
=============  ===============  ===============================================================
generation     synthesis r      ``generator.pt`` (generator + Adam state), ``reweighting.pt`` (p, scores)
distillation   distillation r   ``student.safetensors`` (θ_s), ``trainer.pt`` (SGD + LR schedule)
history        both             ``history.json``
pool           pool store r     ``round=<k>/part-0.parquet`` (:mod:`ferd.data.pool`)
=============  ===============  ===============================================================

The stage split writes each part into its stage's artifact (:mod:`ferd.stages`). ``ferd run`` writes
all of them into ``<out>/checkpoint/`` with ``round.json`` (the next round, the parameter fingerprint,
the sha256 of every file of the checkpoint, of every pool shard and of the files outside it the run
pins, e.g. its teacher; sealed and, with ``$FERD_SIGNING_KEY``, signed: :func:`ferd.core.provenance.seal`)
and the pool into ``<out>/pool/``. ``round.json`` is untrusted input when read back: every field is
required, ``files`` must name exactly :data:`CHECKPOINT_FILES` (an empty or partial map is refused, never
"nothing to check"), and its seal and signature are verified before anything it names is used. A checkpoint is
written whole beside the old one and swapped in by two renames, so a kill at any instant leaves one
complete checkpoint (``checkpoint/``, or ``checkpoint.old/`` between the renames).
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..compute import distributed
from ..core import rng
from ..core.provenance import read_sealed, seal
from ..core.checkpoint import atomic_write_bytes, atomic_write_json, load_state_dict, save_state_dict, sha256_file
from ..core.kill_points import kill_point
from ..compute.switches import compile_in_place, compile_settings, set_memory_format
from ..settings.config import FerdConfig
from ..data import dataset_info
from ..distill.distiller import Distiller
from ..plan.fingerprint import params_fingerprint
from ..models import FerdModel, create_model
from ..plan.resolve import Plan
from ..data.pool import FaePool, shard_file, shards_under

log = logging.getLogger(__name__)

GENERATOR_FILE, REWEIGHT_FILE = "generator.pt", "reweighting.pt"
STUDENT_FILE, TRAINER_FILE, HISTORY_FILE = "student.safetensors", "trainer.pt", "history.json"
CHECKPOINT_DIR, ROUND_FILE = "checkpoint", "round.json"
CHECKPOINT_FILES = (GENERATOR_FILE, REWEIGHT_FILE, STUDENT_FILE, TRAINER_FILE, HISTORY_FILE)
"""Every file :func:`save_checkpoint` writes besides ``round.json``: the exact set its ``files`` must name."""
ROUND_FIELDS: dict[str, type] = {"next_round": int, "rounds": int, "params_fingerprint": str, "files": dict,
                                 "pool": dict, "pinned": dict}
_OLD, _PARTIAL = "checkpoint.old", "checkpoint.partial"
PathLike = str | os.PathLike[str]


class StateError(ValueError):
    """A saved part of the round state is missing, corrupt, or does not fit the parameters."""


def build_student(cfg: FerdConfig) -> FerdModel:
    """The student f^S with a seeded initialisation (θ_s, Algorithm 1 line 1); under torchrun its
    BatchNorm layers use global-batch statistics (:func:`ferd.compute.distributed.sync_batchnorm`)."""
    with rng.seeded(cfg.seed, "student-init"):
        student = create_model(cfg.student.arch, num_classes=cfg.num_classes, mean=cfg.student.mean,
                               std=cfg.student.std).to(cfg.device)
    return distributed.sync_batchnorm(student, cfg.device)


@dataclass
class RunState:
    """Everything that crosses a round boundary."""

    plan: Plan
    student: FerdModel
    synthesizer: Any  # the method's generation stage (Plan.synthesizer)
    distiller: Distiller
    pool: FaePool
    p: torch.Tensor
    scores: torch.Tensor
    next_round: int = 0
    history: list[dict] = field(default_factory=list)

    @property
    def cfg(self) -> FerdConfig:
        return self.plan.cfg

    @classmethod
    def initial(cls, plan: Plan) -> RunState:
        """The state before round 0 (Algorithm 1 lines 1-2: θ_s, θ_g, uniform p) of the resolved ``plan``."""
        cfg = plan.cfg
        info = dataset_info(cfg.dataset)
        student = build_student(cfg)
        c = cfg.num_classes
        return cls(plan=plan, student=student, synthesizer=plan.synthesizer(c, info.image_size),
                   distiller=Distiller(student, plan.distill, plan.side(), cfg.epochs, cfg.threat.eps,
                                       cfg.threat.step, cfg.seed, cfg.device, flip=info.flip_invariant,
                                       compute=cfg.compute),
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


# ---- the parts, saved and loaded one way ---------------------------------------------------------
def _save_tensors(obj: dict[str, Any], path: Path) -> None:
    """``torch.save`` of tensors / numbers / strings / lists, atomically; loads with ``weights_only``."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_tensors(path: PathLike, device: str | torch.device = "cpu") -> dict:
    """A file written by :func:`_save_tensors` (``torch.load(weights_only=True)``: nothing is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise StateError(f"{path}: missing")
    try:
        obj = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated or not a tensor file
        raise StateError(f"{path}: not a readable ferd state file ({type(exc).__name__})") from exc
    if not isinstance(obj, dict):
        raise StateError(f"{path}: expected a dict of tensors, got {type(obj).__name__}")
    return obj


def _class_vector(value: Any, name: str, path: Path, num_classes: int) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or value.shape != (num_classes,) or value.dtype != torch.float64:
        raise StateError(f"{path}: {name} must be float64 of shape ({num_classes},), got "
                         f"{getattr(value, 'dtype', type(value).__name__)} {tuple(getattr(value, 'shape', ()))}")
    if not bool(torch.isfinite(value).all()):
        raise StateError(f"{path}: {name} holds NaN/Inf")
    return value


def save_generation(state: RunState, out: PathLike, **records: Any) -> None:
    """The generation part: generator (+ optimiser) and p with its scores; ``records`` are kept beside p
    in ``reweighting.pt`` for the reader (the synthesis stage's per-epoch margins), never read back."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _save_tensors(state.synthesizer.state_dict(), out / GENERATOR_FILE)
    _save_tensors({"p": state.p, "scores": state.scores, **records}, out / REWEIGHT_FILE)


def load_generation(state: RunState, directory: PathLike) -> None:
    d, c = Path(directory), state.cfg.num_classes
    state.synthesizer.load_state_dict(load_tensors(d / GENERATOR_FILE, state.cfg.device))
    rw = load_tensors(d / REWEIGHT_FILE)
    p = _class_vector(rw.get("p"), "p", d / REWEIGHT_FILE, c)
    if bool((p < 0).any()) or abs(float(p.sum()) - 1.0) > 1e-6:
        raise StateError(f"{d / REWEIGHT_FILE}: p must be a probability vector (non-negative, sum 1)")
    state.p, state.scores = p, _class_vector(rw.get("scores"), "scores", d / REWEIGHT_FILE, c)


def save_distillation(state: RunState, out: PathLike, metadata: dict[str, str], **records: Any) -> None:
    """The distillation part: the student's weights (safetensors, with ``metadata``) and its trainer
    (SGD + LR-scheduler state) with ``records`` beside it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_state_dict(state.student.state_dict(), out / STUDENT_FILE, metadata=metadata)
    _save_tensors({"distiller": state.distiller.state_dict(), **records}, out / TRAINER_FILE)


def load_student(state: RunState, directory: PathLike) -> None:
    try:
        state.student.load_state_dict(load_state_dict(Path(directory) / STUDENT_FILE))
    except FileNotFoundError as exc:
        raise StateError(f"{Path(directory) / STUDENT_FILE}: missing") from exc
    except RuntimeError as exc:  # keys or shapes of another architecture
        raise StateError(f"{Path(directory) / STUDENT_FILE}: not a {state.cfg.student.arch} student "
                         f"({str(exc).splitlines()[0][:200]})") from exc


def load_distillation(state: RunState, directory: PathLike) -> None:
    load_student(state, directory)
    state.distiller.load_state_dict(load_tensors(Path(directory) / TRAINER_FILE, state.cfg.device)["distiller"])


def save_history(state: RunState, out: PathLike) -> None:
    atomic_write_json(Path(out) / HISTORY_FILE, state.history)


def class_weights(history: list[dict]) -> list[dict]:
    """p (and the scores behind it) after every generation epoch: ``class_weights.json``."""
    return [{"epoch": h["epoch"], "p": h["p"], "scores": h["scores"], "strategy": h["strategy"]} for h in history]


def load_history(state: RunState, directory: PathLike) -> None:
    path = Path(directory) / HISTORY_FILE
    if not path.is_file():
        raise StateError(f"{path}: missing")
    history = json.loads(path.read_text())
    if not isinstance(history, list) or not all(isinstance(h, dict) and "epoch" in h for h in history):
        raise StateError(f"{path}: expected a list of per-epoch records")
    state.history = history


# ---- ferd run's checkpoint: every part in one directory ------------------------------------------
def save_checkpoint(state: RunState, out: PathLike, pinned: tuple[str, ...] = ()) -> None:
    """The whole state after round ``state.next_round - 1``: the pool's new shards under ``<out>/pool``
    first (a checkpoint never names a round that is not on disk), then every part into
    ``<out>/checkpoint.partial``, ``round.json`` last (sealed), and the swap. ``pinned``: files under
    ``out`` outside the checkpoint that the run goes on with (its teacher), whose sha256 a resume checks."""
    out = Path(out)
    pool_dir = out / "pool"
    previous = read_round_record(out)
    known = {int(k): v for k, v in (previous or {}).get("pool", {}).items() if int(k) < state.next_round}
    new = [r for r in state.pool.rounds if r not in known]
    for path in state.pool.save(pool_dir, rounds=new):  # a round's shard never changes once appended: O(R)
        known[int(path.parent.name.split("=")[1])] = sha256_file(path)
    partial, final, old = out / _PARTIAL, out / CHECKPOINT_DIR, out / _OLD
    shutil.rmtree(partial, ignore_errors=True)
    round_index = state.next_round - 1
    save_generation(state, partial)
    save_distillation(state, partial, metadata={"arch": state.cfg.student.arch,
                                                "num_classes": str(state.cfg.num_classes),
                                                "round": str(round_index)})
    save_history(state, partial)
    files = {name: sha256_file(partial / name) for name in CHECKPOINT_FILES}
    atomic_write_json(partial / ROUND_FILE, seal({
        "next_round": state.next_round, "rounds": state.cfg.num_rounds,
        "params_fingerprint": params_fingerprint(state.cfg, "distillation"), "files": files,
        "pool": {str(k): known[k] for k in sorted(known)},
        "pinned": {rel: sha256_file(out / rel) for rel in sorted(pinned)}}))
    kill_point("checkpoint.written")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        kill_point("checkpoint.between-renames")
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    kill_point("checkpoint.saved")


def checkpoint_dir(out: PathLike) -> Path | None:
    """The complete checkpoint under ``out`` (``checkpoint/``, or ``checkpoint.old/`` after a kill
    between the two renames of :func:`save_checkpoint`); None when there is none."""
    for name in (CHECKPOINT_DIR, _OLD):
        if (Path(out) / name / ROUND_FILE).is_file():
            return Path(out) / name
    return None


def read_round_record(out: PathLike) -> dict | None:
    """The checkpoint's ``round.json`` (every field present and of its type, sealed, signed under the key);
    None when there is no checkpoint."""
    d = checkpoint_dir(out)
    return None if d is None else read_sealed(d / ROUND_FILE, ROUND_FIELDS, StateError)


def load_checkpoint(state: RunState, out: PathLike) -> bool:
    """Load ``<out>``'s checkpoint into ``state`` after checking it against the parameters and the
    sha256 of every file and pool shard it names; False when there is none. Pool rounds on disk from
    or after the checkpoint's next round (written before a kill) are removed."""
    out, cfg = Path(out), state.cfg
    record = read_round_record(out)
    if record is None:
        stale = shards_under(out / "pool")
        if stale:
            log.warning("pool: %s holds rounds %s but no checkpoint (a run killed before its first checkpoint): "
                        "removed", out / "pool", sorted(stale))
            for path in stale.values():
                shutil.rmtree(path.parent)
        return False
    next_round = verify_checkpoint(out, cfg, record)
    for r, path in shards_under(out / "pool").items():
        if r >= next_round:
            log.warning("pool: removing round %d under %s, written after the last checkpoint", r, out / "pool")
            shutil.rmtree(path.parent)
    d = checkpoint_dir(out)
    load_generation(state, d)
    load_distillation(state, d)
    load_history(state, d)
    state.pool = FaePool.load(out / "pool")
    state.next_round = next_round
    return True


def verify_checkpoint(out: PathLike, cfg: FerdConfig, record: dict | None = None) -> int:
    """Check ``<out>``'s checkpoint against the parameters (fingerprint, next round in range) and the
    sha256 of every file and pool shard it names, without loading it; returns its next round. Cheap:
    an entry point calls it before any work (:func:`ferd.stages.run.run`)."""
    out = Path(out)
    record = record if record is not None else read_round_record(out)
    d = checkpoint_dir(out)
    if record is None or d is None:
        raise StateError(f"{out}: no checkpoint")
    if record.get("params_fingerprint") != params_fingerprint(cfg, "distillation"):
        raise StateError(f"{d}: written by a run with other parameters; resume with the same parameters, "
                         "or use a fresh output directory")
    next_round = record.get("next_round")
    if not isinstance(next_round, int) or not 1 <= next_round <= cfg.num_rounds:
        raise StateError(f"{d / ROUND_FILE}: next_round must be an integer in [1, {cfg.num_rounds}], "
                         f"got {str(next_round)[:40]}")
    if record["rounds"] != cfg.num_rounds:
        raise StateError(f"{d / ROUND_FILE}: rounds is {record['rounds']}, these parameters run {cfg.num_rounds}")
    files = record["files"]
    if set(files) != set(CHECKPOINT_FILES):
        raise StateError(f"{d / ROUND_FILE}: files must name exactly {', '.join(sorted(CHECKPOINT_FILES))}, got "
                         f"{', '.join(sorted(map(str, files)))[:200] or 'none'}")
    try:
        pool = {int(k): v for k, v in record["pool"].items()}
    except (TypeError, ValueError):
        raise StateError(f"{d / ROUND_FILE}: pool must map rounds to sha256") from None
    if sorted(pool) != list(range(next_round)):
        raise StateError(f"{d / ROUND_FILE}: names pool rounds {sorted(pool)[:8]}, expected 0..{next_round - 1}")
    pinned = record["pinned"]
    for rel in pinned:
        if not isinstance(rel, str) or rel.startswith("/") or any(p in ("", ".", "..") for p in rel.split("/")):
            raise StateError(f"{d / ROUND_FILE}: pinned names {str(rel)[:80]!r}, not a path inside {out}")
    named = [*((f"files[{n!r}]", d / n, h) for n, h in files.items()),
             *((f"pool[{r}]", out / "pool" / shard_file(r), h) for r, h in pool.items()),
             *((f"pinned[{rel!r}]", out / rel, h) for rel, h in pinned.items())]
    for field_name, path, digest in named:
        if not isinstance(digest, str) or len(digest) != 64:
            raise StateError(f"{d / ROUND_FILE}: {field_name} must be a sha256 (64 hex digits)")
        if not path.is_file() or sha256_file(path) != digest:
            raise StateError(f"{path}: missing or changed since the checkpoint (sha256 differs from {field_name} "
                             f"in {d / ROUND_FILE})")
    for name in (GENERATOR_FILE, REWEIGHT_FILE, TRAINER_FILE):  # readable tensor files (small)
        load_tensors(d / name)
    return next_round
