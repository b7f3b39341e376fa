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
``ferd run`` and the stage split give the same bytes (``tests/support/golden.json``). After a round's last task
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

from ..checkpoint import atomic_write_json
from ..compute import set_memory_format
from ..config import FerdConfig
from ..plan import resolve
from ..graph import Task, unroll
from ..models import FerdModel
from ..numerics import saving_debug_batch
from ..preflight import preflight
from ..round_state import RunState, load_checkpoint, read_round_record, save_checkpoint, verify_checkpoint
from ..run_dir import check_run_dir, owned
from . import stage_step
from .executor import InProcess, execute

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
    """Run FERD end to end into ``out_dir``: every task of the graph in one process, the teacher fetch and
    the evaluation included; returns the flat metrics (the teacher's too unless ``evaluate_teacher`` is false,
    e.g. in a comparison that evaluates its shared teacher once)."""
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
        ctx = InProcess(RunState.initial(resolve(cfg)), out, progress, evaluate_teacher, spent)
        made = run_in_process(ctx, unroll(cfg.num_rounds), checkpoint_dir=out,
                              on_checkpoint=lambda r: atomic_write_json(out / ELAPSED_FILE,
                                                                        {"next_round": r, "seconds": spent()}))
    return made["evaluation"]


def run_algorithm1(teacher: FerdModel, cfg: FerdConfig, *, checkpoint_dir: str | Path | None = None,
                   progress: bool = True, on_checkpoint: Callable[[int], object] | None = None) -> RunState:
    """Algorithm 1 end to end for a teacher at hand (the per-round tasks of the graph), checkpointing into
    ``checkpoint_dir`` and resuming from the checkpoint there when present; ``on_checkpoint(next_round)``
    after each checkpoint."""
    ctx = InProcess(RunState.initial(resolve(cfg)), progress=progress)
    set_memory_format(teacher.eval().requires_grad_(False), cfg.compute.channels_last)
    tasks = [t for t in unroll(cfg.num_rounds) if t.round is not None]
    run_in_process(ctx, tasks, made={t.id: teacher for t in unroll(cfg.num_rounds) if t.stage.name == "teacher-fetch"},
                   checkpoint_dir=checkpoint_dir, on_checkpoint=on_checkpoint)
    return ctx.state


def run_in_process(ctx: InProcess, tasks: list[Task], made: dict | None = None,
                   checkpoint_dir: str | Path | None = None,
                   on_checkpoint: Callable[[int], object] | None = None) -> dict:
    """``tasks`` through the one executor (:func:`ferd.stages.executor.execute`), each by its stage's in-memory
    ``step`` on ``ctx``: resumed from ``checkpoint_dir``'s checkpoint when present (the rounds before it
    skipped), the state checkpointed there after every ``checkpoint_every`` rounds and the last."""
    state, cfg = ctx.state, ctx.state.cfg
    if checkpoint_dir is not None and load_checkpoint(state, checkpoint_dir):
        log.info("resuming from %s at round %d", checkpoint_dir, state.next_round)
    rounds = cfg.num_rounds
    bar = tqdm(total=rounds, initial=state.next_round, desc="FERD rounds", disable=not ctx.progress)

    def run_one(task: Task, inputs: dict) -> object:
        with saving_debug_batch(checkpoint_dir):
            return stage_step(task.stage)(ctx, task.round, inputs)

    def after_round(r: int) -> None:
        state.next_round = r + 1
        if checkpoint_dir is not None and (state.next_round % cfg.checkpoint_every == 0 or state.next_round == rounds):
            save_checkpoint(state, checkpoint_dir)
            if on_checkpoint is not None:
                on_checkpoint(state.next_round)
        bar.update(1)
        last = state.history[-1]
        bar.set_postfix(p_max=f"{max(last['p']):.3f}", loss=f"{last.get('distill', {}).get('loss', 0):.4f}")

    todo = [t for t in tasks if t.round is None or t.round >= state.next_round]
    made = execute(todo, run_one, made, after_round)
    bar.close()
    return made
