"""Figures of the evaluation report, drawn with Matplotlib's Agg canvas (no pyplot, no display).

- :func:`plot_per_class`: class-wise accuracy of every model under one attack,
  teacher against student(s), in the manner of FERD Fig. 1 (per-class accuracy of
  teacher and students under benign and adversarial examples) and Fig. 4 (per-class
  robustness with and without reweighting). Grouped bars up to 20 classes, lines
  beyond (CIFAR-100, Tiny-ImageNet).
- :func:`plot_per_class_grid`: the same for every attack, one panel each.
- :func:`plot_confusion`: confusion matrix of (adversarial) predictions, true
  labels on the vertical axis and predictions on the horizontal one, as FERD
  Fig. 2 and Fig. 9; cells are row percentages (share of the true class).

Every function writes its PNG atomically (temporary file in the same folder, then
``os.replace``) and returns the path.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..core.checkpoint import atomic_path
from ..synthesis.diversity import FIGURES
from ..attacks import attack_label
from .runner import REFERENCE, EvaluationResult, class_name_list, retention

BAR_LIMIT = 20
"""Up to this many classes the per-class plot uses grouped bars with class names; lines beyond."""
ANNOTATE_LIMIT = 12
"""Up to this many classes the confusion heatmap prints the percentage in each cell."""
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Render ``fig`` to PNG at ``path`` atomically (:func:`ferd.core.checkpoint.atomic_path`)."""
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    return Path(path)


def _per_class_axes(ax: Axes, result: EvaluationResult, attack: str, names: list[str], legend: bool) -> None:
    c = result.num_classes
    pos = np.arange(c)
    n_models = len(result.models)
    for i, model in enumerate(result.models):
        acc = 100 * result.class_accuracy(model, attack)
        avg = 100 * float(result.correct[(model, attack)].mean())
        label = f"{model} (avg {avg:.1f}%)"
        color = COLORS[i % len(COLORS)]
        if c <= BAR_LIMIT:
            width = 0.8 / n_models
            ax.bar(pos - 0.4 + width * (i + 0.5), np.nan_to_num(acc), width, label=label, color=color,
                   edgecolor="white", linewidth=0.5)
        else:
            ax.plot(pos, acc, marker="o", markersize=2.5, linewidth=1.0, label=label, color=color)
    if c <= BAR_LIMIT:
        ax.set_xticks(pos, names, rotation=45 if max(len(n) for n in names) > 3 else 0,
                      ha="right" if max(len(n) for n in names) > 3 else "center")
    else:
        step = 10 if c > 50 else 5
        ax.set_xticks(pos[::step])
        ax.set_xlabel("class index")
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    avgs = ", ".join(f"{m} {100 * float(result.correct[(m, attack)].mean()):.1f}" for m in result.models)
    ax.set_title(f"{attack_label(attack)} (avg %: {avgs})", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if legend:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _subtitle(result: EvaluationResult) -> str:
    eps = result.settings.get("eps", float("nan")) * 255
    return f"L∞ ε = {eps:g}/255, {result.n_examples} examples"


def plot_per_class(result: EvaluationResult, attack: str, path: str | os.PathLike[str],
                   class_names: list[str] | tuple[str, ...] | None = None) -> Path:
    """Class-wise accuracy of each model under ``attack`` (FERD Fig. 1 / Fig. 4 style)."""
    if attack not in result.attacks:
        raise ValueError(f"attack: {attack!r} was not evaluated; expected one of {result.attacks}")
    names = class_name_list(result.num_classes, class_names)
    fig = Figure(figsize=(max(6.0, 0.55 * min(result.num_classes, BAR_LIMIT) + 2), 3.8))
    ax = fig.add_subplot()
    _per_class_axes(ax, result, attack, names, legend=True)
    ax.set_title(f"Per-class accuracy, {attack_label(attack)} ({_subtitle(result)})")
    return save_figure(fig, path)


def plot_per_class_grid(result: EvaluationResult, path: str | os.PathLike[str],
                        class_names: list[str] | tuple[str, ...] | None = None) -> Path:
    """One :func:`plot_per_class` panel per attack, in a grid of up to 3 columns."""
    names = class_name_list(result.num_classes, class_names)
    n = len(result.attacks)
    cols = 2 if n in (2, 4) else min(3, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows + 0.6), layout="constrained")
    for k, attack in enumerate(result.attacks):
        _per_class_axes(fig.add_subplot(rows, cols, k + 1), result, attack, names, legend=False)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, [lab.split(" (")[0] for lab in labels], loc="outside lower center",
               ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle(f"Per-class accuracy ({_subtitle(result)})")
    return save_figure(fig, path)


