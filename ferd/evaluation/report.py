"""Write an :class:`~ferd.evaluation.runner.EvaluationResult` to disk: metrics, tables, figures, report.

:func:`write_evaluation` writes into ``out_dir``:

- ``metrics.json``: the flat ``{"<model>.<attack>.<stat>": value}`` dict of
  :func:`~ferd.evaluation.runner.flat_metrics` (accuracies as fractions, NaN as
  ``null``), readable by ``dvc metrics show``.
- ``per_class.csv`` / ``per_class.json``: one row per (model, attack, class) with
  the class-wise accuracy and the number of examples, for ``dvc plots``.
- ``confusion_<model>_<attack>.csv``: counts, true classes in rows, predictions in
  columns (FERD Fig. 2 / Fig. 9).
- ``attack_targets.csv``: where successful attacks land, per (model, attack,
  target class): share and count (on examples the model gets right when clean).
- ``settings.json``: attack settings, environment, class counts, timings.
- ``predictions.npz``: labels and per-sample predictions of every (model, attack).
- ``per_class.png`` (all attacks), ``per_class_<attack>.png``,
  ``confusion_<model>_<attack>.png``: figures of :mod:`ferd.evaluation.plots`.
- ``losses.png`` (with a history): the loss curves per epoch (:mod:`ferd.evaluation.loss_curves`).
- ``report.md``: Table-1-style summary (Avg / Worst / NSD per attack per model,
  plus Worst-10 % when it averages more than one class), per-class table, the
  figures, the exact attack settings and the number of examples; with ``samples``, each round's grid of
  kept synthetic images (section "Synthetic images").

Every file is written atomically (temporary file in ``out_dir``, then ``os.replace``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.checkpoint import atomic_write_bytes, json_safe
from ..synthesis.diversity import FIGURES, synthesis_rows
from . import metrics, plots
from .loss_curves import loss_series
from ..synthesis.samples import MAX_ROWS, PER_CLASS
from ..attacks import ATTACKS, attack_label
from .runner import (REFERENCE, EvaluationResult, class_name_list, flat_metrics, per_class_table,
                     retention)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) atomically: temporary file next to ``path``, fsync, ``os.replace``."""
    atomic_write_bytes(path, text.encode("utf-8"))
    return Path(path)


def _json(value: Any) -> str:
    return json.dumps(json_safe(value), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def _csv(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _pct(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:.2f}"


def _nsd(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"{v:.3f}"


def summary_table(result: EvaluationResult) -> str:
    """Markdown table in the layout of FERD Tab. 1: per model a row, per attack Avg / Worst / NSD (%)."""
    with_k = metrics.worst_k_count(result.num_classes) > 1
    sub = ["Avg", "Worst", "Worst-10%", "NSD"] if with_k else ["Avg", "Worst", "NSD"]
    head = "| Model | " + " | ".join(f"{attack_label(a)} {s}" for a in result.attacks for s in sub) + " |"
    sep = "|---|" + "---:|" * (len(sub) * len(result.attacks))
    lines = [head, sep]
    for model in result.models:
        cells = []
        for attack in result.attacks:
            st = result.stats(model, attack)
            cells += [_pct(st["avg"]), _pct(st["worst"])] + ([_pct(st["worst10"])] if with_k else [])
            cells.append(_nsd(st["nsd"]))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _per_class_md(result: EvaluationResult, names: list[str]) -> str:
    lines = ["| model | attack | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
    for model in result.models:
        for attack in result.attacks:
            acc = result.class_accuracy(model, attack)
            lines.append(f"| {model} | {attack_label(attack)} | "
                         + " | ".join(_pct(a) for a in acc) + " |")
    return "\n".join(lines)


def _settings_md(result: EvaluationResult) -> str:
    s = result.settings
    eps = s["eps"]
    counts = result.class_counts()
    per_class = (f"class counts {', '.join(map(str, counts))}" if result.num_classes <= plots.BAR_LIMIT
                 else f"{int((counts > 0).sum())} classes present, {counts.min()}-{counts.max()} per class")
    lines = [
        f"- Examples: {result.n_examples} ({per_class}); seed {s['seed']}; batch size {s['batch_size']}; "
        f"device `{s['device']}`; {s['dtype']}; torch {s['torch']}.",
        f"- Threat model: L∞, ε = {eps:.6g} ({eps * 255:g}/255), inputs in [0, 1], models in eval() mode.",
    ]
    for attack in result.attacks:
        if attack in s and attack in ATTACKS and (line := ATTACKS[attack].describe(s[attack], eps)):
            lines.append(line)
    lines.append("- Worst = lowest class accuracy; Worst-10% = mean of the ⌈0.1·C⌉ lowest "
                 f"(here {metrics.worst_k_count(result.num_classes)}); NSD = population std (ddof = 0) ÷ mean "
                 "of the class accuracies.")
    return "\n".join(lines)


def _targets_md(result: EvaluationResult) -> str:
    attacks = [a for a in result.attacks if a != "clean"]
    if not attacks:
        return ""
    lines = ["| model | " + " | ".join(attack_label(a) for a in attacks) + " |",
             "|---|" + "---:|" * len(attacks)]
    for model in result.models:
        lines.append(f"| {model} | " + " | ".join(
            _nsd(metrics.target_entropy(result.target_distribution(model, a))) for a in attacks) + " |")
    return "\n".join(lines)


def _retention_md(result: EvaluationResult, names: list[str]) -> str:
    """Per model (not the teacher) and attack: avg retention and the per-class ratios, student ÷ teacher."""
    per_class = result.num_classes <= plots.BAR_LIMIT
    lines = ["| model | attack | Avg | Worst class | " + (" | ".join(names) + " |" if per_class else ""),
             "|---|---|---:|---:|" + ("---:|" * len(names) if per_class else "")]
    for model in result.models:
        if model == REFERENCE:
            continue
        for attack in result.attacks:
            avg, ratio = retention(result, model, attack)
            worst = "–" if np.all(np.isnan(ratio)) else f"{np.nanmin(ratio):.2f} ({names[int(np.nanargmin(ratio))]})"
            cells = [f"{avg:.2f}" if not math.isnan(avg) else "–", worst]
            if per_class:
                cells += ["–" if math.isnan(r) else f"{r:.2f}" for r in ratio]
            lines.append(f"| {model} | {attack_label(attack)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _synthesis_md(rows: list[dict]) -> str:
    lines = ["| epoch | round | " + " | ".join(k.replace("_", " ") for k in FIGURES) + " |",
             "|---:|---:|" + "---:|" * len(FIGURES)]
    for r in rows:
        lines.append(f"| {r['epoch']} | {r['round']} | "
                     + " | ".join("–" if r[k] is None else f"{r[k]:.3f}" for k in FIGURES) + " |")
    return "\n".join(lines)


def _confusion_csv(cm: np.ndarray, names: list[str]) -> str:
    return _csv(["true\\predicted"] + names, [[names[i]] + [int(v) for v in cm[i]] for i in range(len(names))])


def write_evaluation(result: EvaluationResult, out_dir: str | os.PathLike[str],
                     class_names: list[str] | tuple[str, ...] | None = None,
                     title: str = "Robustness and robust fairness", history: list[dict] | None = None,
                     samples: Sequence[tuple[int, str]] = ()) -> dict[str, Path]:
    """Write metrics, tables, figures and ``report.md`` for ``result`` into ``out_dir`` (see module doc).

    Returns ``{file name: path}`` of everything written. ``class_names`` (length C)
    label tables and figures; class indices when None. ``history`` (a run's ``history.json``) adds
    the synthesis figures per generation epoch (:func:`ferd.synthesis.diversity.synthesis_rows`) and the loss
    curves (:func:`ferd.evaluation.loss_curves.loss_series`, ``losses.png``). ``samples``: ``(round, link)`` of each
    round's grid of kept synthetic images (:mod:`ferd.synthesis.samples`), the link relative to ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = class_name_list(result.num_classes, class_names)
    written: dict[str, Path] = {}

    def put(name: str, text: str) -> None:
        written[name] = atomic_write_text(out / name, text)

    put("metrics.json", _json(flat_metrics(result)))
    rows = per_class_table(result, names)
    cols = ["model", "attack", "class_index", "class_name", "accuracy", "n"]
    put("per_class.csv", _csv(cols, [["" if r[c] is None else r[c] for c in cols] for r in rows]))
    put("per_class.json", _json(rows))
    target_rows = []
    for model in result.models:
        for attack in result.attacks:
            cm = result.confusion(model, attack)
            put(f"confusion_{model}_{attack}.csv", _confusion_csv(cm, names))
            if attack == "clean":
                continue
            dist = result.target_distribution(model, attack)
            clean = result.correct.get((model, "clean"))
            success = (result.predictions[(model, attack)] != result.y)
            if clean is not None:
                success &= clean
            counts = np.bincount(result.predictions[(model, attack)][success], minlength=result.num_classes)
            target_rows += [[model, attack, j, names[j], "" if np.isnan(dist[j]) else float(dist[j]), int(counts[j])]
                            for j in range(result.num_classes)]
    if target_rows:
        put("attack_targets.csv", _csv(["model", "attack", "target_index", "target_name", "fraction", "count"],
                                       target_rows))
    put("settings.json", _json({**result.settings, "class_names": names,
                                "class_counts": result.class_counts().tolist(),
                                "seconds": {f"{m}.{a}": t for (m, a), t in result.seconds.items()}}))
    buf = io.BytesIO()
    np.savez_compressed(buf, y=result.y, **{f"pred__{m}__{a}": p for (m, a), p in result.predictions.items()})
    atomic_write_bytes(out / "predictions.npz", buf.getvalue())
    written["predictions.npz"] = out / "predictions.npz"

    figures: list[tuple[str, str]] = []
    written["per_class.png"] = plots.plot_per_class_grid(result, out / "per_class.png", names)
    figures.append(("Per-class accuracy, all attacks", "per_class.png"))
    for attack in result.attacks:
        fname = f"per_class_{attack}.png"
        written[fname] = plots.plot_per_class(result, attack, out / fname, names)
    for model in result.models:
        for attack in result.attacks:
            fname = f"confusion_{model}_{attack}.png"
            acc = 100 * float(result.correct[(model, attack)].mean())
            written[fname] = plots.plot_confusion(
                result.confusion(model, attack), out / fname,
                f"{model}, {attack_label(attack)}: accuracy {acc:.1f}%", names)
            figures.append((f"Confusion matrix, {model}, {attack_label(attack)}", fname))

    parts = [f"# {title}", "",
             f"{result.n_examples} examples, {result.num_classes} classes; models: {', '.join(result.models)}. "
             "Accuracies in %, NSD unitless (lower is fairer).", "",
             "## Summary (FERD Table 1 layout)", "", summary_table(result), "",
             "## Attack settings", "", _settings_md(result), ""]
    if result.num_classes <= plots.BAR_LIMIT:
        parts += ["## Per-class accuracy (%)", "", _per_class_md(result, names), ""]
    if REFERENCE in result.models and len(result.models) > 1:
        parts += ["## Retention (model ÷ teacher)", "",
                  "The share of the teacher's accuracy each model kept, on average and per class: where "
                  "distillation lost robustness (1 = as accurate as the teacher; – where the teacher scores 0).",
                  "", _retention_md(result, names), ""]
        written["retention.png"] = plots.plot_retention(result, out / "retention.png", names)
        figures.insert(1, ("Retention per class (model ÷ teacher)", "retention.png"))
    rows = synthesis_rows(history) if history else []
    if rows:
        parts += ["## Synthesis: diversity, teacher confidence, FAE mask", "",
                  "Per generation epoch, on the kept batch: the share of its pixel variance within labels (0: one "
                  "image per label, a collapsed generator), the teacher's mean confidence in the label and its "
                  "accuracy, and the share of channels Eq. 4-6 mark non-robust on it (– with `synthesis.fae` off).", "",
                  _synthesis_md(rows), ""]
        written["synthesis.png"] = plots.plot_synthesis(rows, out / "synthesis.png")
        figures.append(("Synthesis per epoch", "synthesis.png"))
    series = loss_series(history) if history else {}
    if series:
        written["losses.png"] = plots.plot_losses(series, out / "losses.png")
        figures.append(("Loss curves", "losses.png"))
    if samples:
        parts += ["## Synthetic images", "",
                  f"The FAEs each round kept: {_grid_rows(result.num_classes)}, up to {PER_CLASS} images each "
                  "(the first of that class in the round's shard), pixels as generated.", ""]
        parts += [line for r, link in samples for line in (f"### Round {r}", "", f"![Round {r}]({link})", "")]
    targets = _targets_md(result)
    if targets:
        parts += ["## Attack targets", "",
                  "Normalised entropy of the predicted classes of successful attacks on examples the model "
                  "classifies correctly when clean (1 = targets spread uniformly over the classes, 0 = all "
                  "into one class; FERD §3.2, A.10). Shares per class in `attack_targets.csv`.", "", targets, ""]
    timing = ", ".join(f"{m}/{a} {t:.2f} s" for (m, a), t in result.seconds.items())
    if timing:
        parts += ["## Timing", "", timing, ""]
    parts += ["## Figures", ""]
    for caption, fname in figures:
        parts += [f"### {caption}", "", f"![{caption}]({fname})", ""]
    put("report.md", "\n".join(parts))
    return written


__all__ = ["write_evaluation", "summary_table", "atomic_write_text"]


def _grid_rows(num_classes: int) -> str:
    """What a round grid's rows are (:func:`ferd.synthesis.samples.shown_classes`)."""
    if num_classes <= MAX_ROWS:
        return "one row per class"
    return f"one row for each of {MAX_ROWS} classes spread evenly over the {num_classes}"
