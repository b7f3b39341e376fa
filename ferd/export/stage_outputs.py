"""What an export reads from a stage layout: the ``--out`` of ``ferd stage all``, or DVC's ``out`` after
``dvc repro`` (``teacher/``, ``round-<r>/{synthesis,pool,distillation}/``, ``evaluation/``, each an artifact with a
sealed ``manifest.json``, :mod:`ferd.stages.artifacts`).

Every artifact under the layout is verified first, as ``ferd lineage verify`` does (checksum, signature under
``FERD_SIGNING_KEY``, every listed file's sha256, no unlisted file, each input's manifest sha256). The evaluation
artifact then names what is exported: its manifest's parameters (the ``evaluation`` scope: everything a result
depends on, the pinned teacher's ``source`` taken from the teacher's manifest) give the configuration, which must
reproduce its fingerprint; its ``student`` input is the final distillation artifact (the last round, complete),
whose student is exported; its ``teacher`` input holds the teacher card and bytes; its ``metrics.json`` and
``eval/per_class.json`` the numbers. The checks of a run export follow (:mod:`.source`). Any disagreement is one
line naming the file.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from ..core.checkpoint import sha256_file
from ..settings.config import FerdConfig
from ..plan.fingerprint import params_fingerprint
from ..plan.graph import BY_NAME
from ..stages.lineage import verify_run
from ..core.params_io import ConfigError
from ..plan.resolve import parse_config
from ..core.provenance import read_sealed
from ..algorithm.round_state import STUDENT_FILE
from ..algorithm.run_dir import METRICS_FILE, PARAMS_FILE
from ..stages.artifacts import MANIFEST, ArtifactError, read_manifest
from ..stages.layout import DISTILLATION, EVALUATION, TEACHER, TEACHER_DIR
from .source import (ExportSourceError, RunRecord, check_arch_trust, checked_metrics, checked_per_class,
                     checked_student, checked_teacher)

EVALUATION_DIR = BY_NAME["evaluation"].subdir


def is_stage_layout(path: Path) -> bool:
    """Stage artifacts rather than a ``ferd run`` directory (which has ``params.json`` at its top): a manifest in
    ``path`` itself (one artifact) or in its teacher or evaluation subdirectory."""
    return not (path / PARAMS_FILE).exists() and any(
        (d / MANIFEST).is_file() for d in (path, path / TEACHER_DIR, path / EVALUATION_DIR))


def _sealed(path: Path, required: dict[str, type]) -> dict[str, Any]:
    return read_sealed(path, required, ExportSourceError)


def _nested(dotted: dict[str, Any]) -> dict[str, Any]:
    """``{"threat.eps": 0.03}`` → ``{"threat": {"eps": 0.03}}``."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def _config(evaluation: dict[str, Any], teacher: dict[str, Any], where: Path, trusted: Collection[str]
            ) -> FerdConfig:
    """The configuration the evaluation manifest's parameters give (a pinned teacher's ``source`` is in no
    fingerprint: the teacher manifest records it); it must reproduce the manifest's fingerprint."""
    data = _nested(evaluation["params"])
    if isinstance(data.get("teacher"), dict) and "source" not in data["teacher"]:
        data["teacher"]["source"] = teacher["source"]
    check_arch_trust(data, where, trusted)
    try:
        cfg = parse_config(data)
    except ConfigError as exc:
        raise ExportSourceError(f"{where}: params: {exc}") from None
    if params_fingerprint(cfg, EVALUATION) != evaluation["params_fingerprint"]:
        raise ExportSourceError(f"{where}: params do not give its params_fingerprint (written by another ferd "
                                "version, or changed)")
    return cfg


def _input_dir(evaluation_dir: Path, manifest: dict[str, Any], name: str) -> Path:
    record = manifest["inputs"].get(name)
    if not isinstance(record, dict) or not isinstance(record.get("relpath"), str):
        raise ExportSourceError(f"{evaluation_dir / MANIFEST}: inputs.{name}: expected its relpath")
    return (evaluation_dir / record["relpath"]).resolve()


def _verified(layout: Path) -> None:
    report = verify_run(layout)
    if report.problems:
        more = f" (and {len(report.problems) - 1} more problems)" if len(report.problems) > 1 else ""
        raise ExportSourceError(f"{report.problems[0]}{more}")


def read_stage_layout(layout: str | Path, trusted: Collection[str] = ()) -> RunRecord:
    """Read and cross-check a stage layout (see the module docstring); ``trusted`` as for
    :func:`.source.read_run`."""
    layout = Path(layout)
    if (layout / MANIFEST).is_file():
        raise ExportSourceError(f"RUN {layout}: one stage artifact; export the directory that holds the whole "
                                f"stage layout ({TEACHER_DIR}/, round-<r>/, {EVALUATION_DIR}/), e.g. {layout.parent}")
    ev_dir = layout / EVALUATION_DIR
    if not (ev_dir / MANIFEST).is_file():
        raise ExportSourceError(f"{ev_dir}: no evaluation artifact; a stage layout is exported once its evaluation "
                                "stage has run (`dvc repro`, or `ferd stage evaluation`)")
    _verified(layout)
    ev_manifest = _sealed(ev_dir / MANIFEST, {"params": dict, "params_fingerprint": str, "inputs": dict})
    teacher_dir, student_dir = _input_dir(ev_dir, ev_manifest, "teacher"), _input_dir(ev_dir, ev_manifest, "student")
    cfg = _config(ev_manifest, _sealed(teacher_dir / MANIFEST, {"source": str}), ev_dir / MANIFEST, trusted)
    last = cfg.num_rounds - 1
    try:
        read_manifest(ev_dir, EVALUATION, cfg, what="evaluation")
        read_manifest(teacher_dir, TEACHER, cfg, what="teacher")
        distilled = read_manifest(student_dir, DISTILLATION, cfg, round_index=last, what="student")
    except ArtifactError as exc:
        raise ExportSourceError(str(exc)) from None
    if distilled.get("complete") is not True:
        raise ExportSourceError(f"{student_dir / MANIFEST}: not the final student (complete is not true)")
    metrics = checked_metrics(ev_dir / METRICS_FILE, cfg)
    per_class = checked_per_class(ev_dir, cfg, metrics)
    student, digest, meta = checked_student(student_dir / STUDENT_FILE, cfg)
    if meta.get("round") != str(last) or meta.get("complete") != "true":
        raise ExportSourceError(f"{student_dir / STUDENT_FILE}: metadata round {str(meta.get('round'))[:8]}, "
                                f"complete {str(meta.get('complete'))[:8]}; expected the final round {last}'s")
    card = checked_teacher(teacher_dir, cfg, meta["teacher_sha256"], student_dir / STUDENT_FILE)

    def artifact(directory: Path) -> dict[str, str]:
        return {"path": Path(directory).relative_to(layout.resolve()).as_posix()
                if directory.is_relative_to(layout.resolve()) else str(directory),
                "manifest_sha256": sha256_file(directory / MANIFEST)}

    lineage = {"source": "ferd stage (a stage layout: ferd stage all, dvc repro)",
               "params_fingerprint": {s: params_fingerprint(cfg, s) for s in (TEACHER, DISTILLATION, EVALUATION)},
               "metrics_sha256": sha256_file(ev_dir / METRICS_FILE),
               "artifacts": {TEACHER: artifact(teacher_dir), DISTILLATION: artifact(student_dir),
                             EVALUATION: artifact(ev_dir.resolve())},
               "code": ev_manifest.get("code")}
    return RunRecord(layout, cfg, student, digest, metrics, per_class, card, lineage)
