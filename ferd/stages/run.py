"""``ferd run``: teacher (load or train) → Algorithm 1 → quick evaluation, in one process.

Layout of ``--out DIR`` (every file written atomically):

=====================  ===================================================================
``params.json``        the resolved, validated parameters
``teacher/``           ``teacher.safetensors`` and ``model_card.json``
``checkpoint/``        the round state after the last checkpointed round (``ferd.algorithm.round_state``)
``pool/``              the FAE pool, Parquet partitioned by round
``student.safetensors``  the distilled student (metadata: arch, num_classes)
``class_weights.json`` p (and the scores behind it) after every generation epoch
``history.json``       per-epoch losses and diagnostics
``metrics.json``       flat ``<model>.<attack>.<statistic>`` keys, accuracies in [0, 1]; ``run.seconds``
                       the wall time of the run's kept work (earlier processes up to their last checkpoint,
                       from ``elapsed.json``, plus this process)
``elapsed.json``       the wall time spent up to the last checkpoint, over every process that ran it
``result.json``        the parameter fingerprint the metrics were made with, and their sha256
``eval/``              per-class tables, figures (loss curves included) and ``report.md``
``live/``              the per-epoch curves in DVCLive (:mod:`ferd.core.tracking`; with the ``dvc`` extra): losses,
                       p, within-label share, FAE mask
``samples/``           ``round-NN.png``: each round's kept synthetic images, a row per class (at most 20), written as the
                       round ends and again by the evaluation, whose report shows them
``manifest.json``      written last, when the run has finished: the sha256 and size of every file above,
                       sealed and, with ``$FERD_SIGNING_KEY``, signed, as a stage's
                       (:func:`ferd.stages.artifacts.write_manifest`, stage ``run``)
=====================  ===================================================================

Every record is untrusted when read back. ``checkpoint/round.json`` and ``elapsed.json`` are sealed (and
signed) themselves, since a killed run resumes from them before any ``manifest.json`` exists
(:func:`ferd.core.provenance.read_sealed`); the checkpoint also pins the teacher's weights. A finished run is
whatever its ``manifest.json`` lists and nothing else: re-running the command verifies it (every file,
and no unlisted one) before the manifest is removed and the run re-evaluated, ``ferd compare`` takes a run as
finished only through :func:`finished_metrics`, which verifies it the same way, and ``ferd lineage verify``
checks it as any artifact.

Re-running the same command resumes from ``checkpoint/`` (a finished run re-evaluates only). A
directory that holds another run (other parameters up to the student) or files that are no run's is
refused before anything is written, and a second process on the same directory is refused by its
lock (:mod:`ferd.algorithm.run_dir`).

The rounds are the stage graph (:mod:`ferd.plan.graph`) executed in one process on one round state:
the per-round tasks of :func:`ferd.plan.graph.unroll` run in order, each by its stage module's ``step`` (the
stage on the in-memory :class:`ferd.algorithm.round_state.RunState`, its artifact handed to the next task as an
object instead of a directory). So a stage added to the graph runs here as under DVC and Kubeflow, and
``ferd run`` and the stage split give the same bytes (``tests/support/golden.json``). After a round's last task
the state is checkpointed (:func:`ferd.algorithm.round_state.save_checkpoint`), the one layout the stages' artifacts
use too; a checkpoint taken after any round resumes bit-identically.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..compute import distributed
from ..core.checkpoint import atomic_write_json, read_json_object
from ..compute.switches import set_memory_format
from ..settings.config import FerdConfig
from ..core.dataset_catalog import dataset_info
from ..synthesis.samples import SAMPLES_DIR, write_round_grids
from ..plan.fingerprint import params_fingerprint
from .lineage import Report, verify_artifact
from ..plan.resolve import resolve
from ..core.provenance import read_sealed, require_fields, seal, utc_now
from ..plan.graph import Task, final_task, unroll
from ..models import FerdModel
from ..compute.numerics import saving_debug_batch
from ..data.pool import Shard
from ..algorithm.preflight import preflight
from ..algorithm.teacher_source import CHECKPOINT_NAME
from ..algorithm.round_state import RunState, load_checkpoint, read_round_record, save_checkpoint, verify_checkpoint
from ..algorithm.run_dir import METRICS_FILE, PARAMS_FILE, RESULT_FILE, check_run_dir, owned, read_metrics
from ..core.storage import MANIFEST
from ..core.tracking import live_tracker
from . import stage_step
from .artifacts import write_manifest
from .layout import LIVE_DIR, TEACHER_DIR
from .executor import InProcess, execute

log = logging.getLogger(__name__)
ELAPSED_FILE = "elapsed.json"
RUN_STAGE, TEACHER_PIN = "run", f"{TEACHER_DIR}/{CHECKPOINT_NAME}"
RESULT_FIELDS: dict[str, type | tuple[type, ...]] = {"params_fingerprint": str, "scope": str,
                                                     "model_sha256": (str, type(None)), "metrics_sha256": str}


class RunRecordError(ValueError):
    """A record of a ``ferd run`` directory is missing, malformed, changed, or not signed under the key."""


def elapsed_before(out: Path) -> float:
    """Seconds earlier processes spent on this run up to its last checkpoint, from ``elapsed.json`` (0 for a
    new run): a resumed run's ``run.seconds`` counts them too. A present record must be sealed (and signed)."""
    path = out / ELAPSED_FILE
    if not path.exists():
        return 0.0
    seconds = read_sealed(path, {"next_round": int, "seconds": (int, float)}, RunRecordError)["seconds"]
    if not 0 <= seconds < math.inf:
        raise RunRecordError(f"{path}: field 'seconds' must be finite and >= 0, got {seconds}")
    return float(seconds)


