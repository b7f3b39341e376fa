"""``dvc.yaml``: the stage graph (:mod:`ferd.graph`) as DVC stages, generated from ``params.yaml``.

Rounds are unrolled exactly as the Kubeflow DAG unrolls them at compile time (:func:`ferd.graph.unroll`)::

    teacher-fetch → synthesis-r0 → pool-store-r0 → distillation-r0 → synthesis-r1 → … → evaluation

(DVC's ``foreach`` cannot vary a stage's ``deps`` list or drop the ``--previous`` arguments of
round 0, so the file is generated rather than templated; ``ferd params use`` and
``ferd params dvc-yaml`` rewrite it whenever ``rounds`` changes, and a test checks the
committed file matches ``params.yaml``.)

Each stage declares as ``params`` exactly the keys its artifact's fingerprint covers
(:func:`ferd.fingerprint.scope_keys`, for the file's ``method``): changing ``synthesis.lambda_uni`` reruns
every synthesis, pool, distillation and the evaluation, never the teacher; a baseline's group
(``baseline.cmi.*``) reruns nothing of a FERD run. Metrics and plots are
the evaluation stage's ``metrics.json`` and ``plots/`` (:mod:`ferd.evaluation.dvc_plots`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .config import FerdConfig
from .fingerprint import scope_keys
from .graph import unroll

OUT = "out"
HEADER = ("# Generated from params.yaml by `ferd params dvc-yaml` (or `ferd params use <preset>`): do not edit.\n"
          "# The stages and graph of the Kubeflow DAG (pipeline/dag.py), rounds unrolled. `dvc dag` draws it.\n")


def _cmd(stage: str, cfg: FerdConfig, *args: str) -> str:
    """``--graph-rounds`` / ``--graph-method``: the rounds this file unrolls and the method its ``params``
    lists were made for; a stage refuses parameters that give another (``dvc exp run -S rounds=…``, ``-S
    method=…``) at once, with the command that regenerates the file."""
    return " ".join(["ferd stage", stage, "--params params.yaml", f"--graph-rounds {cfg.num_rounds}",
                     f"--graph-method {cfg.method}", *args, "--no-progress"])


def _local_path(path: str | None) -> str | None:
    """``data_root`` as a DVC dependency when it is a local path (``s3://`` data is pinned by its manifest)."""
    return None if not path or "://" in path else path


def dvc_stages(cfg: FerdConfig, out: str = OUT) -> dict[str, Any]:
    """One DVC stage per task of the unrolled graph (:func:`ferd.graph.unroll`): its ``ferd stage`` command,
    the directories it reads as ``deps`` (:attr:`ferd.graph.Task.reads`), its fingerprint scope as ``params`` and its directory as ``outs``."""
    tasks = unroll(cfg.num_rounds)
    dirs = {t.id: t.dir(out) for t in tasks}
    stages: dict[str, Any] = {}
    for t in tasks:
        args = [f"--round {t.round}"] if t.round is not None else []
        args += [f"--{inp.flag} {dirs[producer]}" for inp, producer in t.inputs]
        entry: dict[str, Any] = {"cmd": _cmd(t.stage.name, cfg, *args, f"--out {dirs[t.id]}")}
        deps = [dirs[task_id] for task_id in t.reads]
        if t.stage.name == "teacher-fetch":  # replacing the checkpoint file reruns the teacher stage
            deps += [d for d in (cfg.teacher.local_file,) if d]
        trains = t.stage.name == "teacher-fetch" and cfg.teacher.source.startswith("train:")
        if t.stage.name == "evaluation" or trains:
            deps += [d for d in (_local_path(cfg.data_root),) if d]  # the test (and training) data
        if deps:
            entry["deps"] = deps
        stages[t.id] = {**entry, "params": list(scope_keys(t.stage.scope, cfg.method)), "outs": [dirs[t.id]]}
    return stages


def dvc_document(cfg: FerdConfig, out: str = OUT) -> dict[str, Any]:
    ev = f"{out}/evaluation"
    plots: list[Any] = []
    for attack in cfg.evaluation.attacks:
        plots.append({f"{ev}/plots/per_class_{attack}.csv": {
            "template": "bar_horizontal", "x": "student", "y": "class",
            "title": f"Student per-class accuracy (%), {attack}"}})
        if attack != "clean":
            plots.append({f"{ev}/plots/predictions_student_{attack}.csv": {
                "template": "confusion", "x": "actual", "y": "predicted",
                "title": f"Student predictions under {attack}: true (x) vs predicted (y)"}})
    classes = list(_class_names(cfg))
    plots.append({"class-weights": {"template": "linear", "x": "epoch",
                                    "y": {f"{ev}/plots/class_weights.csv": classes},
                                    "title": "Class weights p (Eq. 7) per epoch", "y_label": "p"}})
    return {"stages": dvc_stages(cfg, out), "metrics": [f"{ev}/metrics.json"], "plots": plots}


def _class_names(cfg: FerdConfig) -> tuple[str, ...]:
    from .data import dataset_info

    return tuple(dataset_info(cfg.dataset).class_names)


class _Dumper(yaml.SafeDumper):
    """Lists of scalars in flow style (``params: [seed, dataset, …]``), the rest in block style."""


def _list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(v, (str, int, float)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _list)


def render(cfg: FerdConfig, out: str = OUT) -> str:
    return HEADER + yaml.dump(dvc_document(cfg, out), Dumper=_Dumper, sort_keys=False, width=120)


def write_dvc_yaml(cfg: FerdConfig, path: str | Path = "dvc.yaml") -> Path:
    from .checkpoint import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, render(cfg).encode())
    return path
