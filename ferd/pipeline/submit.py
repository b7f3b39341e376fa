"""Submit the compiled pipeline once, or on a schedule, through ``kfp.Client`` (KFP v2beta1 REST API).

Both send the whole pipeline package (``pipeline/ferd_pipeline.yaml``: PipelineSpec and the
kubernetes PlatformSpec) with the run, so what runs is exactly the committed, compiled DAG.
A schedule is a *recurring run*: a six-field cron (seconds first, ``0 0 3 * * *`` = 03:00
every day), at most ``max_concurrency`` runs at once, and no catch-up (a paused schedule
does not backfill every missed slot when it is re-enabled).
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ferd.core.errors import ServiceError
from ferd.core.image import DIGEST_REF
from ferd.core.params_io import ConfigError
from ferd.stages import RUN_TIME_PARAMS, config_from_text, run_time_overrides

COMPILED = Path("pipeline") / "ferd_pipeline.yaml"  # what `ferd pipeline compile` writes (working directory)
DEFAULT_EXPERIMENT = "ferd"

_CRON_FIELD = re.compile(r"^[0-9A-Za-z*?/,\-LW#]+$")


def check_cron(expression: str) -> str:
    """Accept a six-field cron expression (``sec min hour day-of-month month day-of-week``) or a
    ``@every``/``@daily``-style descriptor; refuse the common five-field form with a hint."""
    expr = " ".join(expression.split())
    if expr.startswith("@"):
        return expr
    fields = expr.split(" ")
    if len(fields) == 5:
        raise ValueError(f"cron {expression!r}: Kubeflow's cron has six fields, seconds first; "
                         f"did you mean '0 {expr}'?")
    if len(fields) != 6 or not all(_CRON_FIELD.match(f) for f in fields):
        raise ValueError(f"cron {expression!r}: expected six fields 'second minute hour day-of-month month "
                         "day-of-week', e.g. '0 0 3 * * *'")
    return expr


def _pipeline_spec(package: str | Path) -> dict[str, Any]:
    """The PipelineSpec of a compiled package (its first YAML document), read as untrusted; parsed once per version
    of the file (a submit reads its parameters, types, rounds and images)."""
    path = Path(package)
    stat = path.stat()
    return _parsed_spec(str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(package))


@functools.lru_cache(maxsize=4)
def _parsed_spec(path: str, mtime_ns: int, size: int, package: str) -> dict[str, Any]:
    try:
        doc = next(yaml.safe_load_all(Path(path).read_text()), None)
    except yaml.YAMLError as exc:
        raise ValueError(f"--package {package}: not YAML ({str(exc).splitlines()[0]})") from None
    root = doc.get("root") if isinstance(doc, dict) else None
    params = root.get("inputDefinitions", {}).get("parameters") if isinstance(root, dict) else None
    tasks = root.get("dag", {}).get("tasks") if isinstance(root, dict) else None
    if not (isinstance(params, dict) and all(isinstance(v, dict) for v in params.values())
            and isinstance(tasks, dict) and all(isinstance(t, dict) for t in tasks.values())):
        raise ValueError(f"--package {package}: not a compiled pipeline (expected root.inputDefinitions.parameters "
                         "and root.dag.tasks; compile one with ferd pipeline compile)")
    return doc


def _parameters(package: str | Path) -> dict[str, dict[str, Any]]:
    return _pipeline_spec(package)["root"]["inputDefinitions"]["parameters"]


def package_defaults(package: str | Path = COMPILED) -> dict[str, Any]:
    """The pipeline parameters' default values compiled into ``package``."""
    return {name: spec.get("defaultValue") for name, spec in _parameters(package).items()}


def _parameter_types(package: str | Path) -> dict[str, str]:
    return {name: str(spec.get("parameterType", "")) for name, spec in _parameters(package).items()}


