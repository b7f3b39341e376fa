"""``dvc.yaml`` and ``rounds/round-NN/dvc.yaml``: the stage graph (:mod:`ferd.graph`) as DVC stages,
generated from ``params.yaml``.

Rounds are unrolled exactly as the Kubeflow DAG unrolls them at compile time (:func:`ferd.graph.unroll`)::

    teacher-fetch → synthesis-r0 → pool-store-r0 → distillation-r0 → synthesis-r1 → … → evaluation

``dvc.yaml`` holds the teacher and evaluation stages, the metrics and the plots; each round's three
stages are in a file of their own, ``rounds/round-NN/dvc.yaml`` (``wdir: ../..``: commands and paths as
if they were in the root file). One DVC project, one graph — ``dvc repro`` runs every stage upstream of
``dvc.yaml``'s — but one ``dvc.lock`` per file: DVC rewrites a stage's whole lock file, with a
round-trip YAML parse and dump, after every stage, so one lock for every round made that cost grow with
the round (DVC's own time for the embedded default's 38 stages: 59.0 s in one file, 17.3 s split;
``benchmarks/dvc_lock_layout.py``, README "What the stage split costs").

(DVC's ``foreach`` cannot vary a stage's ``deps`` list or drop the ``--previous`` arguments of
round 0, so the files are generated rather than templated; ``ferd params use`` and
``ferd params dvc-yaml`` rewrite them whenever ``rounds`` changes, removing the files of rounds that no
longer exist, and a test checks the committed files match ``params.yaml``.)

Each stage declares as ``params`` exactly the keys its artifact's fingerprint covers
(:func:`ferd.fingerprint.scope_keys`, for the file's ``method``): changing ``synthesis.lambda_uni`` reruns
every synthesis, pool, distillation and the evaluation, never the teacher; a baseline's group
(``baseline.cmi.*``) reruns nothing of a FERD run. Metrics and plots are
the evaluation stage's ``metrics.json`` and ``plots/`` (:mod:`ferd.evaluation.dvc_plots`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import yaml

from .config import FerdConfig
from .fingerprint import scope_keys
from .graph import unroll
from .image import container_command

OUT = "out"
ROOT_FILE, ROUNDS_DIR = "dvc.yaml", "rounds"
HEADER = ("# Generated from params.yaml by `ferd params dvc-yaml` (or `ferd params use <preset>`): do not edit.\n"
          "# The stages and graph of the Kubeflow DAG (pipeline/dag.py), rounds unrolled; each round's stages are\n"
          "# in rounds/round-NN/dvc.yaml. `dvc dag` draws the whole graph.\n")
ROUND_HEADER = ("# Generated from params.yaml by `ferd params dvc-yaml`: do not edit. Round {r} of {n} (rounds\n"
                "# 0-{last}): its synthesis, pool-store and distillation stages, run from the project root (wdir).\n")


def _cmd(stage: str, cfg: FerdConfig, *args: str) -> str:
    """``--graph-rounds`` / ``--graph-method``: the rounds this file unrolls and the method its ``params``
    lists were made for; a stage refuses parameters that give another (``dvc exp run -S rounds=…``, ``-S
    method=…``) at once, with the command that regenerates the file. With ``container`` set, the command runs
    in that image (:func:`ferd.image.container_command`)."""
    argv = ["stage", stage, "--params", "params.yaml", "--graph-rounds", str(cfg.num_rounds), "--graph-method",
            cfg.method, *(word for arg in args for word in arg.split(" ")), "--no-progress"]
    if cfg.container is not None:  # the stage in ferd's image, the project mounted (ferd.image)
        return container_command(cfg.container.engine, cfg.container.image, argv)
    return " ".join(["ferd", *argv])


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


def round_file(r: int) -> str:
    """The pipeline file of round ``r``, relative to the project root."""
    return f"{ROUNDS_DIR}/round-{r:02d}/{ROOT_FILE}"


def dvc_files(cfg: FerdConfig, out: str = OUT) -> dict[str, dict[str, Any]]:
    """The project's pipeline files, relative path → document: ``dvc.yaml`` with the stages outside any
    round, the metrics and the plots; :func:`round_file` of each round with that round's stages."""
    files: dict[str, dict[str, Any]] = {ROOT_FILE: {"stages": {}, "metrics": [f"{out}/evaluation/metrics.json"],
                                                    "plots": _plots(cfg, out)}}
    stages = dvc_stages(cfg, out)
    for t in unroll(cfg.num_rounds):
        if t.round is None:
            files[ROOT_FILE]["stages"][t.id] = stages[t.id]
        else:
            cmd, *rest = stages[t.id].items()
            files.setdefault(round_file(t.round), {"stages": {}})["stages"][t.id] = dict([cmd, ("wdir", "../.."),
                                                                                           *rest])
    return files


def _plots(cfg: FerdConfig, out: str) -> list[Any]:
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
    return plots


def _class_names(cfg: FerdConfig) -> tuple[str, ...]:
    from .data import dataset_info

    return tuple(dataset_info(cfg.dataset).class_names)


class _Dumper(yaml.SafeDumper):
    """Lists of scalars in flow style (``params: [seed, dataset, …]``), the rest in block style."""


def _list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(v, (str, int, float)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _list)


def render(cfg: FerdConfig, out: str = OUT) -> dict[str, str]:
    """Each pipeline file's text, by path relative to the project root."""
    n = cfg.num_rounds
    heads = {ROOT_FILE: HEADER, **{round_file(r): ROUND_HEADER.format(r=r, n=n, last=n - 1) for r in range(n)}}
    return {path: heads[path] + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=120)
            for path, doc in dvc_files(cfg, out).items()}


def _texts_at(cfg: FerdConfig, path: str | Path) -> dict[Path, str]:
    """:func:`render` placed on disk: ``path`` is the root file, the rounds' files go beside it."""
    return {Path(path) if rel == ROOT_FILE else Path(path).parent / rel: text for rel, text in render(cfg).items()}


def stale_files(root: str | Path, cfg: FerdConfig) -> list[Path]:
    """Round files under ``root`` that ``cfg``'s graph does not have (a larger ``rounds`` before)."""
    want = {Path(root) / p for p in render(cfg)}
    return sorted(p for p in (Path(root) / ROUNDS_DIR).glob(f"round-*/{ROOT_FILE}") if p not in want)


def mismatches(cfg: FerdConfig, path: str | Path = ROOT_FILE) -> list[str]:
    """The pipeline files (beside ``path``, the root file) that differ from ``cfg``'s: missing, changed or
    stale; empty when they match."""
    bad = [str(f) for f, text in _texts_at(cfg, path).items() if not f.is_file() or f.read_text() != text]
    return bad + [str(p) for p in stale_files(Path(path).parent, cfg)]


def write_dvc_yaml(cfg: FerdConfig, path: str | Path = ROOT_FILE) -> list[Path]:
    """Write the pipeline files (``path`` the root file; the rounds' beside it) and remove the files, and
    their ``dvc.lock``, of rounds the graph no longer has. Returns the files written."""
    from .checkpoint import atomic_write_bytes

    root = Path(path).parent
    for stale in stale_files(root, cfg):
        for f in (stale, stale.with_name("dvc.lock")):
            f.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            stale.parent.rmdir()
    written = []
    for f, text in _texts_at(cfg, path).items():
        f.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(f, text.encode())
        written.append(f)
    return written
