"""The FERD DAG: teacher fetch → R × (synthesis → pool storage → distillation) → evaluation.

Round r's synthesis needs the student of round r-1 (L_adv is a teacher–student divergence) and
the generator, p and scores of round r-1; its pool step needs the pool of round r-1; its
distillation the student, optimiser and scheduler of round r-1. So the rounds form a chain,
unrolled at compile time: R = ``rounds`` (or ``epochs``) of the parameter file.

Pipeline parameters (what ``ferd pipeline submit/schedule -p`` can change per run):

``params_yaml``  the parameters, as YAML text (default: the parameter file compiled in, as JSON)
``overrides``    a list of ``KEY=VALUE`` overrides applied on top (``["seed=1"]``)
``gpu_device``   the torch device of the GPU stages (``cuda``; ``cpu`` for a local run)

Changing ``epochs`` or ``rounds`` at submit time does not change the unrolled DAG: the stages
refuse a round outside the schedule and the evaluation refuses an unfinished student, so
recompile instead. Cluster settings (pipeline root, GPU node selection, the S3 secret,
retries) come from ``pipeline/cluster.yaml``.
"""


import json
from pathlib import Path
from typing import Literal, NamedTuple

import yaml
from kfp import compiler, dsl, kubernetes
from pydantic import BaseModel, ConfigDict, Field

from components import base_image
from components.distillation.component import distillation
from components.evaluation.component import evaluation
from components.pool_store.component import pool_store
from components.synthesis.component import synthesis
from components.teacher_fetch.component import teacher_fetch
from ferd.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS = ROOT / "params" / "embedded.yaml"
DEFAULT_CLUSTER = ROOT / "pipeline" / "cluster.yaml"
COMPILED = ROOT / "pipeline" / "ferd_pipeline.yaml"
PIPELINE_NAME = "ferd"

StageName = Literal["teacher_fetch", "synthesis", "pool_store", "distillation", "evaluation"]
STAGE_NAMES: tuple[str, ...] = ("teacher_fetch", "synthesis", "pool_store", "distillation", "evaluation")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Toleration(_Strict):
    key: str | None = None
    operator: Literal["Equal", "Exists"] | None = None
    value: str | None = None
    effect: Literal["NoExecute", "NoSchedule", "PreferNoSchedule"] | None = None
    toleration_seconds: int | None = None


class GpuSettings(_Strict):
    accelerator_type: str = "nvidia.com/gpu"
    accelerator_limit: int = Field(1, ge=1)
    node_selector: dict[str, str] = {}
    tolerations: list[Toleration] = []
    device: str = "cuda"


class SecretSettings(_Strict):
    name: str
    keys: dict[str, str]
    optional_keys: dict[str, str] = {}


class RetrySettings(_Strict):
    num_retries: int = Field(3, ge=0)
    backoff_duration: str = "60s"
    backoff_factor: float = Field(2.0, ge=1)
    backoff_max_duration: str = "3600s"


class ClusterSettings(_Strict):
    pipeline_root: str
    gpu_stages: list[StageName]
    gpu: GpuSettings = GpuSettings()
    s3_stages: list[StageName]
    s3_secret: SecretSettings
    retry: RetrySettings = RetrySettings()
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"


def load_cluster(path: str | Path = DEFAULT_CLUSTER) -> ClusterSettings:
    return ClusterSettings.model_validate(yaml.safe_load(Path(path).read_text()))


def params_text(params: str | Path = DEFAULT_PARAMS) -> tuple[str, int]:
    """The parameter file as one line of JSON (valid YAML; kfp writes parameter defaults into a
    comment header, which a multi-line default would break) and the rounds R it implies."""
    path = Path(params)
    cfg = load_config(path)
    data = yaml.safe_load(path.read_text()) or {}
    return json.dumps(data, separators=(", ", ": ")), cfg.num_rounds


COMPILED_FROM = "Default parameters: "


def params_label(params: "str | Path") -> str:
    """How the compiled description names the parameter file: relative to the checkout when inside it."""
    path = Path(params).resolve()
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


def compiled_params_file(package: "str | Path" = COMPILED) -> Path:
    """The parameter file a compiled package was compiled from (named in its description)."""
    doc = next(yaml.safe_load_all(Path(package).read_text()))
    label = doc["pipelineInfo"]["description"].rsplit(COMPILED_FROM, 1)[1].strip()
    return ROOT / label


