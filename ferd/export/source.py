"""What an export reads: a finished ``ferd run --out`` directory, every file checked before it is used.

A run directory is untrusted input. :func:`read_run` accepts it only when its records agree:
``params.json`` validates; ``result.json`` pins ``metrics.json`` to these parameters (:func:`ferd.algorithm.run_dir.is_finished`);
the checkpoint is the last round's and every file it names has the sha256 ``round.json`` recorded
(:func:`ferd.algorithm.round_state.verify_checkpoint`); ``student.safetensors`` holds exactly the checkpoint's student, of
the architecture and classes the parameters name; the teacher's sha256 is the same in the student's metadata,
``teacher/model_card.json`` and the bytes of ``teacher/teacher.safetensors``; ``eval/per_class.json`` has its
schema and its accuracies add up to ``metrics.json``'s averages (student's and teacher's). Any disagreement is one line naming the file.

The architecture names in the parameters read back are resolved only when they are ferd's own or an installed
``ferd.models`` entry point, or when the user named them (``--trust-arch``, :func:`check_arch_trust`): resolving a
``package.module:factory`` imports that module and runs its code, which a file read back must never decide.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Collection
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ..core.checkpoint import load_state_dict, read_metadata, sha256_file
from ..settings.config import FerdConfig
from ..plan.fingerprint import params_fingerprint
from ..models import FerdModel, is_known_model
from ..models.loading import load_model
from ..core.params_io import ConfigError
from ..plan.resolve import parse_config
from ..algorithm.round_state import ROUND_FILE, STUDENT_FILE, checkpoint_dir, read_round_record, verify_checkpoint
from ..algorithm.run_dir import METRICS_FILE, PARAMS_FILE, RESULT_FILE, is_finished, read_metrics
from ..stages.layout import AA_REPORT_DIR, REPORT_DIR, TEACHER_DIR
from ..stages.run import verify_finished
from ..algorithm.teacher_source import CARD_NAME, CHECKPOINT_NAME

PER_CLASS_FILES = (f"{REPORT_DIR}/per_class.json", f"{AA_REPORT_DIR}/per_class.json")  # AA on its own subset: the second
STATS = ("avg", "worst", "nsd")  # the statistics every (model, attack) of metrics.json has


class ExportSourceError(ValueError):
    """The run to export is unfinished, inconsistent, or not a ferd run."""


class PerClassRow(BaseModel):
    """One row of ``eval/per_class.json``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str
    attack: str
    class_index: int
    class_name: str
    accuracy: float | None
    n: int


_ROWS = TypeAdapter(list[PerClassRow])


@dataclass(frozen=True)
class RunRecord:
    """A finished run's student and the records it is exported with, each checked against the others."""

    run: Path
    cfg: FerdConfig
    student: FerdModel
    student_sha256: str
    metrics: dict[str, float]
    per_class: list[PerClassRow]
    teacher_card: dict[str, Any]
    lineage: dict[str, Any]


def json_file(path: Path, kind: type) -> Any:
    """A JSON file's content of type ``kind`` (NaN allowed: metrics.json writes it), or one line naming it."""
    if not path.is_file():
        raise ExportSourceError(f"{path}: missing; expected the file a finished run (or its evaluation) writes")
    try:
        data = json.loads(path.read_bytes())
    except ValueError as exc:
        raise ExportSourceError(f"{path}: not JSON ({type(exc).__name__})") from None
    if not isinstance(data, kind):
        raise ExportSourceError(f"{path}: expected a JSON {'object' if kind is dict else 'array'}, got "
                                f"{type(data).__name__}")
    return data


