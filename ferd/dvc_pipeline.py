"""``dvc.yaml``: the Kubeflow DAG (:mod:`pipeline.dag`) as DVC stages, generated from ``params.yaml``.

Rounds are unrolled exactly as the Kubeflow DAG unrolls them at compile time::

    teacher-fetch → synthesis-r0 → pool-store-r0 → distillation-r0 → synthesis-r1 → … → evaluation

(DVC's ``foreach`` cannot vary a stage's ``deps`` list or drop the ``--previous`` arguments of
round 0, so the file is generated rather than templated; ``ferd params use`` and
``ferd params dvc-yaml`` rewrite it whenever ``rounds`` changes, and a test checks the
committed file matches ``params.yaml``.)

Each stage declares as ``params`` exactly the keys its artifact's fingerprint covers
(:data:`ferd.fingerprint.SCOPES`): changing ``synthesis.lambda_uni`` reruns every
synthesis, pool, distillation and the evaluation, never the teacher. Metrics and plots are
the evaluation stage's ``metrics.json`` and ``plots/`` (:mod:`ferd.evaluation.dvc_plots`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .config import FerdConfig
from .fingerprint import SCOPES

OUT = "out"
HEADER = ("# Generated from params.yaml by `ferd params dvc-yaml` (or `ferd params use <preset>`): do not edit.\n"
          "# The stages and graph of the Kubeflow DAG (pipeline/dag.py), rounds unrolled. `dvc dag` draws it.\n")


def _cmd(stage: str, *args: str) -> str:
    return " ".join(["ferd stage", stage, "--params params.yaml", *args, "--no-progress"])


def stage_dirs(rounds: int, out: str = OUT) -> dict[str, str]:
    dirs = {"teacher-fetch": f"{out}/teacher", "evaluation": f"{out}/evaluation"}
    for r in range(rounds):
        for kind, sub in (("synthesis", "synthesis"), ("pool-store", "pool"), ("distillation", "distillation")):
            dirs[f"{kind}-r{r}"] = f"{out}/round-{r}/{sub}"
    return dirs


def dvc_stages(cfg: FerdConfig, out: str = OUT) -> dict[str, Any]:
    rounds = cfg.num_rounds
    d = stage_dirs(rounds, out)
    teacher = d["teacher-fetch"]
    stages: dict[str, Any] = {"teacher-fetch": {
        "cmd": _cmd("teacher-fetch", f"--out {teacher}"),
        "params": list(SCOPES["teacher"]), "outs": [teacher]}}
    for r in range(rounds):
        syn, pool, dist = d[f"synthesis-r{r}"], d[f"pool-store-r{r}"], d[f"distillation-r{r}"]
        prev = {} if r == 0 else {k: d[f"{k}-r{r - 1}"] for k in ("synthesis", "pool-store", "distillation")}
        syn_args = [f"--round {r}", f"--teacher {teacher}"] + (
            [] if r == 0 else [f"--student {prev['distillation']}", f"--previous {prev['synthesis']}"])
        stages[f"synthesis-r{r}"] = {
            "cmd": _cmd("synthesis", *syn_args, f"--out {syn}"),
            "deps": [teacher] + ([] if r == 0 else [prev["distillation"], prev["synthesis"]]),
            "params": list(SCOPES["synthesis"]), "outs": [syn]}
        stages[f"pool-store-r{r}"] = {
            "cmd": _cmd("pool-store", f"--round {r}", f"--synthesis {syn}",
                        *([] if r == 0 else [f"--previous {prev['pool-store']}"]), f"--out {pool}"),
            "deps": [syn] + ([] if r == 0 else [prev["pool-store"]]),
            "params": list(SCOPES["pool"]), "outs": [pool]}
        stages[f"distillation-r{r}"] = {
            "cmd": _cmd("distillation", f"--round {r}", f"--teacher {teacher}", f"--synthesis {syn}",
                        f"--pool {pool}", *([] if r == 0 else [f"--previous {prev['distillation']}"]),
                        f"--out {dist}"),
            "deps": [teacher, syn, pool] + ([] if r == 0 else [prev["distillation"]]),
            "params": list(SCOPES["distillation"]), "outs": [dist]}
    last = d[f"distillation-r{rounds - 1}"]
    stages["evaluation"] = {
        "cmd": _cmd("evaluation", f"--teacher {teacher}", f"--student {last}", f"--out {d['evaluation']}"),
        "deps": [teacher, last], "params": list(SCOPES["evaluation"]), "outs": [d["evaluation"]]}
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