def verify_finished(out: Path) -> dict:
    """The ``manifest.json`` of a finished ``ferd run`` directory after checking it as ``ferd lineage verify``
    does (checksum, signature under the key, every listed file's sha256 and size, no unlisted file);
    :class:`RunRecordError` naming the first problem otherwise."""
    report = Report()
    verify_artifact(out, report)
    if report.problems:
        more = f" (and {len(report.problems) - 1} more problems)" if len(report.problems) > 1 else ""
        raise RunRecordError(f"{report.problems[0]}{more}")
    manifest = read_sealed(out / MANIFEST, {"stage": str}, RunRecordError)
    if manifest["stage"] != RUN_STAGE:
        raise RunRecordError(f"{out / MANIFEST}: field 'stage' is {manifest['stage']!r}, expected {RUN_STAGE!r}")
    return manifest


def finished_metrics(out: str | Path, cfg: FerdConfig) -> dict[str, float] | None:
    """The metrics of ``out`` when it holds a finished ``ferd run`` of ``cfg``'s parameters (``evaluation``
    scope); None when it holds none (no ``manifest.json``: never run, unfinished, or an older release's) or one
    of other parameters. Every file is verified first (:func:`verify_finished`): a changed, added or unsigned
    one is a :class:`RunRecordError`, never a finished run."""
    out = Path(out)
    if not (out / MANIFEST).is_file():
        return None
    verify_finished(out)
    result = _json_object(out / RESULT_FILE)
    require_fields(result, RESULT_FIELDS, out / RESULT_FILE, RunRecordError)
    if result["params_fingerprint"] != params_fingerprint(cfg, "evaluation") or result["model_sha256"] is not None:
        return None
    return read_metrics(out / METRICS_FILE)


def _json_object(path: Path) -> dict[str, Any]:
    return read_json_object(path, RunRecordError)


def _live(out: Path, live: str | Path | bool) -> Callable[[list[dict]], Any] | None:
    """How ``ferd run`` opens its curves (:func:`ferd.core.tracking.live_tracker`): ``<out>/live`` by default, skipped
    with one log line where DVCLive is not installed; a named directory needs DVCLive; False: none."""
    if not live:
        return None
    directory, required = (out / LIVE_DIR, False) if live is True else (Path(live), True)
    return lambda history: live_tracker(directory, history, required=required)


