"""The FERD DAG, declared once: teacher fetch → R × (synthesis → pool store → distillation) → evaluation.

Each :class:`Stage` names its inputs (a stage of the same round, of round r−1, of the last round, or
the once-only teacher), its output directory, the fingerprint scope of the parameters it depends on
(:data:`ferd.plan.fingerprint.SCOPES`) and how the Kubeflow component calls it. :func:`unroll` turns the
declaration into the tasks of R rounds; ``dvc.yaml`` (:mod:`ferd.stages.dvc_yaml`), the Kubeflow DAG
(``pipeline/dag.py``), ``ferd stage all`` (:func:`ferd.stages.run_stages`) and the stage table of the
cluster settings are all generated from it, so a new stage is one entry here plus its function.

Round r's synthesis needs the student of round r−1 (L_adv is a teacher–student divergence) and the
generator, p and scores of round r−1; its pool step the pool of round r−1; its distillation the
student, optimiser and scheduler of round r−1 (Algorithm 1, grouped in rounds: :mod:`ferd.algorithm.rounds`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ONCE, SAME, PREVIOUS, LAST = "once", "same", "previous", "last"


@dataclass(frozen=True)
class Input:
    """An input artifact: ``flag`` on the command line (``--flag DIR``), ``kfp`` the component's
    input name; ``stage`` the producer and ``of`` which of its runs (``once``: a stage that runs once;
    ``same``/``previous``: this round's / round r−1's, absent in round 0; ``last``: the last round's)."""

    flag: str
    stage: str
    of: Literal["once", "same", "previous", "last"]
    kfp: str


@dataclass(frozen=True, kw_only=True)
class Stage:
    name: str                 # ``ferd stage <name>``, and the task id (``<name>-r<r>`` per round)
    scope: str                # the parameters it depends on: ferd.plan.fingerprint.SCOPES[scope]
    per_round: bool
    subdir: str               # ``<out>/<subdir>``, or ``<out>/round-<r>/<subdir>`` per round
    inputs: tuple[Input, ...]
    output: str               # the Kubeflow component's output artifact
    gpu_device: bool          # the component takes the GPU device parameter
    title: str                # the display name (``… round r`` per round)
    help: str                 # ``ferd stage --help``
    chained: bool = False     # its artifact of round r names (and reads) its artifacts of rounds 0…r−1
    data_parallel: bool = False  # under torchrun every rank computes a share of it (ferd.compute.distributed);
    #                              other stages run on rank 0 alone
    tracked: bool = False     # it takes ``--live DIR``: the run's per-epoch curves in DVCLive (ferd.core.tracking)
    fetches_teacher: bool = False  # it reads the teacher source (cfg.teacher): checked before it runs, its local file
    #                                a DVC dependency, its data too when it trains; uncached on Kubeflow when remote
    final: bool = False       # it evaluates the last student on the test split: its artifact is the run's result
    #                           (dvc.yaml's metrics and plots, the DAG's outputs, what `ferd run` returns)

    @property
    def component(self) -> str:
        """The component's folder and Python name (``components/pool_store``)."""
        return self.name.replace("-", "_")


STAGES: tuple[Stage, ...] = (
    Stage(name="teacher-fetch", scope="teacher", per_round=False, subdir="teacher", inputs=(), output="teacher",
          gpu_device=False, title="teacher fetch", help="stage 1: a verified teacher checkpoint + model card",
          fetches_teacher=True),
    Stage(name="synthesis", scope="synthesis", per_round=True, subdir="synthesis",
          inputs=(Input("teacher", "teacher-fetch", ONCE, "teacher"), Input("student", "distillation", PREVIOUS, "student"),
                  Input("previous", "synthesis", PREVIOUS, "previous_generation")),
          output="generation", gpu_device=True, title="synthesis",
          help="stage 2: one round of synthesis with reweighting", data_parallel=True, tracked=True),
    Stage(name="pool-store", scope="pool", per_round=True, subdir="pool",
          inputs=(Input("synthesis", "synthesis", SAME, "generation"),
                  Input("previous", "pool-store", PREVIOUS, "previous_pool")),
          output="pool", gpu_device=False, title="pool store", help="stage 3: add the round's FAE shard to the pool",
          chained=True),
    Stage(name="distillation", scope="distillation", per_round=True, subdir="distillation",
          inputs=(Input("teacher", "teacher-fetch", ONCE, "teacher"), Input("synthesis", "synthesis", SAME, "generation"),
                  Input("pool", "pool-store", SAME, "pool"), Input("previous", "distillation", PREVIOUS, "previous_student")),
          output="student", gpu_device=True, title="distillation", help="stage 4: one round of UTAE distillation",
          data_parallel=True, tracked=True),
    Stage(name="evaluation", scope="evaluation", per_round=False, subdir="evaluation",
          inputs=(Input("teacher", "teacher-fetch", ONCE, "teacher"), Input("student", "distillation", LAST, "student")),
          output="metrics", gpu_device=True, title="evaluation",
          help="stage 5: per-class robustness of teacher and final student", tracked=True, final=True),
)
BY_NAME = {s.name: s for s in STAGES}


def describe_input(inp: Input) -> str:
    """``ferd stage --help`` for an input flag."""
    which = {ONCE: "", SAME: " of round r", PREVIOUS: " of round r-1 (not in round 0)", LAST: " of the last round"}
    return f"{inp.stage} artifact{which[inp.of]}"
COMPONENTS: tuple[str, ...] = tuple(s.component for s in STAGES)


@dataclass(frozen=True)
class Task:
    """One stage of one round (``round`` None for the stages that run once)."""

    stage: Stage
    round: int | None
    inputs: tuple[tuple[Input, str], ...]  # (input, the id of the task that produces it), in declared order

    @property
    def id(self) -> str:
        return self.stage.name if self.round is None else f"{self.stage.name}-r{self.round}"

    def dir(self, out: str) -> str:
        return f"{out}/{self.stage.subdir}" if self.round is None else f"{out}/round-{self.round}/{self.stage.subdir}"

    @property
    def title(self) -> str:
        return self.stage.title if self.round is None else f"{self.stage.title} round {self.round}"

    @property
    def reads(self) -> list[str]:
        """The ids of every task whose artifact this one reads: its inputs' producers and, for a chained
        producer (the pool: each round's artifact holds one shard and names the earlier ones) read by
        another stage, that stage's tasks of every earlier round too (``dvc.yaml``'s ``deps``)."""
        ids: list[str] = []
        for inp, producer in self.inputs:
            if BY_NAME[inp.stage].chained and inp.stage != self.stage.name:
                last = int(producer.rsplit("-r", 1)[1])
                ids += [f"{inp.stage}-r{k}" for k in range(last) if f"{inp.stage}-r{k}" not in ids]
            ids.append(producer)
        return ids


def _producer(inp: Input, r: int | None, rounds: int) -> str | None:
    producer = BY_NAME[inp.stage]
    if not producer.per_round:
        return producer.name
    k = {SAME: r, PREVIOUS: None if r in (None, 0) else r - 1, LAST: rounds - 1}[inp.of]
    return None if k is None else f"{producer.name}-r{k}"


def unroll(rounds: int) -> list[Task]:
    """Every task of a run of ``rounds`` rounds in execution order: the once-only stages before the
    rounds, the per-round stages round by round, the stages that read the last round after them."""
    def task(stage: Stage, r: int | None) -> Task:
        pairs = tuple((inp, p) for inp in stage.inputs if (p := _producer(inp, r, rounds)) is not None)
        return Task(stage, r, pairs)

    before = [task(s, None) for s in STAGES if not s.per_round and all(i.of == ONCE for i in s.inputs)]
    after = [task(s, None) for s in STAGES if not s.per_round and any(i.of != ONCE for i in s.inputs)]
    per_round = [task(s, r) for r in range(rounds) for s in STAGES if s.per_round]
    return before + per_round + after


def final_task(rounds: int) -> Task:
    """The task whose artifact is the run's result (:attr:`Stage.final`) in a run of ``rounds`` rounds."""
    return next(t for t in unroll(rounds) if t.stage.final)
