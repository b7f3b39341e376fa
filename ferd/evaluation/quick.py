"""The evaluation of a run's parameters: ``cfg.evaluation``'s attacks on the dataset's test split (a stratified
subset with ``n_examples``), per-class results written as the report, and the flat metrics. What ``ferd run``,
the evaluation stage and ``ferd compare``'s teacher call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..core.kill_points import kill_point
from ..core.storage import S3Settings
from ..settings.config import FerdConfig
from .resume import partial_dir


def quick_evaluation(cfg: FerdConfig, models: dict[str, torch.nn.Module], out_dir: Path,
                     progress: bool = True, plots_dir: Path | None = None, history: list[dict] | None = None,
                     samples: Sequence[tuple[int, str]] = ()) -> dict[str, float]:
    """Per-class evaluation of the models on the dataset's test split (``cfg.evaluation``);
    with ``plots_dir``, also the DVC plot data (:mod:`ferd.evaluation.dvc_plots`); with the run's
    ``history``, its synthesis figures (diversity, teacher confidence, FAE mask) in the report and as
    ``synthesis.*`` metrics (:mod:`ferd.synthesis.diversity`) and its loss curves; ``samples``: the rounds'
    grids of synthetic images to show, ``(round, link relative to out_dir)``. With
    ``evaluation.aa_examples`` smaller than the examples evaluated, AutoAttack runs on its own
    stratified subset (same seed) into ``<out_dir>-aa`` and its metrics join the others. Each finished attack is
    kept in ``<out_dir>.partial`` (:func:`~ferd.evaluation.resume.partial_dir`), so a stopped one resumes at the
    attack it was in (:mod:`ferd.evaluation.resume`); the caller removes it
    (:func:`~ferd.evaluation.resume.remove_partial`) once it has recorded the result, before any manifest."""
    e = cfg.evaluation
    attacks = list(e.attacks)
    separate_aa = e.aa_on_own_subset
    partial = partial_dir(out_dir)  # each finished attack, until the whole evaluation is written
    metrics = _evaluate(cfg, models, out_dir, [a for a in attacks if not (separate_aa and a == "aa")],
                        e.n_examples, progress, plots_dir, partial, history, samples)
    if separate_aa:
        aa_dir = out_dir.with_name(out_dir.name + "-aa")
        metrics.update(_evaluate(cfg, models, aa_dir, ["aa"], e.aa_examples, progress, None, partial))
    kill_point("evaluation.written")
    if history is not None:
        from ..synthesis.diversity import synthesis_metrics

        metrics.update(synthesis_metrics(history))
    return metrics


def _evaluate(cfg: FerdConfig, models: dict[str, torch.nn.Module], out_dir: Path, attacks: list[str],
              n_examples: int | None, progress: bool, plots_dir: Path | None, partial: Path,
              history: list[dict] | None = None, samples: Sequence[tuple[int, str]] = ()) -> dict[str, float]:
    from ..data import dataset_info, load_split
    from .report import write_evaluation
    from .runner import evaluate_models, flat_metrics, stratified_subset

    x, y = load_split(cfg.dataset, "test", root=cfg.data_root, storage=S3Settings.from_config(cfg.storage))
    info = dataset_info(cfg.dataset)
    e = cfg.evaluation
    if n_examples is not None and n_examples < len(y):
        idx = torch.from_numpy(stratified_subset(y, n_examples, seed=cfg.seed))
        x, y = x[idx], y[idx]
    result = evaluate_models(models, x, y, num_classes=info.num_classes, attacks=tuple(attacks),
                             eps=cfg.threat.eps, step=cfg.threat.step, batch_size=e.batch_size, seed=cfg.seed,
                             device=cfg.device, progress=progress, partial=partial)
    write_evaluation(result, out_dir, list(info.class_names), history=history, samples=samples)
    if plots_dir is not None:
        from .dvc_plots import write_dvc_plots

        write_dvc_plots(result, plots_dir, list(info.class_names))
    return flat_metrics(result)
