"""``ferd pipeline run-local``: the whole DAG here, with ``kfp.local``.

Every task runs as a subprocess of this Python (``SubprocessRunner(use_venv=False)``), or, given an image
(``--runner docker``), in a container of it (:mod:`ferd.pipeline.containers`); no cluster: kfp-kubernetes
settings and accelerators are ignored, and retries are compiled out (kfp.local would honour
them, backoff included, and a local failure is not transient). Artifacts land under
``<out>/kfp/ferd-<timestamp>/<task>/<output>``; the evaluation report is copied to
``<out>/evaluation/`` and the flat metrics to ``<out>/metrics.json``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from ferd.algorithm.run_dir import METRICS_FILE
from ferd.core.image import Image
from ferd.stages import config_from_text
from ferd.stages.artifacts import write_json

from .containers import docker_runner
from .dag import DEFAULT_PARAMS, RetrySettings, build_pipeline, load_cluster, params_text


@dataclass(frozen=True)
class LocalRun:
    out: Path
    report: Path
    student: Path
    pool: Path
    metrics: dict[str, float]
    seconds: float
    summary: Path          # the Markdown artifact (report.md)
    confusion: dict        # the ClassificationMetrics artifact's metadata (what the Kubeflow UI draws)


def run_local(params: str | Path = DEFAULT_PARAMS, out: str | Path = "runs/pipeline", *,
              overrides: list[str] | None = None, threads: int | None = 1, image: Image | None = None) -> LocalRun:
    """Run the DAG compiled from ``params`` locally; returns where its outputs are. ``image``: every task in a
    container of it.

    ``threads`` sets OMP/MKL_NUM_THREADS for the tasks (subprocesses or containers); the caller's environment
    is restored afterwards (a leftover MKL_NUM_THREADS changes later runs' float rounding).
    """
    started = time.time()
    overrides = list(overrides or [])
    text, _ = params_text(params)
    cfg = config_from_text(text, overrides)  # fail here, not in the first task
    saved = {var: os.environ.get(var) for var in _THREAD_VARS}
    if threads:  # every task is a subprocess: they inherit this (restored on return)
        os.environ.update({var: str(threads) for var in _THREAD_VARS})
    try:
        return _run(params, Path(out), overrides, text, cfg, started, image)
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # containers get them through ferd.core.image.PASS_ENV


def _run(params: str | Path, out: Path, overrides: list[str], text: str, cfg, started: float,
         image: Image | None) -> LocalRun:
    from kfp import local

    root = (out / "kfp").resolve()
    root.mkdir(parents=True, exist_ok=True)
    # the DAG is unrolled for the rounds the *overridden* parameters give
    # kfp.local honours retries (with their backoff): a local failure is not transient, fail at once
    cluster = load_cluster().model_copy(update={"retry": RetrySettings(num_retries=0)})
    pipeline = build_pipeline(_effective_params(params, overrides, out), cluster, image)
    with contextlib.ExitStack() as stack:
        runner = stack.enter_context(docker_runner(root)) if image else local.SubprocessRunner(use_venv=False)
        local.init(runner=runner, pipeline_root=str(root), raise_on_error=True)
        with warnings.catch_warnings():  # "custom base image in a Python environment", "… no effect locally"
            warnings.filterwarnings("ignore", message=".*(base image|no effect in the current local runner).*")
            task = pipeline(params_yaml=text, overrides=overrides, gpu_device=cfg.device)
    report = Path(task.outputs["report"].path)
    metrics = {k: float(v) for k, v in task.outputs["metrics"].metadata.items()}
    dest = out / "evaluation"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(report, dest)
    write_json(out / METRICS_FILE, metrics)
    return LocalRun(out, dest, Path(task.outputs["student"].path), Path(task.outputs["pool"].path), metrics,
                    round(time.time() - started, 1), Path(task.outputs["summary"].path),
                    dict(task.outputs["confusion"].metadata))


def _effective_params(params: str | Path, overrides: list[str], out: Path) -> Path:
    """A parameter file with the overrides applied (so the unrolled rounds match them)."""
    if not overrides:
        return Path(params)
    import yaml

    text, _ = params_text(params)
    cfg = config_from_text(text, overrides)
    path = out / "params.effective.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return path
