"""Evaluation of FERD §5.1: robustness and robust fairness of teacher and student.

- :mod:`.metrics`: Avg, Worst-class, Worst-10 %, NSD, confusion matrices and
  attack-target distributions (pure numpy functions).
- :mod:`.runner`: :func:`evaluate_models` runs clean / FGSM / PGD-20 / CW∞ /
  AutoAttack on every model and keeps per-sample results
  (:class:`EvaluationResult`); :func:`flat_metrics` and :func:`per_class_table`.
- :mod:`.autoattack`: AutoAttack standard through the reference ``pyautoattack``.
- :mod:`.report` / :mod:`.plots`: :func:`write_evaluation` writes metrics.json,
  per-class CSV/JSON, confusion matrices, PNG figures and report.md.
- :mod:`.cli`: the ``ferd evaluate`` sub-command.
"""

from .metrics import (attack_target_distribution, attack_target_matrix, average_accuracy, class_stats,
                      confusion_matrix, normalized_std, per_class_accuracy, worst_class_accuracy,
                      worst_fraction_accuracy)
from .runner import (ATTACKS, EvaluationResult, evaluate_models, flat_metrics, per_class_table,
                     stratified_subset)

__all__ = [
    "ATTACKS", "EvaluationResult", "evaluate_models", "flat_metrics", "per_class_table", "stratified_subset",
    "write_evaluation", "attack_target_distribution", "attack_target_matrix", "average_accuracy",
    "class_stats", "confusion_matrix", "normalized_std", "per_class_accuracy", "worst_class_accuracy",
    "worst_fraction_accuracy",
]


def __getattr__(name: str):  # lazy: report/plots import matplotlib
    if name == "write_evaluation":
        from .report import write_evaluation
        return write_evaluation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