def run(cfg: FerdConfig, out_dir: str | Path, progress: bool = True, evaluate_teacher: bool = True,
        records: Mapping[str, Any] | None = None, live: str | Path | bool = True) -> dict[str, float]:
    """Run FERD end to end into ``out_dir``: every task of the graph in one process, the teacher fetch and
    the evaluation included; returns the flat metrics (the teacher's too unless ``evaluate_teacher`` is false,
    e.g. in a comparison that evaluates its shared teacher once). ``records``: further JSON files (by name)
    written beside the metrics before the manifest lists them all (a comparison's ``arm.json``). ``live``: the
    DVCLive directory of the run's per-epoch curves (:mod:`ferd.core.tracking`): True ``<out>/live`` when DVCLive is
    installed, a path (DVCLive required), or False for none."""
    out = Path(out_dir)
    preflight(cfg)  # the device, the teacher source, the test set: before anything is written, the lock included
    with owned(out):
        # before anything is written: another run's directory is refused, a checkpoint of this one checked
        if check_run_dir(out, cfg) == "resume":
            if (out / MANIFEST).exists():
                verify_finished(out)
            if read_round_record(out) is not None:
                verify_checkpoint(out, cfg)
        out.mkdir(parents=True, exist_ok=True)
        before, started, started_at = elapsed_before(out), time.monotonic(), utc_now()
        (out / MANIFEST).unlink(missing_ok=True)  # a finished run re-evaluated is unfinished until its new manifest
        spent = lambda: round(before + time.monotonic() - started, 1)  # noqa: E731
        params = out / PARAMS_FILE
        if not params.is_file() or _json_object(params) != cfg.model_dump(mode="json"):
            atomic_write_json(params, cfg.model_dump(mode="json"))
        ctx = InProcess(RunState.initial(resolve(cfg)), out, progress, evaluate_teacher, spent,
                        open_live=_live(out, live))
        made = run_in_process(ctx, unroll(cfg.num_rounds), checkpoint_dir=out,
                              on_checkpoint=lambda r: atomic_write_json(out / ELAPSED_FILE,
                                                                        seal({"next_round": r, "seconds": spent()})))
        for name, data in (records or {}).items():
            atomic_write_json(out / Path(name).name, data)
        write_manifest(out, RUN_STAGE, cfg, scope="evaluation", started=started_at, extra={"complete": True})
    return made[final_task(cfg.num_rounds).id]


def run_algorithm1(teacher: FerdModel, cfg: FerdConfig, *, checkpoint_dir: str | Path | None = None,
                   progress: bool = True, on_checkpoint: Callable[[int], object] | None = None) -> RunState:
    """Algorithm 1 end to end for a teacher at hand (the per-round tasks of the graph), checkpointing into
    ``checkpoint_dir`` and resuming from the checkpoint there when present; ``on_checkpoint(next_round)``
    after each checkpoint."""
    ctx = InProcess(RunState.initial(resolve(cfg)), progress=progress)
    set_memory_format(teacher.eval().requires_grad_(False), cfg.compute.channels_last)
    tasks = [t for t in unroll(cfg.num_rounds) if t.round is not None]
    run_in_process(ctx, tasks, made={t.id: teacher for t in unroll(cfg.num_rounds) if t.stage.fetches_teacher},
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
    if ctx.open_live is not None and distributed.is_main():  # the kept epochs replayed, then each as it ends
        ctx.on_epoch = ctx.open_live(state.history)
    rounds = cfg.num_rounds
    bar = tqdm(total=rounds, initial=state.next_round, desc="FERD rounds", disable=not ctx.progress)

    def run_one(task: Task, inputs: dict) -> object:
        with saving_debug_batch(checkpoint_dir):
            made = stage_step(task.stage)(ctx, task.round, inputs)
        if isinstance(made, Shard) and ctx.out is not None:  # a round's FAEs: to look at while the run goes on
            write_round_grids([made], ctx.out / SAMPLES_DIR, dataset_info(cfg.dataset).class_names)
        return made

    def after_round(r: int) -> None:
        state.next_round = r + 1
        if checkpoint_dir is not None and (state.next_round % cfg.checkpoint_every == 0 or state.next_round == rounds):
            pinned = (TEACHER_PIN,) if (Path(checkpoint_dir) / TEACHER_PIN).is_file() else ()
            save_checkpoint(state, checkpoint_dir, pinned)
            if on_checkpoint is not None:
                on_checkpoint(state.next_round)
        bar.update(1)
        last = state.history[-1]
        bar.set_postfix(p_max=f"{max(last['p']):.3f}", loss=f"{last.get('distill', {}).get('loss', 0):.4f}")

    todo = [t for t in tasks if t.round is None or t.round >= state.next_round]
    made = execute(todo, run_one, made, after_round)
    bar.close()
    return made
