"""``ferd run``'s rounds: the stage graph (:mod:`ferd.graph`) executed in one process on one round state.

The per-round tasks of :func:`ferd.graph.unroll` run in order, each by its stage module's ``step``: the
stage on the in-memory :class:`ferd.round_state.RunState`, its artifact handed to the next task as an
object instead of a directory. So a stage added to the graph runs here as it runs under DVC and
Kubeflow, and ``ferd run`` and the stage split give the same bytes (``tests/golden.json``). After a
round's last task the state is checkpointed (:func:`ferd.round_state.save_checkpoint`), the one layout
the stages' artifacts use too; a checkpoint taken after any round resumes bit-identically.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from ..compute import set_memory_format
from ..config import FerdConfig
from ..graph import Stage, unroll
from ..models import FerdModel
from ..numerics import saving_debug_batch
from ..round_state import RunState, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)


def stage_step(stage: Stage) -> Callable[..., object]:
    """``ferd.stages.<component>.step(state, teacher, round_index, inputs, progress)``: the stage in memory."""
    module = importlib.import_module(f"ferd.stages.{stage.component}")
    if not hasattr(module, "step"):
        raise NotImplementedError(f"stage {stage.name}: {module.__name__} has no in-process step for `ferd run`")
    return module.step


def run_algorithm1(teacher: FerdModel, cfg: FerdConfig, *, checkpoint_dir: str | Path | None = None,
                   progress: bool = True) -> RunState:
    """Algorithm 1 end to end (every round of the graph), checkpointing into ``checkpoint_dir`` and
    resuming from the checkpoint there when present."""
    set_memory_format(teacher.eval().requires_grad_(False), cfg.compute.channels_last)
    state = RunState.initial(cfg)
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
        bar.update(1)
        last = state.history[-1]
        bar.set_postfix(p_max=f"{max(last['p']):.3f}", loss=f"{last.get('distill', {}).get('loss', 0):.4f}")
    bar.close()
    return state
