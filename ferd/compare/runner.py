"""``ferd compare``: run every (method, student, seed) of a preset and write the comparison.

Layout of ``--out DIR``::

    teacher/                      the shared teacher (checkpoint + model card) and teacher/eval/
    runs/<method>/<student>/seed=<s>/   one ``ferd run`` each (resumable; skipped once finished)
    comparison.md, comparison.csv, comparison.json, per_class_<attack>.png   (:mod:`.report`)

A finished run (``metrics.json`` with a ``result.json`` carrying the current parameters'
:func:`~ferd.plan.fingerprint.params_fingerprint`: :func:`~ferd.compare.config.arm_status`, which the report uses
too) is not run again, so an interrupted comparison resumes where it stopped; a run made with other
parameters (a changed preset) is moved to ``.stale/`` beside it and run again, and the DVC matrix stage and the
Kubeflow ``ParallelFor`` can each run one arm (``--method/--student/--seed``) and share the report.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..settings.config import FerdConfig
from ..evaluation.quick import quick_evaluation
from ..evaluation.resume import partial_dir, remove_partial
from ..stages.run import run
from ..algorithm.run_dir import is_finished, owned, set_aside, write_result
from ..algorithm.teacher_source import obtain_teacher
from ..stages.layout import REPORT_DIR, TEACHER_DIR
from .config import Arm, CompareConfig, arm_status, arms, finished_arm_metrics, run_config, teacher_config

log = logging.getLogger(__name__)


def prepare_teacher(cc: CompareConfig, out: Path, progress: bool = False) -> tuple[str, str]:
    """Train or load the shared teacher into ``out/teacher`` and evaluate it once (``teacher/eval``), holding
    the folder's lock: arms started together into one ``--out`` wait for the first, which prepares it, and find it
    finished. Returns (checkpoint path, sha256)."""
    with owned(out / TEACHER_DIR, "teacher", wait=True) as teacher_dir:
        return prepare_teacher_dir(teacher_config(cc), teacher_dir, progress, cc.evaluate_teacher)


def prepare_teacher_dir(cfg: FerdConfig, teacher_dir: Path, progress: bool = False, evaluate: bool = True
                        ) -> tuple[str, str]:
    """:func:`prepare_teacher` for one folder (what the Kubeflow teacher task writes)."""
    teacher, card = obtain_teacher(cfg, teacher_dir, progress=progress)
    ckpt = (teacher_dir / card["checkpoint"]).resolve()
    ev = teacher_dir / REPORT_DIR
    if evaluate and not is_finished(ev, cfg, "teacher-evaluation", card["sha256"]):
        metrics = quick_evaluation(cfg, {"teacher": teacher.to(cfg.device).eval()}, ev, progress)
        write_result(ev, cfg, metrics, "teacher-evaluation", card["sha256"])
        remove_partial(partial_dir(ev))  # the result is recorded: the kept attacks go
    return str(ckpt), card["sha256"]


def run_arm(cc: CompareConfig, arm: Arm, out: Path, teacher: tuple[str, str], progress: bool = False
            ) -> dict[str, float]:
    """One run of the comparison (skipped when already finished with the same parameters)."""
    return run_arm_dir(run_config(cc, arm, teacher), arm, out / arm.relpath, progress)


def run_arm_dir(cfg: FerdConfig, arm: Arm, run_dir: Path, progress: bool = False) -> dict[str, float]:
    """:func:`run_arm` for one folder; also writes ``arm.json`` (method, student, seed)."""
    if (metrics := finished_arm_metrics(run_dir, cfg)) is not None:  # the report decides with the same function
        log.info("%s: finished earlier, not run again", arm.relpath)
        return metrics
    if arm_status(run_dir, cfg) == "stale":  # made with other parameters (a preset changed): kept aside, run again
        log.warning("%s: not a run of these parameters (made with others, or other files); moved to %s and run "
                    "again", arm.relpath, set_aside(run_dir))
    started = time.time()
    metrics = run(cfg, run_dir, progress=progress, evaluate_teacher=False, records={"arm.json": asdict(arm)})
    log.info("%s: %.0f s, student pgd20 worst %.3f", arm.relpath, time.time() - started,
             metrics.get("student.pgd20.worst", float("nan")))
    return metrics


def assemble(out: Path, teacher_dir: Path, run_dirs: list[Path]) -> Path:
    """Lay out separately produced artifacts (Kubeflow's collected runs) as ``ferd compare --out``
    does, with symbolic links, so :func:`ferd.compare.report.write_report` can read them."""
    out.mkdir(parents=True, exist_ok=True)
    (out / TEACHER_DIR).symlink_to(teacher_dir.resolve(), target_is_directory=True)
    for d in run_dirs:
        arm = Arm(**json.loads((d / "arm.json").read_text()))
        (out / arm.relpath).parent.mkdir(parents=True, exist_ok=True)
        (out / arm.relpath).symlink_to(d.resolve(), target_is_directory=True)
    return out


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
