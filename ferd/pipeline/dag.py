"""The FERD DAG as a Kubeflow pipeline: the stage graph of :mod:`ferd.plan.graph` (teacher fetch → R × (synthesis →
pool storage → distillation) → evaluation), unrolled at compile time: R = ``rounds`` (or ``epochs``) of
the parameter file.

Pipeline parameters (what ``ferd pipeline submit/schedule -p`` can change per run):

``params_yaml``  the parameters, as YAML text (default: the parameter file compiled in, as JSON)
``overrides``    a list of ``KEY=VALUE`` overrides applied on top (``["seed=1"]``); they win
``gpu_device``   the torch device of the GPU stages (``cuda``; ``cpu`` for a local run)
``teacher_source``, ``teacher_sha256``, ``eps``, ``gamma``, ``lambda1``, ``lambda2``, ``lambda_uni``
                 typed values (:data:`ferd.stages.RUN_TIME_PARAMS`; defaults: the compiled file's), resolved
                 with ``overrides`` by the first task (``components/run_params``), which validates them

Changing ``epochs`` or ``rounds`` at submit time does not change the unrolled DAG: the stages
refuse a round outside the schedule and the evaluation refuses an unfinished student, so
recompile instead. Cluster settings (pipeline root, GPU node selection, the S3 secret,
retries) come from ``ferd/pipeline/cluster.yaml``.
"""


import importlib
import importlib.util
import json
import re
from pathlib import Path
from typing import Annotated, Literal, NamedTuple

import yaml
from kfp import compiler, dsl, kubernetes
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from ferd.components import use_image
from ferd.components.run_params import run_params
from ferd.components.stage.component import MAX_INPUTS, stage as generic_stage
from ferd.plan.resolve import load_config
from ferd.stages.artifacts import run_time_values
from ferd.plan.graph import BY_NAME, COMPONENTS, STAGES, Stage, Task, unroll
from ferd.stages.launch import Engine, Launch
from ferd.core.image import IMAGE_ENV, PLACEHOLDER, Image, resolve
from ferd.pipeline import DEFAULT_CLUSTER
from ferd.core.params_io import read_yaml_file, short_repr
from ferd.plan.presets import PRESETS, find_preset
from ferd.core.provenance import SIGNING_KEY_ENV

DEFAULT_PARAMS = PRESETS / "embedded.yaml"
COMPILED = Path("pipeline") / "ferd_pipeline.yaml"  # where `ferd pipeline compile` writes (working directory)
PIPELINE_NAME = "ferd"

STAGE_NAMES: tuple[str, ...] = COMPONENTS  # the components of the stage graph (ferd.plan.graph)
TASK_COMPONENTS = (*COMPONENTS, "run_params")  # and the task resolving the run's parameters
StageName = Literal[TASK_COMPONENTS]  # type: ignore[valid-type]
DATA_PARALLEL = tuple(s.component for s in STAGES if s.data_parallel)  # what a `distributed` block launches


def component_function(stage: Stage):
    """The stage's component: ``components/<stage>/component.py`` defines the function ``<stage>``; a stage
    without a folder of its own runs through the generic ``components/stage`` (:func:`run_task` by name)."""
    if importlib.util.find_spec(f"ferd.components.{stage.component}") is None:
        return generic_stage
    return getattr(importlib.import_module(f"ferd.components.{stage.component}.component"), stage.component)


def _stage_call(task: Task, produced: dict, params_yaml, overrides, gpu_device, image: str,
                launch: str = "") -> dsl.PipelineTask:
    """Create the Kubeflow task of one unrolled graph task on ``image``, wired to its producers' outputs;
    ``launch`` (:meth:`ClusterSettings.launch`) goes to the data-parallel stages."""
    declared = component_function(task.stage)
    fn = use_image(declared, image)
    device = gpu_device if task.stage.gpu_device else ""
    if declared is generic_stage:
        if len(task.inputs) > MAX_INPUTS:
            raise ValueError(f"stage {task.stage.name}: {len(task.inputs)} inputs; the generic component takes "
                             f"{MAX_INPUTS}: give it components/{task.stage.component}/")
        return fn(name=task.stage.name, params_yaml=params_yaml, overrides=overrides,
                  round_index=-1 if task.round is None else task.round, device=device,
                  flags=[inp.flag for inp, _ in task.inputs],
                  **{f"input_{i}": _output(produced[p], inp.stage) for i, (inp, p) in enumerate(task.inputs)})
    kwargs = {"params_yaml": params_yaml, "overrides": overrides}
    if task.round is not None:
        kwargs["round_index"] = task.round
    if task.stage.gpu_device:
        kwargs["device"] = device
    for inp, producer in task.inputs:
        kwargs[inp.kfp] = _output(produced[producer], inp.stage)
    if launch and task.stage.data_parallel:
        kwargs["launch"] = launch
    return fn(**kwargs)


