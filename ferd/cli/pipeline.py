"""``ferd pipeline run-local | compile | submit | schedule``: the Kubeflow DAG from a source checkout.

The DAG and its components live beside the package (``pipeline/``, ``components/``), not in
it: these commands need a checkout of the repository (found above this package, as with an
editable install, or in the working directory). The image itself only runs ``ferd.stages``.

::

    ferd pipeline run-local [--params params/embedded.yaml] [-S KEY=VALUE] [--out runs/pipeline]
    ferd pipeline compile   [--params params/embedded.yaml] [--cluster pipeline/cluster.yaml]
                            [--out pipeline/ferd_pipeline.yaml]            # image: $FERD_IMAGE
    ferd pipeline compile-compare [--preset compare-smoke]   (→ pipeline/compare_pipeline.yaml)
    ferd pipeline submit    --host URL [--package FILE] [--params FILE] [-S KEY=VALUE] [-p NAME=VALUE]
                            [--experiment ferd] [--run-name NAME] [--namespace NS]
    ferd pipeline schedule  --host URL --cron '0 0 3 * * *' [--max-concurrency 1] [--catchup] …
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from ..params_io import load_yaml


def repo_root() -> Path:
    """The source checkout holding ``pipeline/`` and ``components/`` (installed as packages with the
    editable install of ``make env``), found above this package or in the working directory."""
    for candidate in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (candidate / "pipeline" / "dag.py").is_file() and (candidate / "components" / "__init__.py").is_file():
            return candidate
    raise FileNotFoundError("ferd pipeline: needs a source checkout (pipeline/dag.py and components/ not found "
                            "above the ferd package nor in the working directory); run it from the repository")


def _host(args: argparse.Namespace) -> str:
    host = args.host or os.environ.get("KF_PIPELINES_ENDPOINT")
    if not host:
        raise ValueError("--host: the Kubeflow Pipelines API endpoint (or $KF_PIPELINES_ENDPOINT) is required")
    return host


def _param_pairs(pairs: list[str] | None) -> dict:
    out = {}
    for item in pairs or ():
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"-p {item!r}: expected NAME=VALUE (e.g. -p gpu_device=cuda:0)")
        out[key] = load_yaml(raw, f"-p {key[:80]}") if raw else ""
    return out


def _run_local(args: argparse.Namespace) -> int:
    repo_root()
    from pipeline.local import run_local

    try:
        res = run_local(args.params, args.out, overrides=args.set or [], threads=args.threads)
    except RuntimeError as exc:  # a task failed: its log is above; one line here
        raise ValueError(str(exc)) from None
    keys = sorted(k for k in res.metrics if k.endswith((".avg", ".worst", ".nsd")))
    print(json.dumps({"out": str(res.out), "report": str(res.report), "student": str(res.student),
                      "pool": str(res.pool), "seconds": res.seconds,
                      "metrics": {k: round(res.metrics[k], 4) for k in keys}}, indent=1))
    return 0


IMAGE_DIGEST = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")


def _pin_image(image: str | None) -> None:
    """``--image REF@sha256:<digest>``: every component runs exactly that image (a tag can move)."""
    if image is None:
        return
    if not IMAGE_DIGEST.match(image):
        raise ValueError(f"--image: expected REF@sha256:<64 hex digits> (an image pinned by digest), got {image[:80]!r}")
    from components import IMAGE_ENV

    os.environ[IMAGE_ENV] = image  # read when the components are imported, just below


def _compile(args: argparse.Namespace) -> int:
    repo_root()
    _pin_image(args.image)
    from pipeline.dag import compile_pipeline

    path = compile_pipeline(args.out, args.params, args.cluster)
    print(f"compiled {path}")
    return 0


def _compile_compare(args: argparse.Namespace) -> int:
    repo_root()
    from pipeline.compare_dag import compile_compare

    print(f"compiled {compile_compare(args.out, args.preset, args.cluster)}")
    return 0


def _arguments(args: argparse.Namespace) -> dict:
    from pipeline.submit import COMPILED, build_arguments

    args.package = args.package or COMPILED

    return build_arguments(args.package, params_file=args.params, overrides=args.set, extra=_param_pairs(args.param))


def _submit(args: argparse.Namespace) -> int:
    repo_root()
    from pipeline.submit import submit

    arguments = _arguments(args)
    res = submit(_host(args), args.package, arguments=arguments, run_name=args.run_name,
                 experiment=args.experiment, namespace=args.namespace, pipeline_root=args.pipeline_root,
                 enable_caching=args.caching, token=os.environ.get("KF_PIPELINES_TOKEN"))
    print(json.dumps({"run_id": res.id, "experiment_id": res.experiment_id}))
    return 0


def _schedule(args: argparse.Namespace) -> int:
    repo_root()
    from pipeline.submit import schedule

    arguments = _arguments(args)
    res = schedule(_host(args), args.cron, args.package, arguments=arguments, job_name=args.name,
                   experiment=args.experiment, max_concurrency=args.max_concurrency, catchup=args.catchup,
                   enabled=not args.disabled, namespace=args.namespace, pipeline_root=args.pipeline_root,
                   start_time=args.start_time, end_time=args.end_time,
                   enable_caching=False if args.caching is None else args.caching,  # a schedule recomputes
                   token=os.environ.get("KF_PIPELINES_TOKEN"))
    print(json.dumps({"recurring_run_id": res.id, "experiment_id": res.experiment_id}))
    return 0


def _remote(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="KFP API endpoint, e.g. https://kubeflow.example/pipeline "
                                  "(default $KF_PIPELINES_ENDPOINT; a bearer token may be in $KF_PIPELINES_TOKEN)")
    p.add_argument("--package", type=Path, default=None,
                   help="compiled pipeline (default: the checkout's pipeline/ferd_pipeline.yaml)")
    p.add_argument("--params", type=Path, help="send this parameter file as params_yaml (same number of rounds)")
    p.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help="a parameter override (repeatable)")
    p.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                   help="any other pipeline parameter, e.g. -p gpu_device=cuda (repeatable)")
    p.add_argument("--experiment", default="ferd", help="experiment name (created when missing)")
    p.add_argument("--namespace", help="Kubernetes namespace (multi-user deployments)")
    p.add_argument("--pipeline-root", help="override the compiled pipeline_root (e.g. s3://bucket/prefix)")
    p.add_argument("--caching", action=argparse.BooleanOptionalAction, default=None,
                   help="force task caching on/off (default: as compiled for a run, off for a schedule)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    pipe = sub.add_parser("pipeline", help="the Kubeflow DAG: run-local, compile, submit, schedule",
                          description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ps = pipe.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")

    p = ps.add_parser("run-local", help="run the whole DAG here with kfp.local.SubprocessRunner(use_venv=False)")
    p.add_argument("--params", type=Path, default=Path("params/embedded.yaml"), help="YAML parameters")
    p.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help="override a parameter (repeatable)")
    p.add_argument("--out", type=Path, default=Path("runs/pipeline"), help="output directory")
    p.add_argument("--threads", type=int, default=1, help="torch threads per task (OMP_NUM_THREADS; 0: unset)")
    p.set_defaults(func=_run_local)

    p = ps.add_parser("compile", help="compile the DAG to YAML (PipelineSpec + kubernetes PlatformSpec)")
    p.add_argument("--params", type=Path, default=Path("params/embedded.yaml"),
                   help="parameters compiled in as defaults; their rounds are unrolled")
    p.add_argument("--cluster", type=Path, default=Path("pipeline/cluster.yaml"),
                   help="pipeline root, GPU node selection, S3 secret, retries")
    p.add_argument("--out", type=Path, default=Path("pipeline/ferd_pipeline.yaml"), help="output YAML")
    p.add_argument("--image", help="the image every task runs, pinned by digest: REF@sha256:… (default: "
                                   "$FERD_IMAGE, else ghcr.io/ferd/ferd:<version>)")
    p.set_defaults(func=_compile)

    p = ps.add_parser("compile-compare", help="compile a comparison preset: teacher → ParallelFor over arms → report")
    p.add_argument("--preset", default="compare-smoke", help="params/compare-*.yaml name or path")
    p.add_argument("--cluster", type=Path, default=Path("pipeline/cluster.yaml"), help="cluster settings")
    p.add_argument("--out", type=Path, default=Path("pipeline/compare_pipeline.yaml"), help="output YAML")
    p.set_defaults(func=_compile_compare)

    p = ps.add_parser("submit", help="start one run on a Kubeflow Pipelines cluster (kfp.Client)")
    _remote(p)
    p.add_argument("--run-name", help="run name (default: package name + time)")
    p.set_defaults(func=_submit)

    p = ps.add_parser("schedule", help="create a recurring run (six-field cron, max concurrency, no catch-up)")
    _remote(p)
    p.add_argument("--cron", required=True, help="six fields, seconds first: '0 0 3 * * *' = daily at 03:00")
    p.add_argument("--name", default="ferd-scheduled", help="recurring run name")
    p.add_argument("--max-concurrency", type=int, default=1, help="runs allowed at once (default 1)")
    p.add_argument("--catchup", action="store_true", help="backfill missed slots after a pause (default: no)")
    p.add_argument("--disabled", action="store_true", help="create the schedule disabled")
    p.add_argument("--start-time", help="RFC 3339 start of the schedule")
    p.add_argument("--end-time", help="RFC 3339 end of the schedule")
    p.set_defaults(func=_schedule)
