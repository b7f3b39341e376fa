"""``dvc.yaml`` and ``rounds/round-NN/dvc.yaml``: the stage graph (:mod:`ferd.plan.graph`) as DVC stages,
generated from ``params.yaml``.

Rounds are unrolled exactly as the Kubeflow DAG unrolls them at compile time (:func:`ferd.plan.graph.unroll`)::

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
(:func:`ferd.plan.fingerprint.scope_keys`, for the file's ``method``): changing ``synthesis.lambda_uni`` reruns
every synthesis, pool, distillation and the evaluation, never the teacher; a baseline's group
(``baseline.cmi.*``) reruns nothing of a FERD run. Metrics and plots are
the evaluation stage's ``metrics.json`` and ``plots/`` (:mod:`ferd.evaluation.dvc_plots`: per-class
accuracy, confusion, class weights), the run's per-epoch curves in DVCLive, ``out/live`` (:mod:`ferd.core.tracking`:
every loss term, p, diversity, FAE mask), and each round's grid of kept synthetic images,
``round-<r>/synthesis/samples.png`` (an image plot).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from .. import __version__
from ..settings.config import FerdConfig
from ..plan.fingerprint import scope_keys
from ..plan.graph import final_task, unroll
from ..core.image import container_command
from ..core.storage import MANIFEST
from ..synthesis.samples import SAMPLES_FILE
from ..algorithm.round_state import HISTORY_FILE, STUDENT_FILE
from ..algorithm.run_dir import METRICS_FILE
from .code_deps import code_deps, source_checkout
from .layout import AA_REPORT_DIR, CLASS_WEIGHTS_FILE, LIVE_DIR, PLOTS_DIR, REPORT_DIR

OUT = "out"
LIVE_METRICS, LIVE_PLOTS = "metrics.json", "plots"  # DVCLive's own names in its directory (ferd.core.tracking)
ROOT_FILE, ROUNDS_DIR = "dvc.yaml", "rounds"
HEADER = ("# Generated from params.yaml by `ferd params dvc-yaml` (or `ferd params use <preset>`): do not edit.\n"
          "# The stages and graph of the Kubeflow DAG (pipeline/dag.py), rounds unrolled; each round's stages are\n"
          "# in rounds/round-NN/dvc.yaml. `dvc dag` draws the whole graph.\n")
ROUND_HEADER = ("# Generated from params.yaml by `ferd params dvc-yaml`: do not edit. Round {r} of {n} (rounds\n"
                "# 0-{last}): its synthesis, pool-store and distillation stages, run from the project root (wdir).\n")


def _cmd(stage: str, cfg: FerdConfig, *args: str, pin_version: bool = False, digest: str | None = None) -> str:
    """``--graph-digest``: the digest of the stage's entry in this file (:func:`stage_digests`); a stage refuses
    parameters that give it another entry (``dvc exp run -S rounds=…``, ``-S method=…``, ``-S teacher.source=…``)
    at once, with the command that regenerates the file. ``pin_version``: ferd is installed
    outside the project, so its source cannot be a dependency; ``--graph-ferd-version`` names the version the
    file was made with (another version changes the command, so DVC reruns the stage once the file is
    regenerated, and a stage refuses to run under another version). With ``container`` set, the command runs
    in that image (:func:`ferd.core.image.container_command`)."""
    graph = ["--graph-digest", digest] if digest else []
    pin = ["--graph-ferd-version", __version__] if pin_version else []
    argv = ["stage", stage, "--params", "params.yaml", *graph, *pin, *(word for arg in args for word in arg.split(" ")),
            "--no-progress"]
    if cfg.container is not None:  # the stage in ferd's image, the project mounted (ferd.core.image)
        return container_command(cfg.container.engine, cfg.container.image, argv)
    return " ".join(["ferd", *argv])


def stage_digests(cfg: FerdConfig, out: str = OUT) -> dict[str, str]:
    """What the parameters make of each stage's entry in the pipeline files, by task id, as 16 hex digits: its
    command, inputs, parameters and outputs (the final stage's with the paths of the plots and the artifact that
    show its outputs; not their titles or labels), without what depends on where ferd is installed (code deps,
    version pin) and without the digest. A parameter changes the digests of the entries it shapes only
    (``rounds``: the stages that read the last round; ``method``: those whose ``params`` it lists;
    ``teacher.source``, ``data_root``: the stages that read them; ``evaluation.attacks``: the final one;
    ``container``: all), so regenerating the files reruns those alone. Each command carries its stage's digest
    and ``ferd stage`` compares it with its parameters' own (:func:`stage_digest`), so a graph left stale by
    ``dvc exp run -S`` never runs a stage it would change (``data_root`` and ``container``, in no fingerprint, are
    in the ``params`` of the stages they shape, so that DVC runs them and the check sees the change)."""
    final = final_task(cfg.num_rounds).id
    shown = sorted(_paths([_plots(cfg, out), _artifacts(cfg, out)], f"{out}/"))
    return {task: hashlib.sha256(json.dumps({"stage": entry, **({"shows": shown} if task == final else {})},
                                            sort_keys=True).encode()).hexdigest()[:16]
            for task, entry in dvc_stages(cfg, out, graph=False).items()}


def _paths(node: Any, prefix: str) -> set[str]:
    """Every string under ``prefix`` in ``node`` (nested lists and dicts, keys included)."""
    if isinstance(node, str):
        return {node} if node.startswith(prefix) else set()
    items = [*node.keys(), *node.values()] if isinstance(node, dict) else node if isinstance(node, list) else []
    return set().union(*(_paths(i, prefix) for i in items))


def stage_digest(cfg: FerdConfig, stage: str, round: int | None) -> str | None:
    """:func:`stage_digests`' entry for ``stage`` of ``round``; None when ``cfg``'s graph has no such task."""
    task = next((t.id for t in unroll(cfg.num_rounds) if t.stage.name == stage and t.round == round), None)
    return None if task is None else stage_digests(cfg).get(task)


def _local_path(path: str | None) -> str | None:
    """``data_root`` as a DVC dependency when it is a local path (``s3://`` data is pinned by its manifest)."""
    return None if not path or "://" in path else path


def dvc_stages(cfg: FerdConfig, out: str = OUT, root: str | Path | None = None, *, graph: bool = True
               ) -> dict[str, Any]:
    """One DVC stage per task of the unrolled graph (:func:`ferd.plan.graph.unroll`): its ``ferd stage`` command,
    the directories it reads as ``deps`` (:attr:`ferd.plan.graph.Task.reads`), its fingerprint scope as ``params``
    and its directory as ``outs`` (the evaluation's split: :func:`_evaluation_outputs`). With ``root`` (the
    ``dvc.yaml``'s directory), also the ferd code each stage runs (:func:`code_deps`, or the version pin).
    ``graph``: each command carries its stage's digest (:func:`stage_digests`)."""
    tasks = unroll(cfg.num_rounds)
    digests = stage_digests(cfg, out) if graph else {}
    pin = root is not None and cfg.container is None and not source_checkout(Path(root))
    dirs = {t.id: t.dir(out) for t in tasks}
    stages: dict[str, Any] = {}
    for t in tasks:
        args = [f"--round {t.round}"] if t.round is not None else []
        args += [f"--{inp.flag} {dirs[producer]}" for inp, producer in t.inputs]
        args += [f"--live {out}/{LIVE_DIR}"] if t.stage.tracked else []
        entry: dict[str, Any] = {"cmd": _cmd(t.stage.name, cfg, *args, f"--out {dirs[t.id]}", pin_version=pin,
                                           digest=digests.get(t.id))}
        deps = [dirs[task_id] for task_id in t.reads]
        if t.stage.fetches_teacher:  # replacing the checkpoint file reruns the teacher stage
            deps += [d for d in (cfg.teacher.local_file,) if d]
        reads_data = t.stage.final or (t.stage.fetches_teacher and cfg.teacher.source.startswith("train:"))
        if reads_data:
            deps += [d for d in (_local_path(cfg.data_root),) if d]  # the test (and training) data
        if root is not None:
            deps += code_deps(t.stage.name, cfg, root)
        if deps:
            entry["deps"] = deps
        # data_root and container are in no fingerprint (where the data lies, what runs the stage) but shape the
        # entries: DVC params, so that `dvc exp run -S` of them runs the stages whose digest check then stops
        entry["params"] = [*scope_keys(t.stage.scope, cfg.method), *(["data_root"] if reads_data else []),
                           "container"]
        stages[t.id] = {**entry, **(_evaluation_outputs(cfg, dirs[t.id], f"{out}/{LIVE_DIR}") if t.stage.final
                                    else {"outs": [dirs[t.id]]})}
    return stages


def _evaluation_outputs(cfg: FerdConfig, ev: str, live: str) -> dict[str, Any]:
    """The evaluation directory's entries (:mod:`ferd.stages.evaluation`) as DVC outputs: ``metrics.json``
    and ``plots/`` outside the cache (``cache: false``: committed to git with the experiment, shown by
    ``dvc metrics``/``dvc plots`` from any commit), the rest cached. DVC refuses overlapping outputs, so
    the directory itself is not one; ``eval-aa/`` exists when AutoAttack runs on its own subset
    (:func:`ferd.evaluation.quick.quick_evaluation`). ``live``: the DVCLive directory, whose curves the
    synthesis and distillation stages update while they run and the evaluation rewrites whole from the run's
    history: its ``metrics.json`` (the last epoch's, for ``dvc exp show``) and ``plots/`` outside the cache."""
    cached = [REPORT_DIR, *([AA_REPORT_DIR] if cfg.evaluation.aa_on_own_subset else []), HISTORY_FILE,
              CLASS_WEIGHTS_FILE, MANIFEST]
    return {"outs": [*(f"{ev}/{name}" for name in cached), {f"{ev}/{PLOTS_DIR}": {"cache": False}},
                     {f"{live}/{LIVE_PLOTS}": {"cache": False}}],
            "metrics": [{f"{ev}/{METRICS_FILE}": {"cache": False}}, {f"{live}/{LIVE_METRICS}": {"cache": False}}]}


def round_file(r: int) -> str:
    """The pipeline file of round ``r``, relative to the project root."""
    return f"{ROUNDS_DIR}/round-{r:02d}/{ROOT_FILE}"


def dvc_files(cfg: FerdConfig, out: str = OUT, root: str | Path = ".") -> dict[str, dict[str, Any]]:
    """The project's pipeline files, relative path → document: ``dvc.yaml`` (in ``root``) with the stages
    outside any round, the plots and the student as a DVC model artifact; :func:`round_file` of each round
    with that round's stages."""
    files: dict[str, dict[str, Any]] = {ROOT_FILE: {"stages": {}, "plots": _plots(cfg, out),
                                                    "artifacts": _artifacts(cfg, out)}}
    stages = dvc_stages(cfg, out, root)
    for t in unroll(cfg.num_rounds):
        if t.round is None:
            files[ROOT_FILE]["stages"][t.id] = stages[t.id]
        else:
            cmd, *rest = stages[t.id].items()
            files.setdefault(round_file(t.round), {"stages": {}})["stages"][t.id] = dict([cmd, ("wdir", "../.."),
                                                                                           *rest])
    return files


def _artifacts(cfg: FerdConfig, out: str) -> dict[str, Any]:
    """The final student in DVC's model registry (``dvc artifacts get``, DVC Studio)."""
    tasks = {t.id: t for t in unroll(cfg.num_rounds)}
    student = next(producer for inp, producer in final_task(cfg.num_rounds).inputs if inp.flag == "student")
    return {"student": {"path": f"{tasks[student].dir(out)}/{STUDENT_FILE}",
                        "type": "model",
                        "desc": f"{cfg.student.arch} student distilled by {cfg.method} from a {cfg.teacher.arch} "
                                f"teacher on {cfg.dataset}, {cfg.num_rounds} rounds",
                        "labels": [cfg.dataset, cfg.method, cfg.student.arch]}}


def _plots(cfg: FerdConfig, out: str) -> list[Any]:
    ev = final_task(cfg.num_rounds).dir(out)
    plots: list[Any] = []
    for attack in cfg.evaluation.attacks:
        plots.append({f"{ev}/{PLOTS_DIR}/per_class_{attack}.csv": {
            "template": "bar_horizontal", "x": "student", "y": "class",
            "title": f"Student per-class accuracy (%), {attack}"}})
        if attack != "clean":
            plots.append({f"{ev}/{PLOTS_DIR}/predictions_student_{attack}.csv": {
                "template": "confusion", "x": "actual", "y": "predicted",
                "title": f"Student predictions under {attack}: true (x) vs predicted (y)"}})
    classes = list(_class_names(cfg))
    plots.append({"class-weights": {"template": "linear", "x": "epoch",
                                    "y": {f"{ev}/{PLOTS_DIR}/class_weights.csv": classes},
                                    "title": "Class weights p (Eq. 1-2) per epoch", "y_label": "p"}})
    # every DVCLive curve, per epoch (ferd.core.tracking)
    plots.append({f"{out}/{LIVE_DIR}/{LIVE_PLOTS}/metrics": {"x": "step"}})
    plots += [f"{t.dir(out)}/{SAMPLES_FILE}" for t in unroll(cfg.num_rounds) if t.stage.name == "synthesis"]
    return plots


def _class_names(cfg: FerdConfig) -> tuple[str, ...]:
    from ..data import dataset_info

    return tuple(dataset_info(cfg.dataset).class_names)


class _Dumper(yaml.SafeDumper):
    """Lists of scalars in flow style (``params: [seed, dataset, …]``), the rest in block style."""


def _list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(v, (str, int, float)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _list)


def render(cfg: FerdConfig, out: str = OUT, root: str | Path = ".") -> dict[str, str]:
    """Each pipeline file's text, by path relative to the project root ``root``."""
    n = cfg.num_rounds
    heads = {ROOT_FILE: HEADER, **{round_file(r): ROUND_HEADER.format(r=r, n=n, last=n - 1) for r in range(n)}}
    return {path: heads[path] + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=120)
            for path, doc in dvc_files(cfg, out, root).items()}


