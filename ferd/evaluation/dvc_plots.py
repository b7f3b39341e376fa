"""Plot data in the shapes DVC's plot templates read (``dvc plots show``; declared in ``dvc.yaml``).

* ``per_class_<attack>.csv`` — ``class,teacher,student``: accuracy (%) per class, one row a
  class (template ``bar_horizontal``: the paper's Fig. 1/4 per-class bars);
* ``predictions_<model>_<attack>.csv`` — ``actual,predicted``: one row per test example,
  class names (template ``confusion``: the paper's Fig. 2/9 adversarial confusion matrices);
* ``class_weights.csv`` — ``epoch,round,<class…>``: the reweighting p of Eq. 1-2 per epoch
  (template ``linear``: how the class weights move round by round).

The loss curves are DVCLive's (:mod:`ferd.core.tracking`, ``out/live``).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.checkpoint import atomic_write_bytes
from .runner import EvaluationResult


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())
    return path


def write_dvc_plots(result: EvaluationResult, out_dir: str | os.PathLike[str],
                    class_names: Sequence[str]) -> list[Path]:
    """Per-class accuracy and per-example predictions of every (model, attack) of ``result``."""
    out = Path(out_dir)
    written = []
    for attack in result.attacks:
        cols = {}
        for model in result.models:
            correct = result.correct[(model, attack)]
            cols[model] = [100.0 * float(correct[result.y == c].mean()) if (result.y == c).any() else ""
                           for c in range(result.num_classes)]
        rows = [[class_names[c], *(round(cols[m][c], 4) if cols[m][c] != "" else "" for m in result.models)]
                for c in range(result.num_classes)]
        written.append(_write_csv(out / f"per_class_{attack}.csv", ["class", *result.models], rows))
        for model in result.models:
            pred = np.asarray(result.predictions[(model, attack)])
            written.append(_write_csv(out / f"predictions_{model}_{attack}.csv", ["actual", "predicted"],
                                      [[class_names[int(a)], class_names[int(p)]] for a, p in zip(result.y, pred)]))
    return written


def write_class_weights(history: Sequence[dict], out_dir: str | os.PathLike[str],
                        class_names: Sequence[str]) -> Path:
    """``class_weights.csv``: p (Eq. 1-2) of every epoch of the run's history."""
    rows = [[h["epoch"], h.get("round", ""), *(round(float(v), 6) for v in h["p"])] for h in history if "p" in h]
    return _write_csv(Path(out_dir) / "class_weights.csv", ["epoch", "round", *class_names], rows)
