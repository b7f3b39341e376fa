"""The per-class accuracies the fairness page reads from kept evaluations (``benchmarks/fairness.py``), every file read
as untrusted: a student run's ``eval/per_class.csv`` and a kept ``ferd evaluate`` of the comparison's teacher, checked
to be of that teacher (file name, sha256, split, ε) before its numbers are used."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def number(source: str, where: str, value: Any, nullable: bool = False) -> float:
    """``value`` as a float, or one line naming ``source`` and ``where`` when it is no number (None allowed, as NaN,
    when ``nullable``)."""
    if value is None and nullable:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{source}: {where}: expected a number{' or null' if nullable else ''}, got {value!r:.80}")
    return float(value)


@dataclass(frozen=True)
class TeacherCheckpoint:
    """What a kept evaluation of the comparison's teacher must have evaluated: the checkpoint (``teacher.source``),
    its sha256 (pinned in the preset, else the shared teacher's model card) and the L∞ budget (``threat.eps``)."""

    source: str
    sha256: str | None
    eps: float


def teacher_checkpoint(cc, folder: Path) -> TeacherCheckpoint:
    """The teacher every run of the comparison kept in ``folder`` distils from."""
    from ferd.compare.config import teacher_config

    cfg = teacher_config(cc)
    sha = cfg.teacher.sha256
    card = folder / "teacher" / "model_card.json"
    if sha is None and card.is_file():
        sha = json.loads(card.read_text(encoding="utf-8")).get("sha256")
    return TeacherCheckpoint(cfg.teacher.source, sha, cfg.threat.eps)


def class_accuracies(folder: Path, method: str, student: str, seeds: set[int], attack: str,
                     classes: list[str]) -> list[float]:
    """A method's per-class accuracy under ``attack``, the mean over ``seeds`` of its runs' ``eval/per_class.csv``
    (read as untrusted: the classes must be ``classes``, in order, and each accuracy a number in [0, 1])."""
    per_seed = []
    for seed in sorted(seeds):
        path = folder / "runs" / method / student / f"seed={seed}" / ("eval-aa" if attack == "aa" else "eval") \
            / "per_class.csv"
        per_seed.append(class_column(path, "student", attack, classes))
    return [sum(col) / len(col) for col in zip(*per_seed)]


def class_column(path: Path, model: str, attack: str, classes: list[str]) -> list[float]:
    """One model's per-class accuracy under ``attack`` from an evaluation's ``per_class.csv``, read as untrusted:
    the classes must be ``classes``, in order, and each accuracy a number in [0, 1]."""
    rows = [r for r in csv.DictReader(path.open(encoding="utf-8"))
            if r.get("model") == model and r.get("attack") == attack]
    if [r.get("class_name") for r in rows] != classes:
        raise ValueError(f"{path}: class_name: expected the classes {classes} under {attack}")
    accs = [number(str(path), f"accuracy of {r['class_name']}", _float(r.get("accuracy"))) for r in rows]
    if not all(0 <= a <= 1 for a in accs):
        raise ValueError(f"{path}: accuracy: expected fractions in [0, 1] under {attack}")
    return accs


def _float(text: str | None) -> float | str | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return text


def teacher_accuracies(folder: Path, attack: str, classes: list[str], teacher: TeacherCheckpoint) -> list[float]:
    """The teacher's per-class accuracy under ``attack`` from a kept ``ferd evaluate`` of it (``folder``: its
    ``per_class.csv`` and ``settings.json``), read as untrusted: it must be the evaluation of ``teacher`` (the
    checkpoint's file name, its sha256 where either side knows one, the same ε) on the test split, with ``classes``
    in order and each accuracy a number in [0, 1]."""
    settings_path, path = folder / "settings.json", folder / "per_class.csv"
    settings = json.loads(settings_path.read_text(encoding="utf-8"))
    if not isinstance(settings, dict):
        raise ValueError(f"{settings_path}: expected an object of evaluation settings")
    checks = [("teacher", Path(str(settings.get("teacher"))).name, Path(teacher.source).name),
              ("split", settings.get("split"), "test"),
              ("eps", settings.get("eps"), teacher.eps)]
    if teacher.sha256 is not None or settings.get("teacher_sha256") is not None:
        checks.append(("teacher_sha256", settings.get("teacher_sha256"), teacher.sha256))
    for field, found, expected in checks:
        same = (isinstance(found, (int, float)) and math.isclose(found, expected, rel_tol=1e-9)) if field == "eps" \
            else found == expected
        if not same:
            raise ValueError(f"{settings_path}: {field}: expected {expected!r} (the comparison's teacher), "
                             f"got {found!r:.80}")
    return class_column(path, "teacher", attack, classes)