def _configure(task: dsl.PipelineTask, stage: str, cluster: ClusterSettings, name: str) -> dsl.PipelineTask:
    task.set_display_name(name)
    task.set_env_variable("FERD_IMAGE", base_image())  # recorded in every manifest (ferd.provenance)
    r = cluster.retry
    if r.num_retries:
        task.set_retry(num_retries=r.num_retries, backoff_duration=r.backoff_duration,
                       backoff_factor=r.backoff_factor, backoff_max_duration=r.backoff_max_duration)
    kubernetes.set_image_pull_policy(task, cluster.image_pull_policy)
    if stage in cluster.gpu_stages:
        g = cluster.gpu
        task.set_accelerator_type(g.accelerator_type).set_accelerator_limit(g.accelerator_limit)
        for key, value in g.node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for t in g.tolerations:
            kubernetes.add_toleration(task, **t.model_dump(exclude_none=True))
    if stage in cluster.s3_stages:
        s = cluster.s3_secret
        kubernetes.use_secret_as_env(task, secret_name=s.name, secret_key_to_env=s.keys)
        if s.optional_keys:
            kubernetes.use_secret_as_env(task, secret_name=s.name, secret_key_to_env=s.optional_keys, optional=True)
    return task


class Outputs(NamedTuple):
    metrics: dsl.Metrics
    report: dsl.Artifact
    student: dsl.Model
    pool: dsl.Dataset


def build_pipeline(params: "str | Path" = DEFAULT_PARAMS, cluster: "ClusterSettings | None" = None):
    """The pipeline (a kfp graph component) for the parameter file ``params`` on ``cluster``."""
    cluster = cluster or load_cluster()
    default_yaml, rounds = params_text(params)

    @dsl.pipeline(name=PIPELINE_NAME, pipeline_root=cluster.pipeline_root,
                  description=f"FERD (fairness-enhanced data-free adversarial robustness distillation): teacher "
                              f"fetch, {rounds} rounds of synthesis -> FAE pool -> UTAE distillation, evaluation. "
                              f"{COMPILED_FROM}{params_label(params)}")
    def ferd_pipeline(params_yaml: str = default_yaml, overrides: list = [],  # noqa: B006 (a pipeline default)
                      gpu_device: str = cluster.gpu.device) -> Outputs:
        teacher = _configure(teacher_fetch(params_yaml=params_yaml, overrides=overrides), "teacher_fetch",
                             cluster, "teacher fetch").outputs["teacher"]
        generation = pool = student = None
        for r in range(rounds):
            synth_inputs = {} if r == 0 else {"student": student, "previous_generation": generation}
            generation = _configure(synthesis(params_yaml=params_yaml, overrides=overrides, round_index=r,
                                              device=gpu_device, teacher=teacher, **synth_inputs),
                                    "synthesis", cluster, f"synthesis round {r}").outputs["generation"]
            pool_inputs = {} if r == 0 else {"previous_pool": pool}
            pool = _configure(pool_store(params_yaml=params_yaml, overrides=overrides, round_index=r,
                                         generation=generation, **pool_inputs),
                              "pool_store", cluster, f"pool store round {r}").outputs["pool"]
            distill_inputs = {} if r == 0 else {"previous_student": student}
            student = _configure(distillation(params_yaml=params_yaml, overrides=overrides, round_index=r,
                                              device=gpu_device, teacher=teacher, generation=generation, pool=pool,
                                              **distill_inputs),
                                 "distillation", cluster, f"distillation round {r}").outputs["student"]
        ev = _configure(evaluation(params_yaml=params_yaml, overrides=overrides, device=gpu_device, teacher=teacher,
                                   student=student), "evaluation", cluster, "evaluation")
        return Outputs(metrics=ev.outputs["metrics"], report=ev.outputs["report"], student=student, pool=pool)

    return ferd_pipeline


def compile_pipeline(out: str | Path = COMPILED, params: str | Path = DEFAULT_PARAMS,
                     cluster: str | Path | ClusterSettings = DEFAULT_CLUSTER) -> Path:
    """Compile the DAG to ``out`` (two YAML documents: PipelineSpec and the kubernetes PlatformSpec)."""
    settings = cluster if isinstance(cluster, ClusterSettings) else load_cluster(cluster)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(params, settings), package_path=str(out))
    return out
