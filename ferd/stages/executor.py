"""The one executor of the stage graph: the tasks of :func:`ferd.plan.graph.unroll`, in order, each given the
artifacts of its producers by input flag.

Two kinds of artifact go through the same loop: directories (``ferd stage all``, :func:`ferd.stages.run_stages`:
each task a stage function writing its artifact, as DVC and Kubeflow run them) and objects in memory
(``ferd run``, :mod:`ferd.stages.run`: each task its stage module's ``step`` on the shared round state, the
teacher fetch and the evaluation included).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..plan.graph import Task
from ..algorithm.round_state import RunState


def execute(tasks: list[Task], run_one: Callable[[Task, dict[str, Any]], Any], made: dict[str, Any] | None = None,
            after_round: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run ``tasks`` in order; ``run_one(task, inputs)`` gets each input of the task (by its flag) from the
    artifact of its producer (None where the producer did not run here, e.g. before a resumed round), and
    ``after_round(r)`` runs after the last task of round r. ``made``: artifacts already at hand, by task id.
    Returns every artifact by task id."""
    made = dict(made or {})
    for i, task in enumerate(tasks):
        made[task.id] = run_one(task, {inp.flag: made.get(producer) for inp, producer in task.inputs})
        last_of_round = i + 1 == len(tasks) or tasks[i + 1].round != task.round
        if after_round is not None and task.round is not None and last_of_round:
            after_round(task.round)
    return made


@dataclass
class InProcess:
    """What the in-memory steps share (``step(ctx, round_index, inputs)`` in each stage module): the round
    state, ``ferd run``'s output directory (None: nothing written but the checkpoint's caller's), whether
    to evaluate the teacher too, the wall-time clock of the run, and the teacher's model card once fetched."""

    state: RunState
    out: Path | None = None
    progress: bool = False
    evaluate_teacher: bool = True
    spent: Callable[[], float] = lambda: 0.0
    card: dict = field(default_factory=dict)
    # the run's curves (ferd.core.tracking.live_tracker on a directory): opened on the history after a resume
    open_live: Callable[[list[dict]], Callable[[str, dict], None] | None] | None = None
    on_epoch: Callable[[str, dict], None] | None = None  # each epoch as it ends (ferd.core.tracking.LiveTracker)