def _texts_at(cfg: FerdConfig, path: str | Path) -> dict[Path, str]:
    """:func:`render` placed on disk: ``path`` is the root file, the rounds' files go beside it."""
    root = Path(path).parent
    return {Path(path) if rel == ROOT_FILE else root / rel: text for rel, text in render(cfg, root=root).items()}


def stale_files(root: str | Path, cfg: FerdConfig) -> list[Path]:
    """Round files under ``root`` that ``cfg``'s graph does not have (a larger ``rounds`` before)."""
    want = {Path(root) / p for p in render(cfg, root=root)}
    return sorted(p for p in (Path(root) / ROUNDS_DIR).glob(f"round-*/{ROOT_FILE}") if p not in want)


def mismatches(cfg: FerdConfig, path: str | Path = ROOT_FILE) -> list[str]:
    """The pipeline files (beside ``path``, the root file) that differ from ``cfg``'s: missing, changed or
    stale; empty when they match."""
    bad = [str(f) for f, text in _texts_at(cfg, path).items() if not f.is_file() or f.read_text() != text]
    return bad + [str(p) for p in stale_files(Path(path).parent, cfg)]


def pipeline_files(cfg: FerdConfig, path: str | Path = ROOT_FILE) -> dict[Path, str]:
    """The pipeline files :func:`write_dvc_yaml` writes and their text, once every folder they go in is known to be
    one or makeable (NotADirectoryError naming the file in the way): checked before anything is written."""
    texts = _texts_at(cfg, path)
    for f in texts:
        for folder in (f.parent, *f.parent.parents):
            if folder.exists() and not folder.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a folder, where the pipeline files go", str(folder))
    return texts


def write_dvc_yaml(cfg: FerdConfig, path: str | Path = ROOT_FILE) -> list[Path]:
    """Write the pipeline files (``path`` the root file; the rounds' beside it) and remove the files, and
    their ``dvc.lock``, of rounds the graph no longer has. Returns the files written."""
    from ..core.checkpoint import atomic_write_bytes

    root = Path(path).parent
    texts = pipeline_files(cfg, path)
    for stale in stale_files(root, cfg):
        for f in (stale, stale.with_name("dvc.lock")):
            f.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            stale.parent.rmdir()
    written = []
    for f, text in texts.items():
        f.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(f, text.encode())
        written.append(f)
    return written
