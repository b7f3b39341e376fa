"""How diverse and how teacher-typical a synthetic batch is (recorded for every synthesis round).

A conditional generator that collapses produces about one image per label: the pool then
looks like ten images, however many rows it has. :func:`within_label_share` measures that
directly — the share of the batch's total pixel variance that lies *within* labels,

    Σ_c Σ_{i: y_i = c} ‖x_i − μ_c‖² / Σ_i ‖x_i − μ‖²    (1 − the between-label share),

0 when every label has one image, near 1 when the labels' means are the same — next to the
teacher's mean confidence q_y = softmax(f^T(x))_y and accuracy on the kept batch.
"""

from __future__ import annotations

import torch


def within_label_share(images: torch.Tensor, labels: torch.Tensor) -> float:
    """Σ within-label squared deviation / Σ squared deviation from the batch mean (0 for a constant batch)."""
    x = images.detach().double().flatten(1)
    total = (x - x.mean(0)).pow(2).sum()
    if float(total) == 0.0:
        return 0.0
    within = x.new_zeros(())
    for c in labels.unique():
        xc = x[labels == c]
        within = within + (xc - xc.mean(0)).pow(2).sum()
    return float(within / total)


def batch_diversity(images: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor) -> dict[str, float]:
    """``within_label_share``, the teacher's mean confidence in the label and its accuracy on the batch."""
    prob = torch.softmax(teacher_logits.double(), dim=1)
    return {"within_label_share": within_label_share(images, labels),
            "teacher_confidence": float(prob.gather(1, labels.view(-1, 1)).mean()),
            "teacher_accuracy": float((teacher_logits.argmax(1) == labels).double().mean())}


FIGURES = ("within_label_share", "teacher_confidence", "teacher_accuracy", "nonrobust_fraction")


def synthesis_rows(history: list[dict]) -> list[dict[str, float | None]]:
    """Per generation epoch of a run's history: its round and the :data:`FIGURES` (``nonrobust_fraction``
    is the share of channels Eq. 6 marks on the kept batch; None with ``synthesis.fae`` off or for a
    baseline)."""
    rows = []
    for h in history:
        if "within_label_share" not in h:
            continue
        row = {"epoch": h["epoch"], "round": h.get("round")}
        for key in FIGURES:
            row[key] = h.get(key)
        rows.append(row)
    return rows


def synthesis_metrics(history: list[dict]) -> dict[str, float]:
    """``synthesis.<figure>.mean`` over the run's generation epochs, and ``.last`` (flat metric keys)."""
    rows = synthesis_rows(history)
    out: dict[str, float] = {}
    for key in FIGURES:
        values = [r[key] for r in rows if r[key] is not None]
        if values:
            out[f"synthesis.{key}.mean"] = sum(values) / len(values)
            out[f"synthesis.{key}.last"] = values[-1]
    return out
