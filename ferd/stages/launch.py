"""A data-parallel stage as a job of an existing engine on Kubernetes (issue 20).

Two engines run the same container command, ``torchrun --no-python ferd stage <name> …`` in the ferd image,
with torchrun's nodes, processes per node and rendezvous taken from the ``PET_*`` environment the engine sets:

* ``trainer`` — a Kubeflow Trainer (v2) ``TrainJob`` on a ``torch-distributed`` runtime, submitted and
  awaited with the kubeflow SDK's ``TrainerClient`` (:func:`submit`, :func:`wait`);
* ``pytorchjob`` — a training-operator (v1) ``PyTorchJob`` (:func:`pytorchjob_manifest`), for clusters not
  yet on the Trainer, created and polled with the Kubernetes client.

The stage reads its input artifacts from and writes its output to S3 (``ferd stage`` takes ``s3://`` paths,
:mod:`ferd.stages.io`); inside torchrun the stage splits its global batch across every process of every node
(:mod:`ferd.compute.distributed`) and only rank 0 writes. A job that fails (any rank) fails as a whole.

Every process of a job gets the secrets of the task that launched it by reference (``secret_env``: the S3
credentials and, with a ``signing_secret``, ``$FERD_SIGNING_KEY``), so its rank 0 signs what it writes; the
task copies the job's artifact into its own output only once a private copy of it verified
(:func:`fetch_verified`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..plan import graph
from ..settings.config import FerdConfig
from .artifacts import ArtifactError, config_from_text, read_manifest
from ..core.storage import fetch_dir, is_s3, publish_dir

Engine = Literal["trainer", "pytorchjob"]
ENGINES: tuple[str, ...] = ("trainer", "pytorchjob")
PYTORCHJOB = ("kubeflow.org", "v1", "pytorchjobs")  # group, version, plural of the training operator v1


@dataclass(frozen=True)
class JobSpec:
    """One stage's job: its name, the image and command, and how many nodes × GPUs it runs on."""

    name: str
    namespace: str
    image: str
    command: tuple[str, ...]
    nodes: int = 1
    gpus_per_node: int = 1
    runtime: str = "torch-distributed"  # the Trainer's (Cluster)TrainingRuntime
    env: dict[str, str] = field(default_factory=dict)
    secret_env: dict[str, tuple[str, str]] = field(default_factory=dict)  # variable -> (secret, key)
    optional_secret_env: dict[str, tuple[str, str]] = field(default_factory=dict)  # the secret may omit these

    def __post_init__(self) -> None:
        if self.nodes < 1 or self.gpus_per_node < 0:
            raise ValueError(f"distributed: expected nodes >= 1 and gpus_per_node >= 0, got {self.nodes} and "
                             f"{self.gpus_per_node}")

    @property
    def resources(self) -> dict[str, int]:
        return {"gpu": self.gpus_per_node} if self.gpus_per_node else {}

    def secret_refs(self) -> list[dict[str, Any]]:
        """``secret_env`` as container env entries that name the secret, never its value (credentials stay
        out of the job object)."""
        refs = [{"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
                for var, (secret, key) in sorted(self.secret_env.items())]
        return refs + [{"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": True}}}
                       for var, (secret, key) in sorted(self.optional_secret_env.items())]


@dataclass(frozen=True)
class Launch:
    """The ``distributed`` block of the cluster settings (``ferd/pipeline/cluster.yaml``), as the DAG hands it to
    the synthesis and distillation tasks (JSON): where and how their jobs run."""

    namespace: str
    scratch_uri: str  # s3://… (or a directory): the jobs write their artifacts under it
    engine: Engine = "trainer"
    nodes: int = 1
    gpus_per_node: int = 1
    runtime: str = "torch-distributed"
    timeout_s: int = 86400
    poll_s: float = 30.0
    secret_env: dict[str, tuple[str, str]] = field(default_factory=dict)  # the S3 credentials, by reference
    optional_secret_env: dict[str, tuple[str, str]] = field(default_factory=dict)  # keys a secret may omit
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, text: str) -> Launch:
        data = json.loads(text)
        for key in ("secret_env", "optional_secret_env"):
            data[key] = {var: tuple(ref) for var, ref in data.get(key, {}).items()}
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


PARAMS_ENV = "FERD_PARAMS_YAML"


