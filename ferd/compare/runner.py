"""``ferd compare``: run every (method, student, seed) of a preset and write the comparison.

Layout of ``--out DIR``::

    teacher/                      the shared teacher (checkpoint + model card) and teacher/eval/
    runs/<method>/<student>/seed=<s>/   one ``ferd run`` each (resumable; skipped once finished)
    comparison.md, comparison.csv, comparison.json, per_class_<attack>.png   (:mod:`.report`)

A finished run (``metrics.json`` present and ``params.json`` equal to the run's parameters) is not
run again, so an interrupted comparison resumes where it stopped, and the DVC matrix stage and the
Kubeflow ``ParallelFor`` can each run one arm (``--method/--student/--seed``) and share the report.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from ..checkpoint import atomic_write_bytes
from ..run import quick_evaluation, run
from ..teacher_source import obtain_teacher
from .config import Arm, CompareConfig, arms, run_config, teacher_config

log = logging.getLogger(__name__)


def prepare_teacher(cc: CompareConfig, out: Path, progress: bool = False) -> tuple[str, str]:
    """Train or load the shared teacher into ``out/teacher`` and evaluate it once (``teacher/eval``).
    Returns (checkpoint path, sha256)."""
    cfg = teacher_config(cc)
    teacher, card = obtain_teacher(cfg, out / "teacher", progress=progress)
    ckpt = (out / "teacher" / card["checkpoint"]).resolve()
    metrics_path = out / "teacher" / "eval" / "metrics.json"
    if not metrics_path.is_file():
        metrics = quick_evaluation(cfg, {"teacher": teacher.to(cfg.device).eval()}, out / "teacher" / "eval",
                                   progress)
        atomic_write_bytes(metrics_path, (json.dumps(metrics, indent=2, sort_keys=True) + "\n").encode())
    return str(ckpt), card["sha256"]


def run_arm(cc: CompareConfig, arm: Arm, out: Path, teacher: tuple[str, str], progress: bool = False
            ) -> dict[str, float]:
    """One run of the comparison (skipped when already finished with the same parameters)."""
    cfg = run_config(cc, arm, teacher)
    run_dir = out / arm.relpath
    metrics_path, params_path = run_dir / "metrics.json", run_dir / "params.json"
    if metrics_path.is_file() and params_path.is_file() and \
            json.loads(params_path.read_text()) == cfg.model_dump(mode="json"):
        log.info("%s: finished earlier, not run again", arm.relpath)
        return json.loads(metrics_path.read_text())
    started = time.time()
    metrics = run(cfg, run_dir, progress=progress, evaluate_teacher=False)
    log.info("%s: %.0f s, student pgd20 worst %.3f", arm.relpath, time.time() - started,
             metrics.get("student.pgd20.worst", float("nan")))
    return metrics


def run_comparison(cc: CompareConfig, out: str | Path, progress: bool = False, only: Arm | None = None,
                   threads: int | None = None) -> Path:
    """Every arm (or ``only`` one), then the report (unless ``only``). Returns ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    teacher = prepare_teacher(cc, out, progress)
    todo = [only] if only else arms(cc)
    from tqdm.auto import tqdm

    for arm in tqdm(todo, desc="compare", disable=not progress or len(todo) == 1):
        run_arm(cc, arm, out, teacher, progress=False)
    if only is None:
        from .report import write_report

        write_report(cc, out)
    return out
