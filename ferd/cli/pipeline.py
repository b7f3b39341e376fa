"""``ferd pipeline run-local | compile | submit | schedule``: the Kubeflow DAG (:mod:`ferd.pipeline`, with the
``kfp`` extra: ``pip install 'ferd[kfp]'``).

::

    ferd pipeline run-local [--params params/embedded.yaml] [-S KEY=VALUE] [--out runs/pipeline]
                            [--runner subprocess|docker [--image REF@sha256:… | --image-from-build]]
    ferd pipeline compile   (--image REF@sha256:… | --image-from-build | $FERD_IMAGE)
                            [--params params/embedded.yaml] [--cluster FILE] [--out pipeline/ferd_pipeline.yaml]
    ferd pipeline compile-compare (--image … | --image-from-build) [--preset compare-smoke]
                            (→ pipeline/compare_pipeline.yaml)
    ferd pipeline submit    --host URL [--package FILE] [--params FILE] [-S KEY=VALUE] [-p NAME=VALUE]
                            [--experiment ferd] [--run-name NAME] [--namespace NS]
    ferd pipeline schedule  --host URL --cron '0 0 3 * * *' [--max-concurrency 1] [--catchup] …
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..core.image import resolve
from ..core.params_io import load_yaml
from ..pipeline import DEFAULT_CLUSTER
from ..plan.presets import PRESETS, params_file
from . import at_least, local_path



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
    if args.runner != "docker" and (args.image or args.image_from_build):
        raise ValueError("--image/--image-from-build: the image the tasks run in under --runner docker; the default "
                         "runner (subprocess) runs every task in this environment: add --runner docker")
    image = resolve(args.image, args.image_from_build) if args.runner == "docker" else None
    from ferd.pipeline.local import run_local

    try:
        res = run_local(args.params, args.out, overrides=args.set or [], threads=args.threads, image=image)
    except RuntimeError as exc:  # a task failed: its log is above; one line here
        raise ValueError(str(exc)) from None
    keys = sorted(k for k in res.metrics if k.endswith((".avg", ".worst", ".nsd")))
    print(json.dumps({"out": str(res.out), "report": str(res.report), "report_md": str(res.report / "eval" / "report.md"),
                      "student": str(res.student),
                      "pool": str(res.pool), "seconds": res.seconds,
                      "metrics": {k: round(res.metrics[k], 4) for k in keys}}, indent=1))
    return 0


def _compile(args: argparse.Namespace) -> int:
    image = resolve(args.image, args.image_from_build, pushed=True)  # what the cluster pulls
    from ferd.pipeline.dag import compile_pipeline

    path = compile_pipeline(args.out, args.params, args.cluster, image)
    print(f"compiled {path} (image {image.ref})")
    return 0


def _compile_compare(args: argparse.Namespace) -> int:
    image = resolve(args.image, args.image_from_build, pushed=True)  # what the cluster pulls
    from ferd.pipeline.compare_dag import compile_compare

    print(f"compiled {compile_compare(args.out, args.preset, args.cluster, image)} (image {image.ref})")
    return 0


def _arguments(args: argparse.Namespace) -> dict:
    from ferd.pipeline.submit import COMPILED, build_arguments, check_images

    args.package = args.package or COMPILED
    if not Path(args.package).is_file():
        raise FileNotFoundError(f"--package {args.package}: not found; compile one with ferd pipeline compile")
    check_images(args.package, allow_local=args.allow_local_image)  # before the run's parameters and the API

    return build_arguments(args.package, params_file=args.params, overrides=args.set, extra=_param_pairs(args.param))


def _submit(args: argparse.Namespace) -> int:
    from ferd.pipeline.submit import submit

    arguments = _arguments(args)
    res = submit(_host(args), args.package, arguments=arguments, run_name=args.run_name,
                 experiment=args.experiment, namespace=args.namespace, pipeline_root=args.pipeline_root,
                 enable_caching=args.caching, token=os.environ.get("KF_PIPELINES_TOKEN"))
    print(json.dumps({"run_id": res.id, "experiment_id": res.experiment_id}))
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from ferd.pipeline.submit import schedule

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
                   help="compiled pipeline (default: pipeline/ferd_pipeline.yaml here)")
    p.add_argument("--params", type=params_file, help="send this parameter file as params_yaml (same number of rounds)")
    p.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help="a parameter override (repeatable)")
    p.add_argument("-p", "--param", action="append", metavar="NAME=VALUE",
                   help="any other pipeline parameter, e.g. -p gpu_device=cuda (repeatable)")
    p.add_argument("--experiment", default="ferd", help="experiment name (created when missing)")
    p.add_argument("--namespace", help="Kubernetes namespace (multi-user deployments)")
    p.add_argument("--pipeline-root", help="override the compiled pipeline_root (e.g. s3://bucket/prefix)")
    p.add_argument("--caching", action=argparse.BooleanOptionalAction, default=None,
                   help="force task caching on/off (default: as compiled for a run, off for a schedule)")
    p.add_argument("--allow-local-image", action="store_true",
                   help="send a package whose tasks run a localhost/ image or a bare image id (only for a cluster "
                        "that shares this machine's images; by default refused: push it first)")


def _image(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--image", help=f"the image {what}, pinned by digest: REF@sha256:… (default: $FERD_IMAGE, "
                                   "under the same rule)")
    g.add_argument("--image-from-build", action="store_true",
                   help="the image `make image` built last (build/image.json), by digest")


def add_parser(sub: argparse._SubParsersAction) -> None:
    pipe = sub.add_parser("pipeline", help="the Kubeflow DAG: run-local, compile, submit, schedule",
                          description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ps = pipe.add_subparsers(dest="pipeline_command", required=True, metavar="ACTION")

    p = ps.add_parser("run-local", help="run the whole DAG here: every task a subprocess, or a container of the image")
    p.add_argument("--params", type=params_file, default=PRESETS / "embedded.yaml", help="YAML parameters")
    p.add_argument("-S", "--set", action="append", metavar="KEY=VALUE", help="override a parameter (repeatable)")
    p.add_argument("--out", type=local_path, default=Path("runs/pipeline"), help="output directory")
    p.add_argument("--threads", type=at_least(0), default=1, help="torch threads per task (OMP_NUM_THREADS; 0: unset)")
    p.add_argument("--runner", choices=("subprocess", "docker"), default="subprocess",
                   help="subprocess: kfp.local.SubprocessRunner in this environment; docker: every task in a "
                        "container of the image (kfp.local.DockerRunner; podman's Docker API where $DOCKER_HOST "
                        "points at it)")
    _image(p, "the tasks run in (--runner docker)")
    p.set_defaults(func=_run_local)

    p = ps.add_parser("compile", help="compile the DAG to YAML (PipelineSpec + kubernetes PlatformSpec)")
    p.add_argument("--params", type=params_file, default=PRESETS / "embedded.yaml",
                   help="parameters compiled in as defaults; their rounds are unrolled")
    p.add_argument("--cluster", type=Path, default=DEFAULT_CLUSTER,
                   help="pipeline root, GPU node selection, S3 secret, retries (default: ferd's cluster.yaml)")
    p.add_argument("--out", type=local_path, default=Path("pipeline/ferd_pipeline.yaml"), help="output YAML")
    _image(p, "every task runs")
    p.set_defaults(func=_compile)

    p = ps.add_parser("compile-compare", help="compile a comparison preset: teacher → ParallelFor over arms → report")
    p.add_argument("--preset", default="compare-smoke", help="params/compare-*.yaml name or path")
    p.add_argument("--cluster", type=Path, default=DEFAULT_CLUSTER, help="cluster settings")
    p.add_argument("--out", type=local_path, default=Path("pipeline/compare_pipeline.yaml"), help="output YAML")
    _image(p, "every task runs")
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
