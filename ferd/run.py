"""``ferd run``: teacher (load or train) → Algorithm 1 → quick evaluation, in one process.

Layout of ``--out DIR`` (every file written atomically):

=====================  ===================================================================
``params.json``        the resolved, validated parameters
``teacher/``           ``teacher.safetensors`` and ``model_card.json``
``state.pt``           the resumable checkpoint after the last finished round
``pool/``              the FAE pool, Parquet partitioned by round
``student.safetensors``  the distilled student (metadata: arch, num_classes)
``class_weights.json`` p (and the scores behind it) after every generation epoch
``history.json``       per-epoch losses and diagnostics
``metrics.json``       flat ``<model>.<attack>.<statistic>`` keys, accuracies in [0, 1]
``eval/``              per-class tables, figures and ``report.md``
=====================  ===================================================================

Re-running the same command resumes from ``state.pt`` (a finished run re-evaluates only).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from .algorithm import run_algorithm1
from .checkpoint import atomic_write_json, save_state_dict
from .compute import set_memory_format
from .config import FerdConfig
from .teacher_source import obtain_teacher

log = logging.getLogger(__name__)


def quick_evaluation(cfg: FerdConfig, models: dict[str, torch.nn.Module], out_dir: Path,
                     progress: bool = True, plots_dir: Path | None = None, history: list[dict] | None = None
                     ) -> dict[str, float]:
    """Per-class evaluation of the models on the dataset's test split (``cfg.evaluation``);
    with ``plots_dir``, also the DVC plot data (:mod:`ferd.evaluation.dvc_plots`); with the run's
    ``history``, its synthesis figures (diversity, teacher confidence, FAE mask) in the report and as
    ``synthesis.*`` metrics (:mod:`ferd.synthesis.diversity`). With
    ``evaluation.aa_examples`` smaller than the examples evaluated, AutoAttack runs on its own
    stratified subset (same seed) into ``<out_dir>-aa`` and its metrics join the others."""
    e = cfg.evaluation
    attacks = list(e.attacks)
    separate_aa = "aa" in attacks and e.aa_examples is not None and (e.n_examples is None
                                                                     or e.aa_examples < e.n_examples)
    metrics = _evaluate(cfg, models, out_dir, [a for a in attacks if not (separate_aa and a == "aa")],
                        e.n_examples, progress, plots_dir, history)
    if separate_aa:
        aa_dir = out_dir.with_name(out_dir.name + "-aa")
        metrics.update(_evaluate(cfg, models, aa_dir, ["aa"], e.aa_examples, progress, None))
    if history is not None:
        from .synthesis.diversity import synthesis_metrics

        metrics.update(synthesis_metrics(history))
    return metrics


def _evaluate(cfg: FerdConfig, models: dict[str, torch.nn.Module], out_dir: Path, attacks: list[str],
              n_examples: int | None, progress: bool, plots_dir: Path | None,
              history: list[dict] | None = None) -> dict[str, float]:
    from .data import dataset_info, load_split
    from .evaluation import evaluate_models, flat_metrics, write_evaluation
    from .evaluation.runner import stratified_subset

    x, y = load_split(cfg.dataset, "test", root=cfg.data_root)
    info = dataset_info(cfg.dataset)
    e = cfg.evaluation
    if n_examples is not None and n_examples < len(y):
        idx = torch.from_numpy(stratified_subset(y, n_examples, seed=cfg.seed))
        x, y = x[idx], y[idx]
    result = evaluate_models(models, x, y, num_classes=info.num_classes, attacks=tuple(attacks),
                             eps=cfg.threat.eps, step=cfg.threat.step, batch_size=e.batch_size, seed=cfg.seed,
                             device=cfg.device, progress=progress)
    write_evaluation(result, out_dir, list(info.class_names), history=history)
    if plots_dir is not None:
        from .evaluation.dvc_plots import write_dvc_plots

        write_dvc_plots(result, plots_dir, list(info.class_names))
    return flat_metrics(result)


def run(cfg: FerdConfig, out_dir: str | Path, progress: bool = True, evaluate_teacher: bool = True
        ) -> dict[str, float]:
    """Run FERD end to end into ``out_dir``; returns the flat metrics (the teacher's too unless
    ``evaluate_teacher`` is false, e.g. in a comparison that evaluates its shared teacher once)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    atomic_write_json(out / "params.json", cfg.model_dump(mode="json"))
    from .data import dataset_info

    img_size = dataset_info(cfg.dataset).image_size
    teacher, card = obtain_teacher(cfg, out / "teacher", progress=progress)
    teacher.to(cfg.device)
    state = run_algorithm1(teacher, cfg, img_size, checkpoint_dir=out, progress=progress)
    student = set_memory_format(state.student.eval(), False)  # evaluation runs contiguous (ferd.compute)
    set_memory_format(teacher, False)
    save_state_dict(student.state_dict(), out / "student.safetensors",
                    metadata={"arch": cfg.student.arch, "num_classes": str(cfg.num_classes),
                              "teacher_sha256": card["sha256"]})
    atomic_write_json(out / "class_weights.json", [{"epoch": h["epoch"], "p": h["p"], "scores": h["scores"],
                                               "strategy": h["strategy"]} for h in state.history])
    atomic_write_json(out / "history.json", state.history)
    models = {"teacher": teacher, "student": student} if evaluate_teacher else {"student": student}
    metrics = quick_evaluation(cfg, models, out / "eval", progress, history=state.history)
    metrics["run.seconds"] = round(time.time() - started, 1)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics
