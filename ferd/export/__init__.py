"""``ferd export``: a finished run's student as files to ship, written whole into one directory.

========================  ====================================================================================
``model.pt2``             the student as a ``torch.export`` program, normalisation inside (:mod:`.program`:
                          float32 NCHW images in [0, 1], any batch size → logits)
``model.onnx``            the same graph in ONNX (with the ``onnx`` extra; :mod:`.onnx_graph`)
``model_card.json``/.md   architecture, dataset, threat model, mean/std, per-class clean and robust accuracy and
                          retention, teacher sha256, lineage, ferd version (:mod:`.card`)
``robustbench.json``      a RobustBench-style model-info entry
``export.json``           which run (student sha256, parameter fingerprint) and the sha256 of every file above
========================  ====================================================================================

``RUN`` is a finished ``ferd run --out`` directory or a stage layout (the ``--out`` of ``ferd stage all``, DVC's
``out``): read as untrusted input and cross-checked first (:func:`.source.read_run`,
:func:`.stage_outputs.read_stage_layout`). The directory is built
beside ``--to`` and moved into place once complete, so ``--to`` holds a whole export or none. ``--to`` must be
absent, empty, or an earlier export of the same run (then replaced); anything else is refused before any work.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.checkpoint import atomic_write_bytes, atomic_write_json, sha256_file
from ..core.dataset_catalog import dataset_info
from ..core.extras import missing_extra
from ..plan.fingerprint import params_fingerprint
from ..algorithm.run_dir import is_lock_file, owned
from .card import build_card, card_markdown, robustbench_entry
from .onnx_graph import ONNX_FILE, require_exporter, save_onnx
from .program import PROGRAM_FILE, export_program, save_program
from .source import ExportSourceError, RunRecord, read_run
from .stage_outputs import is_stage_layout, read_stage_layout

EXPORT_RECORD, EXPORT_FORMAT = "export.json", "ferd-export/1"
CARD_JSON, CARD_MD, ROBUSTBENCH_FILE = "model_card.json", "model_card.md", "robustbench.json"

__all__ = ["ExportError", "ExportResult", "ExportSourceError", "export", "read_run", "read_source", "read_stage_layout"]


class ExportError(ValueError):
    """``--to`` cannot take this export (another run's export, or files that are no export)."""


@dataclass(frozen=True)
class ExportResult:
    dir: Path
    files: dict[str, str]  # name → sha256
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"dir": str(self.dir), "files": sorted(self.files), "record": EXPORT_RECORD}


def _files_under(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if not p.is_dir()}


def _previous_export(to: Path) -> dict | None:
    """The record of the export ``to`` holds (None when absent or empty); refuses anything else."""
    if to.exists() and not to.is_dir():
        raise ExportError(f"--to {to}: exists and is not a directory")
    if not to.exists() or not any(to.iterdir()):
        return None
    try:
        record = json.loads((to / EXPORT_RECORD).read_bytes())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or record.get("format") != EXPORT_FORMAT or not isinstance(
            record.get("files"), dict) or not isinstance(record.get("run"), dict):
        raise ExportError(f"--to {to}: holds files but no ferd export ({EXPORT_RECORD} missing or unreadable); "
                          "use an empty or new directory")
    stray = sorted(f for f in _files_under(to) - set(record["files"]) - {EXPORT_RECORD}
                   if not is_lock_file(Path(f).name))  # another command's lock (run_dir.owned) is no file of it
    if stray:
        raise ExportError(f"--to {to}: holds {stray[0][:120]}, which is no part of the ferd export there; use an "
                          "empty or new directory")
    return record


def _run_identity(record: RunRecord) -> dict[str, str]:
    return {"student_sha256": record.student_sha256,
            "params_fingerprint": params_fingerprint(record.cfg, "distillation")}


def _check_apart(run: Path, to: Path) -> None:
    r, t = run.resolve(), to.resolve()
    if t == r or r in t.parents or t in r.parents:
        raise ExportError(f"--to {to}: inside RUN {run} or containing it; export to a directory of its own")


def _onnx_wanted(onnx: bool | None) -> tuple[bool, str | None]:
    """Whether to write ``model.onnx`` and, when it is skipped for want of the extra, the note that says so.
    ``onnx=True`` without the extra raises ``ModuleNotFoundError`` (the CLI names the extra, status 2)."""
    if onnx is False:
        return False, None
    try:
        require_exporter()
    except ModuleNotFoundError as exc:
        line = missing_extra(exc)
        if onnx or line is None:
            raise
        return False, f"{ONNX_FILE} not written: {line}"
    return True, None


def _swap_in(staging: Path, to: Path) -> None:
    """``staging`` becomes ``to``: an absent or empty ``to`` is replaced by one rename, an earlier export is
    moved aside first and removed after."""
    if to.is_dir() and any(to.iterdir()):
        old = to.with_name(f".{to.name}.old-{uuid.uuid4().hex[:8]}")
        to.rename(old)
        staging.rename(to)
        shutil.rmtree(old)
    else:
        os.replace(staging, to)
    fd = os.open(to.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _captured(what: str, arch: str, make: Callable[[], Any]) -> Any:
    """``make()``, or one line when torch cannot capture the architecture (data-dependent control flow, an
    operator it cannot export): the user's model, not ferd, is what must change."""
    try:
        return make()
    except Exception as exc:  # noqa: BLE001  torch.export / the ONNX exporter raise many kinds
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ExportError(f"student.arch {arch}: {what} cannot capture it ({type(exc).__name__}: {first})") from None


def _write(record: RunRecord, staging: Path, with_onnx: bool) -> dict[str, str]:
    arch = record.cfg.student.arch
    program = _captured("torch.export", arch,
                        lambda: export_program(record.student, dataset_info(record.cfg.dataset).image_size))
    models = {PROGRAM_FILE: sha256_file(save_program(program, staging / PROGRAM_FILE))}
    if with_onnx:
        _captured("the ONNX exporter", arch, lambda: save_onnx(program, staging / ONNX_FILE))
        models[ONNX_FILE] = sha256_file(staging / ONNX_FILE)
    card = build_card(record, models)
    atomic_write_json(staging / CARD_JSON, card)
    atomic_write_bytes(staging / CARD_MD, card_markdown(card).encode())
    atomic_write_json(staging / ROBUSTBENCH_FILE, robustbench_entry(card))
    return {name: sha256_file(staging / name) for name in (*models, CARD_JSON, CARD_MD, ROBUSTBENCH_FILE)}


def read_source(run: str | os.PathLike[str], trusted: Collection[str] = ()) -> RunRecord:
    """The checked records of ``run``: a stage layout's (:func:`.stage_outputs.is_stage_layout`) or a run's;
    ``trusted``: the architectures from outside ferd its parameters may name (:func:`.source.check_arch_trust`)."""
    return read_stage_layout(run, trusted) if is_stage_layout(Path(run)) else read_run(run, trusted)


def export(run: str | os.PathLike[str], to: str | os.PathLike[str], onnx: bool | None = None,
           trust_arch: Collection[str] = ()) -> ExportResult:
    """Export the student of the finished run or stage layout ``run`` into ``to`` (see the module docstring).
    ``onnx``: None writes ``model.onnx`` when the extra is installed (a note says when it is not), True requires
    it, False skips it. ``trust_arch``: the ``package.module:factory`` architectures the run's parameters may name
    (importing runs their code; ferd's own and installed entry points need no mention)."""
    run, to = Path(run), Path(to)
    to = to if to.name else to.resolve()  # `--to .`: the folder by its name (the export is built beside it)
    if not run.is_dir():  # the cheap refusals first: nothing (not even a lock file) written for them
        raise FileNotFoundError(f"RUN {run}: no such directory (expected a `ferd run --out` directory or a stage "
                                "layout)")
    if to.exists() and not to.is_dir():
        raise ExportError(f"--to {to}: exists and is not a directory")
    _check_apart(run, to)
    with_onnx, note = _onnx_wanted(onnx)
    with owned(to, "--to"):
        previous = _previous_export(to)  # before any work: a directory that is no export of a run is refused
        record = read_source(run, trust_arch)
        identity = _run_identity(record)
        if previous is not None and previous["run"] != identity:
            raise ExportError(f"--to {to}: holds the export of another run (student sha256 "
                              f"{str(previous['run'].get('student_sha256'))[:16]}…, this run's "
                              f"{identity['student_sha256'][:16]}…); use another --to, or remove it first")
        to.parent.mkdir(parents=True, exist_ok=True)
        staging = to.with_name(f".{to.name}.export-{uuid.uuid4().hex[:8]}")
        try:
            staging.mkdir()
            files = _write(record, staging, with_onnx)
            atomic_write_json(staging / EXPORT_RECORD, {"format": EXPORT_FORMAT, "run": identity,
                                                        "files": files, "onnx": ONNX_FILE in files})
            _swap_in(staging, to)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(to, files, [note] if note else [])