def check_arch_trust(data: dict[str, Any], where: Path, trusted: Collection[str]) -> None:
    """Before the parameters read back from ``where`` are resolved: each of ``teacher.arch``/``student.arch`` that
    is neither ferd's nor an installed entry point must be one the user named in ``trusted`` (``--trust-arch``), or
    one line says so, naming every such architecture at once; nothing is imported."""
    archs = {side: data[side].get("arch") for side in ("teacher", "student") if isinstance(data.get(side), dict)}
    untrusted = [(side, name) for side, name in archs.items()
                 if isinstance(name, str) and not is_known_model(name) and name not in trusted]
    if untrusted:
        sides = " and ".join(f"{side}.arch {name[:120]!r}" for side, name in untrusted)
        flags = " ".join(f"--trust-arch {name[:120]}" for name in dict.fromkeys(name for _, name in untrusted))
        raise ExportSourceError(f"{where}: {sides}: code from outside ferd, which exporting would import and run; "
                                f"if it is your own architecture, pass {flags}")


def _config(run: Path, trusted: Collection[str]) -> FerdConfig:
    data = json_file(run / PARAMS_FILE, dict)
    check_arch_trust(data, run / PARAMS_FILE, trusted)
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ExportSourceError(f"{run / PARAMS_FILE}: {exc}") from None


def checked_metrics(path: Path, cfg: FerdConfig) -> dict[str, float]:
    """``metrics.json`` with every statistic of the student under each of ``evaluation.attacks``."""
    data = read_metrics(path)
    missing = [f"student.{a}.{s}" for a in cfg.evaluation.attacks for s in STATS if f"student.{a}.{s}" not in data]
    if missing:
        raise ExportSourceError(f"{path}: missing {', '.join(missing[:4])} (the attacks of evaluation.attacks)")
    return data


def checked_per_class(directory: Path, cfg: FerdConfig, metrics: dict[str, float]) -> list[PerClassRow]:
    """The per-class rows under ``directory`` (a run's, or an evaluation artifact's), which must average to
    ``metrics``."""
    rows: list[PerClassRow] = []
    for rel in PER_CLASS_FILES:
        path = directory / rel
        if not path.is_file() and rel != PER_CLASS_FILES[0]:
            continue
        try:
            rows += _ROWS.validate_python(json_file(path, list))
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ExportSourceError(f"{path}: row {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    for model, attack in [(m, a) for m in ("student", "teacher") for a in cfg.evaluation.attacks
                          if f"{m}.{a}.avg" in metrics]:
        mine = [r for r in rows if r.model == model and r.attack == attack]
        if sorted(r.class_index for r in mine) != list(range(cfg.num_classes)):
            raise ExportSourceError(f"{directory / PER_CLASS_FILES[0]}: expected one row per class for "
                                    f"{model}/{attack}")
        total = sum(r.n for r in mine)
        avg = sum((r.accuracy or 0.0) * r.n for r in mine) / total if total else math.nan
        if not math.isclose(avg, metrics[f"{model}.{attack}.avg"], rel_tol=1e-9, abs_tol=1e-9):
            raise ExportSourceError(f"{directory / PER_CLASS_FILES[0]}: {model}/{attack} class accuracies average "
                                    f"{avg:.6f}, metrics.json says {metrics[f'{model}.{attack}.avg']:.6f}")
    return rows


def checked_teacher(directory: Path, cfg: FerdConfig, pinned: str, student: Path) -> dict[str, Any]:
    """The model card of the teacher in ``directory``: of ``cfg``'s teacher parameters, the teacher ``student``'s
    metadata pins (``pinned``), and the sha256 of the checkpoint beside it."""
    path = directory / CARD_NAME
    card = json_file(path, dict)
    for key in ("arch", "sha256", "source", "params_sha256"):
        if not isinstance(card.get(key), str):
            raise ExportSourceError(f"{path}: {key}: expected a string, got {type(card.get(key)).__name__}")
    if card["params_sha256"] != params_fingerprint(cfg, "teacher") or card["arch"] != cfg.teacher.arch:
        raise ExportSourceError(f"{path}: a teacher of other parameters than the student's ({student.parent})")
    if card["sha256"] != pinned:
        raise ExportSourceError(f"{path}: sha256 {card['sha256'][:16]}… is not the teacher the student was "
                                f"distilled from ({student} metadata teacher_sha256 {pinned[:16]}…)")
    checkpoint = directory / CHECKPOINT_NAME
    if not checkpoint.is_file() or sha256_file(checkpoint) != pinned:
        raise ExportSourceError(f"{checkpoint}: missing, or its sha256 differs from {CARD_NAME}'s")
    return card


