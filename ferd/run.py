"""``ferd run``: teacher (load or train) → Algorithm 1 → quick evaluation, in one process.

Layout of ``--out DIR`` (every file written atomically):

=====================  ===================================================================
``params.json``        the resolved, validated parameters
``teacher/``           ``teacher.safetensors`` and ``model_card.json``
``checkpoint/``        the round state after the last checkpointed round (``ferd.round_state``)
``pool/``              the FAE pool, Parquet partitioned by round
``student.safetensors``  the distilled student (metadata: arch, num_classes)
``class_weights.json`` p (and the scores behind it) after every generation epoch
``history.json``       per-epoch losses and diagnostics
``metrics.json``       flat ``<model>.<attack>.<statistic>`` keys, accuracies in [0, 1]
``result.json``        the parameter fingerprint the metrics were made with, and their sha256
``eval/``              per-class tables, figures and ``report.md``
=====================  ===================================================================

Re-running the same command resumes from ``checkpoint/`` (a finished run re-evaluates only). A
directory that holds another run (other parameters up to the student) or files that are no run's is
refused before anything is written, and a second process on the same directory is refused by its
lock (:mod:`ferd.run_dir`).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .stages.in_process import run_algorithm1
from .checkpoint import atomic_write_json, save_state_dict
from .compute import set_memory_format
from .config import FerdConfig
from .evaluation.quick import quick_evaluation
from .preflight import preflight
from .round_state import class_weights, read_round_record, verify_checkpoint
from .run_dir import check_run_dir, owned, write_result
from .teacher_source import obtain_teacher

log = logging.getLogger(__name__)


def run(cfg: FerdConfig, out_dir: str | Path, progress: bool = True, evaluate_teacher: bool = True
        ) -> dict[str, float]:
    """Run FERD end to end into ``out_dir``; returns the flat metrics (the teacher's too unless
    ``evaluate_teacher`` is false, e.g. in a comparison that evaluates its shared teacher once)."""
    out = Path(out_dir)
    with owned(out):
        # before anything is written: another run's directory is refused, a checkpoint of this one checked
        preflight(cfg)  # the device, the teacher source, the test set
        if check_run_dir(out, cfg) == "resume" and read_round_record(out) is not None:
            verify_checkpoint(out, cfg)
        out.mkdir(parents=True, exist_ok=True)
        started = time.time()
        params = out / "params.json"
        if not params.is_file() or json.loads(params.read_text()) != cfg.model_dump(mode="json"):
            atomic_write_json(params, cfg.model_dump(mode="json"))
        teacher, card = obtain_teacher(cfg, out / "teacher", progress=progress)
        teacher.to(cfg.device)
        state = run_algorithm1(teacher, cfg, checkpoint_dir=out, progress=progress)
        student = set_memory_format(state.student.eval(), False)  # evaluation runs contiguous (ferd.compute)
        set_memory_format(teacher, False)
        save_state_dict(student.state_dict(), out / "student.safetensors",
                        metadata={"arch": cfg.student.arch, "num_classes": str(cfg.num_classes),
                                  "teacher_sha256": card["sha256"]})
        atomic_write_json(out / "class_weights.json", class_weights(state.history))
        atomic_write_json(out / "history.json", state.history)
        models = {"teacher": teacher, "student": student} if evaluate_teacher else {"student": student}
        metrics = quick_evaluation(cfg, models, out / "eval", progress, history=state.history)
        metrics["run.seconds"] = round(time.time() - started, 1)
        write_result(out, cfg, metrics)
    return metrics