def compiled_rounds(package: str | Path = COMPILED) -> int:
    """R, the rounds unrolled in ``package`` (counted from its synthesis tasks)."""
    tasks = _pipeline_spec(package)["root"]["dag"]["tasks"]
    return sum(1 for t in tasks.values() if str(t.get("componentRef", {}).get("name", "")).startswith("comp-synthesis"))


def package_images(package: str | Path = COMPILED) -> set[str]:
    """The images the tasks of ``package`` run."""
    executors = _pipeline_spec(package).get("deploymentSpec", {}).get("executors", {})
    return {str(e.get("container", {}).get("image")) for e in executors.values()
            if isinstance(e, dict) and isinstance(e.get("container"), dict)}


def local_only(ref: str) -> bool:
    """Whether ``ref`` names an image only this machine has: a bare image id, or one under podman's ``localhost/``
    (what ``make image`` builds before ``image/publish.sh`` pushes it); ``localhost:<port>/`` is a registry."""
    return ref.startswith(("sha256:", "localhost/"))


def check_images(package: str | Path, allow_local: bool = False) -> None:
    """ValueError unless every task of ``package`` runs an image pinned by digest that a cluster can pull (see
    :func:`local_only`)."""
    images = sorted(package_images(package))
    unpinned = [ref for ref in images if not DIGEST_REF.match(ref)]
    if unpinned:
        raise ValueError(f"--package {package}: its tasks run {unpinned[0][:100]}, not an image pinned by digest "
                         "(REF@sha256:…); compile it with ferd pipeline compile")
    local = [ref for ref in images if local_only(ref)]
    if local and not allow_local:
        raise ValueError(f"--package {package}: its tasks run {local[0][:100]}, an image only this machine has; "
                         "push it (image/publish.sh REGISTRY/REPO:TAG), compile again with --image-from-build, "
                         "or pass --allow-local-image for a cluster that shares this machine's images")


_JSON_KIND = {"STRING": str, "LIST": list, "STRUCT": dict, "BOOLEAN": bool, "NUMBER_INTEGER": int,
              "NUMBER_DOUBLE": (int, float)}


def _check_types(args: dict[str, Any], types: dict[str, str]) -> None:
    for name, value in args.items():
        kind = _JSON_KIND.get(types.get(name, ""))
        if kind is None:
            continue
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            hint = " (overrides: give each as -S KEY=VALUE)" if name == "overrides" else ""
            raise ValueError(f"-p {name}: expected a {types[name].lower().replace('_', ' ')}, got "
                             f"{type(value).__name__} {str(value)[:60]!r}{hint}")