def checked_student(path: Path, cfg: FerdConfig) -> tuple[FerdModel, str, dict[str, str]]:
    """The student in ``path`` (of ``cfg``'s architecture and classes), its file's sha256 and its metadata (the
    teacher sha256 it pins included)."""
    if not path.is_file():
        raise ExportSourceError(f"{path}: missing; expected the student a finished run writes")
    meta = read_metadata(path)
    if meta.get("arch") != cfg.student.arch or meta.get("num_classes") != str(cfg.num_classes):
        raise ExportSourceError(f"{path}: metadata names a {str(meta.get('arch'))[:40]} with "
                                f"{str(meta.get('num_classes'))[:10]} classes, the parameters a {cfg.student.arch} "
                                f"with {cfg.num_classes}")
    if not isinstance(meta.get("teacher_sha256"), str):
        raise ExportSourceError(f"{path}: metadata teacher_sha256 missing")
    digest = sha256_file(path)
    return load_model(path, cfg.student.arch, cfg.num_classes, cfg.student.mean, cfg.student.std,
                      sha256=digest), digest, meta


def _student(run: Path, cfg: FerdConfig) -> tuple[FerdModel, str, str]:
    """The run's student (the last checkpoint's), its file's sha256 and the teacher sha256 its metadata pins."""
    path = run / STUDENT_FILE
    model, digest, meta = checked_student(path, cfg)
    recorded = load_state_dict(checkpoint_dir(run) / STUDENT_FILE)
    if recorded.keys() != model.state_dict().keys() or not all(
            torch.equal(recorded[k], v) for k, v in model.state_dict().items()):
        raise ExportSourceError(f"{path}: not the student of the run's last checkpoint "
                                f"(checkpoint/{STUDENT_FILE}, whose sha256 round.json records)")
    return model, digest, meta["teacher_sha256"]


def read_run(run: str | Path, trusted: Collection[str] = ()) -> RunRecord:
    """Read and cross-check a finished ``ferd run --out`` directory (see the module docstring); ``trusted``: the
    architectures from outside ferd the user allows it to name."""
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"RUN {run}: no such directory (expected a `ferd run --out` directory)")
    manifest = verify_finished(run)  # every file against the run's manifest (its signature under FERD_SIGNING_KEY)
    cfg = _config(run, trusted)
    if not is_finished(run, cfg):
        raise ExportSourceError(f"{run / METRICS_FILE}: not this run's finished result ({RESULT_FILE} missing, or "
                                f"its params_fingerprint / metrics_sha256 does not match {PARAMS_FILE} / "
                                f"{METRICS_FILE}); finish or re-evaluate it with `ferd run`")
    record = read_round_record(run)
    if record is None or verify_checkpoint(run, cfg, record) != cfg.num_rounds:
        raise ExportSourceError(f"{run}: its checkpoint is not the last round's ({cfg.num_rounds}); finish the run "
                                "with `ferd run`")
    metrics = checked_metrics(run / METRICS_FILE, cfg)
    per_class = checked_per_class(run, cfg, metrics)
    student, digest, teacher_sha256 = _student(run, cfg)
    card = checked_teacher(run / TEACHER_DIR, cfg, teacher_sha256, run / STUDENT_FILE)
    lineage = {"source": "ferd run", "params_fingerprint": {s: params_fingerprint(cfg, s) for s in
                                                            ("teacher", "distillation", "evaluation")},
               "metrics_sha256": sha256_file(run / METRICS_FILE),
               "checkpoint_round_sha256": sha256_file(checkpoint_dir(run) / ROUND_FILE),
               "code": manifest.get("code")}
    return RunRecord(run, cfg, student, digest, metrics, per_class, card, lineage)