def _output(task: dsl.PipelineTask, stage: str):
    producer = BY_NAME[stage]
    return task.outputs["output" if component_function(producer) is generic_stage else producer.output]


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


def _matching(pattern: str, expected: str):
    """A validator refusing a string that is not ``pattern`` (at most 253 characters): "expected ``expected``"."""
    def check(value: str) -> str:
        if len(value) > 253 or not re.fullmatch(pattern, value):
            raise ValueError(f"expected {expected}")
        return value
    return AfterValidator(check)


SecretName = Annotated[str, _matching(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
                                      "a Kubernetes secret name (lowercase letters, digits, '-' and '.', starting "
                                      "and ending with a letter or digit)")]
SecretKey = Annotated[str, _matching(r"[-._a-zA-Z0-9]+", "a key of a Kubernetes secret (letters, digits, '-', "
                                                          "'_' and '.')")]
EnvName = Annotated[str, _matching(r"[-._a-zA-Z][-._a-zA-Z0-9]*", "an environment variable name")]


class SecretSettings(_Strict):
    name: SecretName
    keys: dict[SecretKey, EnvName]  # secret key -> environment variable
    optional_keys: dict[SecretKey, EnvName] = {}


class RetrySettings(_Strict):
    num_retries: int = Field(3, ge=0)
    backoff_duration: str = "60s"
    backoff_factor: float = Field(2.0, ge=1)
    backoff_max_duration: str = "3600s"


class SigningSecret(_Strict):
    """The Kubernetes secret holding the manifest signing key (``ferd.core.provenance``): its ``key`` becomes
    ``$FERD_SIGNING_KEY`` in every stage and in every process of a ``distributed`` stage's job, so each stage
    signs what it writes and refuses unsigned inputs."""

    name: SecretName
    key: SecretKey = SIGNING_KEY_ENV


class Resources(_Strict):
    """A task's CPU / memory requests and limits (Kubernetes quantities: ``"4"``, ``"500m"``, ``"16G"``) and
    its time limit (``activeDeadlineSeconds``: a hung task fails, and retries, instead of holding a node)."""

    cpu_request: str | None = None
    cpu_limit: str | None = None
    memory_request: str | None = None
    memory_limit: str | None = None
    timeout_s: int | None = Field(None, ge=60)


class DataVolume(_Strict):
    """A PersistentVolumeClaim holding the datasets, mounted at ``mount_path`` in the stages that read data
    (``data_root`` then points under it, e.g. ``/data/cifar10``); the other way is ``data_root: s3://…``."""

    name: str
    mount_path: str = "/data"
    stages: list[StageName] = ["teacher_fetch", "evaluation"]


class DistributedSettings(_Strict):
    """``distributed``: the synthesis and distillation tasks submit their stage as a job of an existing engine
    (:mod:`ferd.stages.launch`: a Kubeflow Trainer ``TrainJob`` or a training-operator ``PyTorchJob``) running
    torchrun on ``nodes`` × ``gpus_per_node``, wait for it, and pass its artifact on; the tasks themselves
    then need no GPU. Needs a service account that may create the jobs in ``namespace``."""

    namespace: str
    scratch_uri: str = Field(description="s3://bucket/prefix where the jobs write their artifacts")
    engine: Engine = Launch.engine  # the defaults are ferd.stages.launch.Launch's
    nodes: int = Field(Launch.nodes, ge=1)
    gpus_per_node: int = Field(Launch.gpus_per_node, ge=0)
    runtime: str = Launch.runtime
    timeout_s: int = Field(Launch.timeout_s, ge=60)
    poll_s: float = Field(Launch.poll_s, gt=0)


