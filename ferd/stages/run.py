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
``metrics.json``       flat ``<model>.<attack>.<statistic>`` keys, accuracies in [0, 1]; ``run.seconds``
                       the wall time of the run's kept work (earlier processes up to their last checkpoint,
                       from ``elapsed.json``, plus this process)
``elapsed.json``       the wall time spent up to the last checkpoint, over every process that ran it
``result.json``        the parameter fingerprint the metrics were made with, and their sha256
``eval/``              per-class tables, figures and ``report.md``
=====================  ===================================================================

Re-running the same command resumes from ``checkpoint/`` (a finished run re-evaluates only). A
directory that holds another run (other parameters up to the student) or files that are no run's is
refused before anything is written, and a second process on the same directory is refused by its
lock (:mod:`ferd.run_dir`).

The rounds are the stage graph (:mod:`ferd.graph`) executed in one process on one round state:
the per-round tasks of :func:`ferd.graph.unroll` run in order, each by its stage module's ``step`` (the
stage on the in-memory :class:`ferd.round_state.RunState`, its artifact handed to the next task as an
object instead of a directory). So a stage added to the graph runs here as under DVC and Kubeflow, and
``ferd run`` and the stage split give the same bytes (``tests/golden.json``). After a round's last task
the state is checkpointed (:func:`ferd.round_state.save_checkpoint`), the one layout the stages' artifacts
use too; a checkpoint taken after any round resumes bit-identically.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from ..checkpoint import atomic_write_json, save_state_dict
from ..compute import set_memory_format
from ..config import FerdConfig
from ..plan import resolve
from ..evaluation.quick import quick_evaluation
from ..graph import unroll
from ..models import FerdModel
from ..numerics import saving_debug_batch
from ..preflight import preflight
from ..round_state import (RunState, class_weights, load_checkpoint, read_round_record, save_checkpoint,
                           verify_checkpoint)
from ..run_dir import check_run_dir, owned, write_result
from ..teacher_source import obtain_teacher
from . import stage_step

log = logging.getLogger(__name__)
ELAPSED_FILE = "elapsed.json"


def elapsed_before(out: Path) -> float:
    """Seconds earlier processes spent on this run up to its last checkpoint (0 for a new run, or one
    checkpointed by a release without ``elapsed.json``): a resumed run's ``run.seconds`` counts them too."""
    try:
        seconds = json.loads((out / ELAPSED_FILE).read_text())["seconds"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0
    return float(seconds) if isinstance(seconds, (int, float)) and 0 <= seconds < float("inf") else 0.0


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
        before, started = elapsed_before(out), time.monotonic()
        spent = lambda: round(before + time.monotonic() - started, 1)  # noqa: E731
        params = out / "params.json"
        if not params.is_file() or json.loads(params.read_text()) != cfg.model_dump(mode="json"):
            atomic_write_json(params, cfg.model_dump(mode="json"))
        teacher, card = obtain_teacher(cfg, out / "teacher", progress=progress)
        teacher.to(cfg.device)
        state = run_algorithm1(teacher, cfg, checkpoint_dir=out, progress=progress,
                               on_checkpoint=lambda r: atomic_write_json(out / ELAPSED_FILE,
                                                                         {"next_round": r, "seconds": spent()}))
        student = set_memory_format(state.student.eval(), False)  # evaluation runs contiguous (ferd.compute)
        set_memory_format(teacher, False)
        save_state_dict(student.state_dict(), out / "student.safetensors",
                        metadata={"arch": cfg.student.arch, "num_classes": str(cfg.num_classes),
                                  "teacher_sha256": card["sha256"]})
        atomic_write_json(out / "class_weights.json", class_weights(state.history))
        atomic_write_json(out / "history.json", state.history)
        models = {"teacher": teacher, "student": student} if evaluate_teacher else {"student": student}
        metrics = quick_evaluation(cfg, models, out / "eval", progress, history=state.history)
        metrics["run.seconds"] = spent()
        write_result(out, cfg, metrics)
    return metrics


def run_algorithm1(teacher: FerdModel, cfg: FerdConfig, *, checkpoint_dir: str | Path | None = None,
                   progress: bool = True, on_checkpoint: Callable[[int], object] | None = None) -> RunState:
    """Algorithm 1 end to end (every round of the graph), checkpointing into ``checkpoint_dir`` and
    resuming from the checkpoint there when present; ``on_checkpoint(next_round)`` after each checkpoint."""
    set_memory_format(teacher.eval().requires_grad_(False), cfg.compute.channels_last)
    state = RunState.initial(resolve(cfg))
    if checkpoint_dir is not None and load_checkpoint(state, checkpoint_dir):
        log.info("resuming from %s at round %d", checkpoint_dir, state.next_round)
    rounds = len(cfg.round_schedule)
    tasks = [t for t in unroll(rounds) if t.round is not None and t.round >= state.next_round]
    bar = tqdm(total=rounds, initial=state.next_round, desc="FERD rounds", disable=not progress)
    made: dict[str, object] = {}  # this round's artifacts, by task id
    for i, task in enumerate(tasks):
        inputs = {inp.flag: made.get(producer) for inp, producer in task.inputs}
        with saving_debug_batch(checkpoint_dir):
            made[task.id] = stage_step(task.stage)(state, teacher, task.round, inputs, progress)
        if i + 1 < len(tasks) and tasks[i + 1].round == task.round:
            continue
        made.clear()
        state.next_round = task.round + 1
        if checkpoint_dir is not None and (state.next_round % cfg.checkpoint_every == 0
                                           or state.next_round == rounds):
            save_checkpoint(state, checkpoint_dir)
            if on_checkpoint is not None:
                on_checkpoint(state.next_round)
        bar.update(1)
        last = state.history[-1]
        bar.set_postfix(p_max=f"{max(last['p']):.3f}", loss=f"{last.get('distill', {}).get('loss', 0):.4f}")
    bar.close()
    return state