def build_arguments(package: str | Path = COMPILED, *, params_file: str | Path | None = None,
                    overrides: list[str] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run arguments for the pipeline parameters, checked against what ``package`` unrolled.

    ``params_file`` replaces ``params_yaml``; ``overrides`` become the ``overrides`` list;
    ``extra`` sets any other parameter (``gpu_device``, the typed ``eps``, ``gamma``, …). The parameters that result are
    validated here, before anything is sent, and must give the compiled number of rounds.
    """
    defaults = package_defaults(package)
    args: dict[str, Any] = dict(extra or {})
    unknown = set(args) - set(defaults)
    if unknown:
        raise ValueError(f"unknown pipeline parameter(s) {sorted(unknown)}; the pipeline has {sorted(defaults)}")
    _check_types(args, _parameter_types(package))
    device = args.get("gpu_device")
    if device is not None and not re.fullmatch(r"cpu|cuda(:\d+)?", str(device)):
        raise ValueError(f"gpu_device: expected cuda, cuda:N or cpu (the device of the GPU stages), got "
                         f"{str(device)[:40]!r}")
    if params_file is not None:
        args["params_yaml"] = Path(params_file).read_text()
    if overrides:
        args["overrides"] = list(overrides)
    text = args.get("params_yaml", defaults["params_yaml"])
    typed = {name: args.get(name, defaults.get(name, "")) for name in RUN_TIME_PARAMS}
    try:  # exactly what the run's first task resolves (components/run_params)
        cfg = config_from_text(text, run_time_overrides(text, list(args.get("overrides", defaults.get("overrides")
                                                                              or [])), typed),
                               where=str(params_file) if params_file is not None else "params_yaml")
    except ConfigError as exc:
        raise ValueError(f"the run's parameters are invalid: {exc}") from None
    if cfg.num_rounds != compiled_rounds(package):
        raise ValueError(f"these parameters give {cfg.num_rounds} rounds but {package} unrolls "
                         f"{compiled_rounds(package)}: recompile (ferd pipeline compile --params …)")
    return args


@dataclass(frozen=True)
class Submitted:
    kind: str  # "run" or "recurring run"
    id: str
    experiment_id: str


def _client(host: str, namespace: str | None = None, token: str | None = None):
    import warnings

    import kfp

    kwargs: dict[str, Any] = {"host": host, "existing_token": token}
    if namespace:
        kwargs["namespace"] = namespace
    with warnings.catch_warnings(), _reaching(host):  # "only works with KFP v2.0.0-beta.2 and later": known
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(**kwargs)


@contextlib.contextmanager
def _reaching(host: str) -> Iterator[None]:
    """The API unreachable or refusing (after urllib3's retries) as one :class:`ServiceError` line, exit status 4."""
    from urllib3.exceptions import HTTPError

    try:
        yield
    except (HTTPError, OSError) as exc:
        reason = str(getattr(exc, "reason", None) or exc).splitlines()[0][:200]
        raise ServiceError(f"Kubeflow Pipelines API at {host}: could not be reached ({reason})") from None
    except Exception as exc:  # kfp_server_api.ApiException: the API answered with an error status
        if type(exc).__name__ != "ApiException":
            raise
        raise ServiceError(f"Kubeflow Pipelines API at {host}: {getattr(exc, 'status', '?')} "
                           f"{getattr(exc, 'reason', '')}".rstrip()) from None


def submit(host: str, package: str | Path = COMPILED, *, arguments: dict[str, Any] | None = None,
           run_name: str | None = None, experiment: str = DEFAULT_EXPERIMENT, namespace: str | None = None,
           pipeline_root: str | None = None, enable_caching: bool | None = None,
           token: str | None = None) -> Submitted:
    """Start one run of ``package`` now."""
    client = _client(host, namespace, token)
    with _reaching(host):
        result = client.create_run_from_pipeline_package(
            str(package), arguments=arguments or {}, run_name=run_name, experiment_name=experiment,
            namespace=namespace, pipeline_root=pipeline_root, enable_caching=enable_caching)
    return Submitted("run", result.run_id, result.run_info.experiment_id)


def schedule(host: str, cron: str, package: str | Path = COMPILED, *, arguments: dict[str, Any] | None = None,
             job_name: str = "ferd-scheduled", experiment: str = DEFAULT_EXPERIMENT, max_concurrency: int = 1,
             catchup: bool = False, enabled: bool = True, namespace: str | None = None,
             pipeline_root: str | None = None, start_time: str | None = None, end_time: str | None = None,
             enable_caching: bool | None = None, token: str | None = None) -> Submitted:
    """Create a recurring run of ``package`` on the six-field ``cron`` schedule."""
    cron = check_cron(cron)
    if max_concurrency < 1:
        raise ValueError(f"max_concurrency: expected >= 1, got {max_concurrency}")
    client = _client(host, namespace, token)
    with _reaching(host):
        exp = client.create_experiment(name=experiment, namespace=namespace)
        job = client.create_recurring_run(
            experiment_id=exp.experiment_id, job_name=job_name, cron_expression=cron, max_concurrency=max_concurrency,
            no_catchup=not catchup, params=arguments or {}, pipeline_package_path=str(package), enabled=enabled,
            pipeline_root=pipeline_root, start_time=start_time, end_time=end_time, enable_caching=enable_caching)
    return Submitted("recurring run", job.recurring_run_id, exp.experiment_id)
