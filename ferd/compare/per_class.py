"""The comparison per class: which classes an arm moves, and the class weights p behind it.

For one attack (PGD-20 where it ran), every arm minus the reference in each class's accuracy, paired by seed with
the report's 95 % t interval (:func:`ferd.compare.stats.paired_interval`: n − 1 degrees of freedom), beside the
teacher's accuracy in that class and each reweighting arm's **pool share**: the mean over its generation epochs of
the class weights p that drew the labels (``p_generation`` of ``history.json``, Eq. 1-2), i.e. the share of the
synthetic pool the class received (1/C when p stays uniform). It answers whether reweighting sends samples to the
teacher's weakest classes and whether those classes then gain.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..core.numbers import is_finite_number
from .stats import paired_interval

PerSeed = dict[int, np.ndarray]  # seed → per-class accuracies of one (method, student, attack)


def pool_share(history_path: Path, num_classes: int) -> np.ndarray | None:
    """The mean of ``p_generation`` over a run's generation epochs (its ``history.json``, read as untrusted);
    None when the file is absent or holds no such records."""
    try:
        history = json.loads(history_path.read_bytes())
    except (OSError, ValueError):
        return None
    rows = [h.get("p_generation") for h in history if isinstance(h, dict)] if isinstance(history, list) else []
    rows = [r for r in rows if isinstance(r, list) and len(r) == num_classes
            and all(is_finite_number(v) for v in r)]
    return np.mean(np.array(rows, dtype=float), axis=0) if rows else None


def class_deltas(arm: PerSeed, reference: PerSeed) -> list[tuple[float, float, float]]:
    """Per class: the paired difference arm − reference over the seeds both ran, (mean, low, high)."""
    seeds = sorted(set(arm) & set(reference))
    if not seeds:
        return []
    a, r = np.stack([arm[s] for s in seeds]), np.stack([reference[s] for s in seeds])
    return [paired_interval(list(a[:, c]), list(r[:, c]), span=1.0) for c in range(a.shape[1])]


def _cell(mean: float, low: float, high: float) -> str:
    return f"{100 * mean:+.1f}" + ("" if math.isnan(low) else f" [{100 * low:+.1f}, {100 * high:+.1f}]")


def per_class_section(reference: str, student: str, attack: str, names: list[str], accuracies: dict[str, PerSeed],
                      shares: dict[str, np.ndarray], teacher: list[float] | None,
                      deltas: dict[str, list[tuple[float, float, float]]] | None = None) -> list[str]:
    """The Markdown section of one student: a row per class (ordered by the teacher's accuracy, weakest first),
    the teacher's and the reference's accuracy, each reweighting arm's pool share, and each other arm minus the
    reference with its interval (points); ``deltas``: those differences (:func:`class_deltas`) when the caller
    has them already."""
    ref = accuracies.get(reference)
    if not ref:
        return []
    others = [m for m in accuracies if m != reference and set(accuracies[m]) & set(ref)]
    deltas = {m: deltas[m] if deltas is not None and m in deltas else class_deltas(accuracies[m], ref)
              for m in others}
    ref_mean = np.mean(np.stack(list(ref.values())), axis=0)
    order = sorted(range(len(names)), key=lambda c: (teacher[c] if teacher else ref_mean[c], c))
    seeds = {m: len(set(accuracies[m]) & set(ref)) for m in others}
    head = (["class"] + (["teacher"] if teacher else []) + [f"`{reference}`"]
            + [f"pool share `{m}`" for m in shares]
            + [f"`{m}` − `{reference}` ({seeds[m]} seed{'s' if seeds[m] > 1 else ''})" for m in others])
    lines = [f"## Per class under {attack}, `{student}`: each arm minus `{reference}` (paired by seed, 95 % t "
             "interval, points)", "",
             f"Classes from the weakest ({'the teacher' if teacher else f'`{reference}`'}'s accuracy). Accuracies "
             "in % (mean over seeds); pool share: the mean class "
             f"weight p that drew the synthetic labels (Eq. 1-2; uniform is {100 / len(names):.1f} %).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in order:
        cells = [names[c]] + ([f"{100 * teacher[c]:.1f}"] if teacher else []) + [f"{100 * ref_mean[c]:.1f}"]
        cells += [f"{100 * share[c]:.1f}" for share in shares.values()]
        cells += [_cell(*deltas[m][c]) for m in others]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]