def stage_job(launch: Launch, image: str, stage: str, params_yaml: str, overrides: Sequence[str],
              round_index: int, inputs: dict[str, str | None]) -> tuple[JobSpec, str]:
    """The job of one stage task and the URI its artifact will be written to. Its name is the stage, the
    round, a digest of what the stage computes from (parameters, overrides, inputs) and a fresh suffix: a
    retried task (the Kubeflow retry policy) starts a new job with its own output, never a second writer of
    another's. The parameters travel in ``$FERD_PARAMS_YAML``, written to a file before torchrun starts."""
    import hashlib
    import shlex
    import uuid

    digest = hashlib.sha256(json.dumps([stage, params_yaml, list(overrides), round_index, inputs],
                                       sort_keys=True).encode()).hexdigest()[:8]
    name = f"ferd-{stage}-r{round_index}-{digest}-{uuid.uuid4().hex[:6]}"
    out = f"{launch.scratch_uri.rstrip('/')}/{name}"
    args = ["--params", "/tmp/ferd-params.yaml", *(f"--set={o}" for o in overrides), "--round", str(round_index),
            *(a for flag, uri in sorted(inputs.items()) if uri is not None for a in (f"--{flag}", uri)),
            "--out", out, "--no-progress"]
    script = (f'printf "%s" "${PARAMS_ENV}" > /tmp/ferd-params.yaml && exec '
              + shlex.join(stage_command(stage, args)))
    spec = JobSpec(name=name, namespace=launch.namespace, image=image, command=("sh", "-c", script),
                   nodes=launch.nodes, gpus_per_node=launch.gpus_per_node, runtime=launch.runtime,
                   env={**launch.env, PARAMS_ENV: params_yaml}, secret_env=dict(launch.secret_env),
                   optional_secret_env=dict(launch.optional_secret_env))
    return spec, out


def run_stage_job(launch: Launch | str, stage: str, params_yaml: str, overrides: Sequence[str], round_index: int,
                  inputs: dict[str, str | None], out_dir: str, image: str | None = None,
                  configuration: Any = None) -> str:
    """Submit the stage's job (``launch``: a :class:`Launch` or its JSON; ``image``: the task's own,
    ``$FERD_IMAGE``), wait for it, and copy its artifact into ``out_dir`` once it verified
    (:func:`fetch_verified`); returns the job's name. What the DAG's synthesis and distillation tasks do with a
    ``distributed`` block. The parameters are checked before the job is submitted."""
    launch = Launch.from_json(launch) if isinstance(launch, str) else launch
    cfg = config_from_text(params_yaml, overrides)
    spec, out = stage_job(launch, image or os.environ["FERD_IMAGE"], stage, params_yaml, overrides, round_index,
                          inputs)
    submit(spec, launch.engine, configuration)
    wait(spec, launch.engine, launch.timeout_s, launch.poll_s, configuration)
    fetch_verified(spec.name, out, out_dir, stage, cfg, round_index)
    return spec.name


class JobArtifactError(ArtifactError):
    """A job's artifact did not verify; nothing of it was copied."""


def fetch_verified(job: str, uri: str, out_dir: str | os.PathLike[str], stage: str, cfg: FerdConfig,
                   round_index: int) -> dict:
    """Copy the artifact that the job ``job`` wrote at ``uri`` (S3 or a directory) into ``out_dir`` once a
    private copy of it verified as ``stage``'s artifact of ``round_index`` under ``cfg``
    (:func:`ferd.stages.artifacts.read_manifest`: stage, round, parameter fingerprint, the manifest's
    checksum, its signature when ``$FERD_SIGNING_KEY`` is set, every listed file's sha256). Only the files
    its manifest lists travel; anything else under ``uri`` stays there. Returns the manifest;
    :class:`JobArtifactError` naming the artifact when it does not verify, with nothing copied."""
    scope = graph.BY_NAME[stage].scope
    with tempfile.TemporaryDirectory(prefix="ferd-job-") as tmp:
        staging = Path(tmp) / "artifact"
        try:
            if not is_s3(uri):  # a manifest of the right stage and round before anything is copied
                read_manifest(uri, scope, cfg, round_index=round_index, what=f"{stage} artifact", verify=False)
            fetch_dir(uri, staging)
            manifest = read_manifest(staging, scope, cfg, round_index=round_index, what=f"{stage} artifact")
        except ValueError as exc:  # the message names the job's artifact, never the private copy
            raise JobArtifactError(f"job {job}: {str(exc).replace(str(staging), uri)}; nothing of it was copied "
                                   f"to {out_dir}") from None
        publish_dir(staging, str(out_dir))
    return manifest


def stage_command(stage: str, args: Sequence[str]) -> tuple[str, ...]:
    """The container command of a stage's job: torchrun (configured by the engine's PET_* variables)
    starting ``ferd stage <stage> <args>`` on every process."""
    return ("torchrun", "--no-python", "ferd", "stage", stage, *args)