class ClusterSettings(_Strict):
    pipeline_root: str
    gpu_stages: list[StageName]
    gpu: GpuSettings = GpuSettings()
    s3_stages: list[StageName]
    s3_secret: SecretSettings
    retry: RetrySettings = RetrySettings()
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    signing_secret: SigningSecret | None = None
    resources: dict[StageName, Resources] = {}
    image_pull_secrets: list[SecretName] = []
    data_pvc: DataVolume | None = None
    cache_remote_teacher: bool = Field(False, description="cache teacher_fetch when the teacher is a URL, s3:// or "
                                       "RobustBench source (off: a changed remote teacher is fetched again)")
    distributed: DistributedSettings | None = None

    def secret_env(self) -> dict[str, tuple[str, str]]:
        """The secrets every stage gets, by reference: environment variable -> (secret, key); the S3
        credentials and, with ``signing_secret``, ``$FERD_SIGNING_KEY``."""
        s, k = self.s3_secret, self.signing_secret
        return {**{var: (s.name, key) for key, var in s.keys.items()},
                **({SIGNING_KEY_ENV: (k.name, k.key)} if k is not None else {})}

    def launch(self) -> str:
        """The ``distributed`` block as the data-parallel tasks receive it (JSON of :class:`ferd.stages.launch.Launch`,
        the secrets of :meth:`secret_env` by reference), or "" when the stages run in their task."""
        if self.distributed is None:
            return ""
        s = self.s3_secret
        return Launch(**self.distributed.model_dump(), secret_env=self.secret_env(),
                      optional_secret_env={var: (s.name, key) for key, var in s.optional_keys.items()}).to_json()


def load_cluster(path: str | Path = DEFAULT_CLUSTER) -> ClusterSettings:
    """The cluster settings of ``path``; a bad field is refused in one line naming the file and the field."""
    try:
        return ClusterSettings.model_validate(read_yaml_file(Path(path), "cluster settings"))  # no key twice
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg'].removeprefix('Value error, ')} "
                 f"(got {short_repr(e.get('input'))})" for e in exc.errors()[:5]]
        raise ValueError(f"{path}: " + "; ".join(lines)) from None


def params_text(params: str | Path = DEFAULT_PARAMS) -> tuple[str, int]:
    """The parameter file as one line of JSON (valid YAML; kfp writes parameter defaults into a
    comment header, which a multi-line default would break) and the rounds R it implies."""
    path = Path(params)
    cfg = load_config(path)
    data = yaml.safe_load(path.read_text()) or {}
    return json.dumps(data, separators=(", ", ": ")), cfg.num_rounds


COMPILED_FROM = "Default parameters: "


def params_label(params: "str | Path") -> str:
    """How the compiled description names the parameter file: ``params/<name>.yaml`` for a preset shipped with
    ferd, else relative to the working directory when inside it, else its name."""
    path, cwd = Path(params).resolve(), Path.cwd().resolve()
    if path.parent == PRESETS:
        return f"params/{path.name}"
    return path.relative_to(cwd).as_posix() if path.is_relative_to(cwd) else path.name


def compiled_params_file(package: "str | Path" = COMPILED) -> Path:
    """The parameter file a compiled package was compiled from (named in its description)."""
    doc = next(yaml.safe_load_all(Path(package).read_text()))
    label = Path(doc["pipelineInfo"]["description"].rsplit(COMPILED_FROM, 1)[1].strip())
    if not label.is_file() and label.parent == Path("params"):
        return find_preset(label.stem) or label
    return label


def _configure(task: dsl.PipelineTask, stage: str, cluster: ClusterSettings, name: str) -> dsl.PipelineTask:
    task.set_display_name(name)
    # recorded in every manifest (ferd.core.provenance)
    task.set_env_variable(IMAGE_ENV, task.component_spec.implementation.container.image)
    r = cluster.retry
    if r.num_retries and stage != "run_params":  # the parameters fail the same way every try: at once, in one line
        task.set_retry(num_retries=r.num_retries, backoff_duration=r.backoff_duration,
                       backoff_factor=r.backoff_factor, backoff_max_duration=r.backoff_max_duration)
    kubernetes.set_image_pull_policy(task, cluster.image_pull_policy)
    launched = cluster.distributed is not None and stage in DATA_PARALLEL  # its job holds the GPUs
    if stage in cluster.gpu_stages and not launched:
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
    if cluster.signing_secret is not None:
        k = cluster.signing_secret
        kubernetes.use_secret_as_env(task, secret_name=k.name, secret_key_to_env={k.key: SIGNING_KEY_ENV})
    res = cluster.resources.get(stage)
    if res is not None:
        for value, setter in ((res.cpu_request, task.set_cpu_request), (res.cpu_limit, task.set_cpu_limit),
                              (res.memory_request, task.set_memory_request), (res.memory_limit, task.set_memory_limit)):
            if value is not None:
                setter(value)
        if res.timeout_s is not None:
            kubernetes.set_timeout(task, res.timeout_s)
    if cluster.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, cluster.image_pull_secrets)
    if cluster.data_pvc is not None and stage in cluster.data_pvc.stages:
        kubernetes.mount_pvc(task, pvc_name=cluster.data_pvc.name, mount_path=cluster.data_pvc.mount_path)
    return task


class Outputs(NamedTuple):
    metrics: dsl.Metrics
    report: dsl.Artifact
    summary: dsl.Markdown
    confusion: dsl.ClassificationMetrics
    student: dsl.Model
    pool: dsl.Dataset


def build_pipeline(params: "str | Path" = DEFAULT_PARAMS, cluster: "ClusterSettings | None" = None,
                   image: Image | None = None):
    """The pipeline (a kfp graph component) for the parameter file ``params`` on ``cluster``, every task on
    ``image`` (named in the description with its source; None: the placeholder, for a local subprocess run)."""
    ref = image.ref if image else PLACEHOLDER
    cluster = cluster or load_cluster()
    default_yaml, rounds = params_text(params)
    cfg = load_config(params)
    typed = run_time_values(cfg)  # the typed run-time parameters' defaults: the file's values
    cache_teacher = cluster.cache_remote_teacher or not cfg.teacher.remote  # else a changed remote one is fetched
    launch = cluster.launch()

    @dsl.pipeline(name=PIPELINE_NAME, pipeline_root=cluster.pipeline_root,
                  description=f"FERD (fairness-enhanced data-free adversarial robustness distillation): teacher "
                              f"fetch, {rounds} rounds of synthesis -> FAE pool -> UTAE distillation, evaluation. "
                              f"{image_note(image)}{COMPILED_FROM}{params_label(params)}")
    def ferd_pipeline(params_yaml: str = default_yaml, overrides: list = [],  # noqa: B006 (a pipeline default)
                      gpu_device: str = cluster.gpu.device, teacher_source: str = typed["teacher_source"],
                      teacher_sha256: str = typed["teacher_sha256"], eps: float = typed["eps"],
                      gamma: float = typed["gamma"], lambda1: float = typed["lambda1"],
                      lambda2: float = typed["lambda2"], lambda_uni: float = typed["lambda_uni"]) -> Outputs:
        resolved = _configure(use_image(run_params, ref)(params_yaml=params_yaml, overrides=overrides, teacher_source=teacher_source,
                                         teacher_sha256=teacher_sha256, eps=eps, gamma=gamma, lambda1=lambda1,
                                         lambda2=lambda2, lambda_uni=lambda_uni), "run_params", cluster, "parameters")
        produced: dict[str, dsl.PipelineTask] = {}
        for t in unroll(rounds):  # ferd.plan.graph: the same tasks as dvc.yaml and `ferd stage all`
            produced[t.id] = _configure(_stage_call(t, produced, params_yaml, resolved.output, gpu_device, ref, launch),
                                        t.stage.component, cluster, t.title)
            if t.stage.fetches_teacher and not cache_teacher:
                produced[t.id].set_caching_options(False)
        last = {t.stage.output: produced[t.id] for t in unroll(rounds)}  # each output's producer, its last round
        ev = last["metrics"]
        return Outputs(metrics=ev.outputs["metrics"], report=ev.outputs["report"], summary=ev.outputs["summary"],
                       confusion=ev.outputs["confusion"], student=last["student"].outputs["student"],
                       pool=last["pool"].outputs["pool"])

    return ferd_pipeline


def image_note(image: Image | None) -> str:
    return f"Image: {image.ref}, {image.source}. " if image else ""


def compile_pipeline(out: str | Path = COMPILED, params: str | Path = DEFAULT_PARAMS,
                     cluster: str | Path | ClusterSettings = DEFAULT_CLUSTER, image: Image | None = None) -> Path:
    """Compile the DAG to ``out`` (two YAML documents: PipelineSpec and the kubernetes PlatformSpec), every task
    on ``image`` (pinned by digest; default :func:`ferd.core.image.resolve`: ``$FERD_IMAGE``, or refused)."""
    image = image or resolve()
    settings = cluster if isinstance(cluster, ClusterSettings) else load_cluster(cluster)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(params, settings, image), package_path=str(out))
    return out