def plot_confusion(cm: np.ndarray, path: str | os.PathLike[str], title: str,
                   class_names: list[str] | tuple[str, ...] | None = None) -> Path:
    """Heatmap of a confusion matrix (rows true, columns predicted), cells as row percentages.

    Rows with no example are left blank. Percentages are printed in the cells up
    to :data:`ANNOTATE_LIMIT` classes (FERD Fig. 2 / Fig. 9 orientation).
    """
    cm = np.asarray(cm, dtype=np.float64)
    c = cm.shape[0]
    names = class_name_list(c, class_names)
    totals = cm.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(totals > 0, 100 * cm / np.maximum(totals, 1), np.nan)
    side = 5.0 if c <= ANNOTATE_LIMIT else 7.0
    fig = Figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="share of true class (%)")
    if c <= BAR_LIMIT:
        ax.set_xticks(range(c), names, rotation=45 if max(len(n) for n in names) > 3 else 0,
                      ha="right" if max(len(n) for n in names) > 3 else "center", fontsize=8)
        ax.set_yticks(range(c), names, fontsize=8)
    if c <= ANNOTATE_LIMIT:
        for i in range(c):
            for j in range(c):
                if not np.isnan(pct[i, j]) and cm[i, j] > 0:
                    ax.text(j, i, f"{pct[i, j]:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if pct[i, j] > 55 else "black")
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def plot_retention(result: EvaluationResult, path: str | os.PathLike[str],
                   class_names: list[str] | tuple[str, ...] | None = None) -> Path:
    """Per class, each model's accuracy ÷ the teacher's, one line per (model, attack): where distillation
    lost robustness. A horizontal line at 1 marks the teacher."""
    names = class_name_list(result.num_classes, class_names)
    pos = np.arange(result.num_classes)
    fig = Figure(figsize=(max(6.0, 0.55 * min(result.num_classes, BAR_LIMIT) + 2.5), 3.8), layout="constrained")
    ax = fig.add_subplot()
    k = 0
    for model in result.models:
        if model == REFERENCE:
            continue
        for attack in result.attacks:
            avg, ratio = retention(result, model, attack)
            ax.plot(pos, ratio, marker="o", markersize=3, linewidth=1.2, color=COLORS[k % len(COLORS)],
                    label=f"{model}, {attack_label(attack)} (avg {avg:.2f})")
            k += 1
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    if result.num_classes <= BAR_LIMIT:
        ax.set_xticks(pos, names, rotation=45 if max(len(n) for n in names) > 3 else 0,
                      ha="right" if max(len(n) for n in names) > 3 else "center")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("model ÷ teacher accuracy")
    ax.set_title(f"Retention per class ({_subtitle(result)})", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return save_figure(fig, path)


def plot_synthesis(rows: list[dict], path: str | os.PathLike[str]) -> Path:
    """The synthesis figures (:data:`ferd.synthesis.diversity.FIGURES`) against the generation epoch."""
    fig = Figure(figsize=(7.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    epochs = [r["epoch"] for r in rows]
    for k, key in enumerate(FIGURES):
        values = [np.nan if r.get(key) is None else r[key] for r in rows]
        if not np.all(np.isnan(values)):
            ax.plot(epochs, values, marker="o", markersize=3, color=COLORS[k], label=key.replace("_", " "))
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("generation epoch")
    ax.set_title("Synthesis: diversity within labels, teacher confidence and accuracy, FAE mask", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return save_figure(fig, path)


def plot_losses(series: dict[str, dict[str, list[tuple[int, float]]]], path: str | os.PathLike[str]) -> Path:
    """The loss curves of :func:`ferd.evaluation.loss_curves.loss_series` against the epoch, one panel per group
    (generator L_gen terms, student Eq. 11 losses); a panel whose terms differ by more than two orders of
    magnitude is drawn on a symmetric log scale (L_adv is negative)."""
    groups = list(series)
    fig = Figure(figsize=(5.2 * max(1, len(groups)), 3.6), layout="constrained")
    for g, group in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), g + 1)
        for k, (term, points) in enumerate(series[group].items()):
            epochs, values = zip(*points)
            ax.plot(epochs, values, marker="o", markersize=3, color=COLORS[k % len(COLORS)], label=term)
        sizes = [abs(v) for points in series[group].values() for _, v in points if np.isfinite(v) and v != 0]
        if sizes and max(sizes) > 100 * min(sizes):
            ax.set_yscale("symlog", linthresh=10.0 ** np.floor(np.log10(min(sizes))))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title({"generator": "Generator: L_gen terms (kept iteration)",
                      "student": "Student: distillation losses (Eq. 11)"}.get(group, group), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    return save_figure(fig, path)