def pytorchjob_manifest(spec: JobSpec) -> dict[str, Any]:
    """The training-operator v1 ``PyTorchJob`` of ``spec``: a Master and ``nodes − 1`` Workers, each a
    container named ``pytorch`` (the operator's convention) with ``gpus_per_node`` GPUs, ``nprocPerNode``
    processes per node, no retries (a failed rank fails the job; the Kubeflow task retries the stage)."""

    def replica(n: int) -> dict[str, Any]:
        container: dict[str, Any] = {"name": "pytorch", "image": spec.image, "command": list(spec.command),
                                     "env": [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
                                     + spec.secret_refs()}
        if spec.gpus_per_node:
            container["resources"] = {"limits": {"nvidia.com/gpu": spec.gpus_per_node}}
        return {"replicas": n, "restartPolicy": "Never", "template": {"spec": {"containers": [container]}}}

    replicas = {"Master": replica(1)}
    if spec.nodes > 1:
        replicas["Worker"] = replica(spec.nodes - 1)
    group, version, _ = PYTORCHJOB
    return {"apiVersion": f"{group}/{version}", "kind": "PyTorchJob",
            "metadata": {"name": spec.name, "namespace": spec.namespace},
            "spec": {"nprocPerNode": str(spec.gpus_per_node or "auto"),
                     "runPolicy": {"backoffLimit": 0, "cleanPodPolicy": "None"},
                     "pytorchReplicaSpecs": replicas}}


def _kubernetes(configuration: Any = None) -> Any:
    """A Kubernetes ApiClient: ``configuration`` (tests: a stand-in API), else in-cluster or kube-config."""
    from kubernetes import client, config

    if configuration is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
    return client.ApiClient(configuration)


def _trainer_client(spec: JobSpec, configuration: Any = None) -> Any:
    from kubeflow.trainer import KubernetesBackendConfig, TrainerClient

    return TrainerClient(KubernetesBackendConfig(namespace=spec.namespace, client_configuration=configuration))


def _secret_patch(spec: JobSpec) -> Any:
    """A TrainJob runtime patch adding ``spec.secret_refs()`` to the trainer container (``node``) of the
    runtime's ``node`` job."""
    from kubeflow.trainer.options import (ContainerPatch, JobSetSpecPatch, JobSetTemplatePatch, JobSpecPatch,
                                          JobTemplatePatch, PodSpecPatch, PodTemplatePatch, ReplicatedJobPatch,
                                          RuntimePatch, TrainingRuntimeSpecPatch)

    container = ContainerPatch(name="node", env=spec.secret_refs())
    job = ReplicatedJobPatch(name="node", template=JobTemplatePatch(spec=JobSpecPatch(
        template=PodTemplatePatch(spec=PodSpecPatch(containers=[container])))))
    return RuntimePatch(training_runtime_spec=TrainingRuntimeSpecPatch(
        template=JobSetTemplatePatch(spec=JobSetSpecPatch(replicated_jobs=[job]))))


def submit(spec: JobSpec, engine: Engine, configuration: Any = None) -> str:
    """Create the job of ``spec`` on ``engine``; returns its name."""
    if engine == "trainer":
        from kubeflow.trainer import CustomTrainerContainer
        from kubeflow.trainer.options import Name, TrainerCommand

        trainer = CustomTrainerContainer(image=spec.image, num_nodes=spec.nodes,
                                         resources_per_node=spec.resources or None, env=dict(spec.env) or None)
        options = [Name(spec.name), TrainerCommand(list(spec.command))]
        if spec.secret_env:  # the SDK's env takes values only: secret references go in as a runtime patch
            options.append(_secret_patch(spec))
        return _trainer_client(spec, configuration).train(runtime=spec.runtime, trainer=trainer, options=options)
    if engine == "pytorchjob":
        from kubernetes import client

        group, version, plural = PYTORCHJOB
        client.CustomObjectsApi(_kubernetes(configuration)).create_namespaced_custom_object(
            group, version, spec.namespace, plural, pytorchjob_manifest(spec))
        return spec.name
    raise ValueError(f"distributed.engine: expected one of {list(ENGINES)}, got {engine!r}")


def wait(spec: JobSpec, engine: Engine, timeout_s: int, poll_s: float = 10.0, configuration: Any = None) -> None:
    """Block until the job of ``spec`` has succeeded; RuntimeError when it failed, TimeoutError after
    ``timeout_s`` seconds."""
    if engine == "trainer":
        from kubeflow.trainer.constants.constants import TRAINJOB_COMPLETE

        _trainer_client(spec, configuration).wait_for_job_status(
            spec.name, status={TRAINJOB_COMPLETE}, timeout=timeout_s, polling_interval=max(1, int(poll_s)))
        return
    from kubernetes import client

    api = client.CustomObjectsApi(_kubernetes(configuration))
    group, version, plural = PYTORCHJOB
    deadline = time.monotonic() + timeout_s
    while True:
        job = api.get_namespaced_custom_object(group, version, spec.namespace, plural, spec.name)
        done = {c["type"] for c in job.get("status", {}).get("conditions", []) if c.get("status") == "True"}
        if "Failed" in done:
            raise RuntimeError(f"PyTorchJob {spec.namespace}/{spec.name} failed")
        if "Succeeded" in done:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"PyTorchJob {spec.namespace}/{spec.name} did not finish within {timeout_s} s")
        time.sleep(poll_s)
