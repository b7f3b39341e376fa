"""Robust-fairness metrics of FERD §5.1 ("Evaluation Metrics"), as pure numpy functions.

The paper reports, per attack, the average robustness (Avg), the worst-class
robustness (Worst; *worst-10 %* on CIFAR-100 and Tiny-ImageNet) and the
Normalized Standard Deviation (NSD) of the class-wise accuracies, following
Fair-ARD (Yue et al., 2023) and ABSLD (Zhao et al., 2024). §3.2 and A.10
(Fig. 2 and Fig. 9) additionally read confusion matrices of adversarial
predictions to see *where* successful attacks send each class; the attack-target
functions below give those distributions as numbers.

All inputs are 1-D arrays (numpy or anything ``np.asarray`` accepts): ``y`` the
true labels, ``correct`` per-sample booleans (prediction == label, clean or under
attack), ``y_pred`` per-sample predicted labels. Accuracies are fractions in
[0, 1]. A class with no sample in the evaluated set has accuracy NaN and is left
out of every class-wise statistic (Worst, Worst-10 %, NSD), which then run over
the classes that are present.
"""

from __future__ import annotations

import math
from typing import TypedDict

import numpy as np
from numpy.typing import ArrayLike

WORST_FRACTION = 0.1
"""Share of the classes averaged by the "worst-10 %" statistic (FERD Tab. 2, Tab. 5)."""


class ClassStats(TypedDict):
    """The four numbers of a Table-1 cell group, as fractions (NSD unitless)."""

    avg: float
    worst: float
    worst10: float
    nsd: float


def _labels(y: ArrayLike, num_classes: int, name: str = "y") -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of labels, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected integer labels, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        raise ValueError(f"{name}: expected labels in [0, {num_classes}), got range "
                         f"[{arr.min()}, {arr.max()}]")
    return arr


def class_counts(y: ArrayLike, num_classes: int) -> np.ndarray:
    """Number of samples of each class, shape (C,), int64."""
    return np.bincount(_labels(y, num_classes), minlength=num_classes).astype(np.int64)


def per_class_accuracy(correct: ArrayLike, y: ArrayLike, num_classes: int) -> np.ndarray:
    """Class-wise accuracy a_c = mean of ``correct`` over the samples of class c, shape (C,).

    This is the "robustness of each category" of FERD Fig. 1 / Fig. 4 (clean
    accuracy when ``correct`` comes from clean predictions). Classes with no sample
    get NaN.
    """
    y = _labels(y, num_classes)
    correct = np.asarray(correct)
    if correct.shape != y.shape:
        raise ValueError(f"correct: expected shape {y.shape} (one flag per label), got {correct.shape}")
    hits = np.bincount(y, weights=correct.astype(np.float64), minlength=num_classes)
    counts = np.bincount(y, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)


def average_accuracy(correct: ArrayLike) -> float:
    """Avg: the mean of ``correct`` over all samples (the usual (robust) accuracy).

    On a class-balanced test set (CIFAR-10/100 test splits, and the stratified
    subsets of :func:`ferd.evaluation.runner.stratified_subset`) it equals the mean
    of the class-wise accuracies.
    """
    correct = np.asarray(correct, dtype=np.float64)
    if correct.size == 0:
        raise ValueError("correct: expected at least one sample")
    return float(correct.mean())


def _present(class_acc: ArrayLike) -> np.ndarray:
    acc = np.asarray(class_acc, dtype=np.float64)
    if acc.ndim != 1:
        raise ValueError(f"class_acc: expected a 1-D array of class accuracies, got shape {acc.shape}")
    acc = acc[~np.isnan(acc)]
    if acc.size == 0:
        raise ValueError("class_acc: no class has a sample (all accuracies are NaN)")
    return acc


def worst_class_accuracy(class_acc: ArrayLike) -> float:
    """Worst: the minimum class-wise accuracy (FERD Tab. 1, Fair-ARD's "worst-class robustness")."""
    return float(_present(class_acc).min())


def worst_k_count(num_classes: int, fraction: float = WORST_FRACTION) -> int:
    """How many classes "worst-``fraction``" averages: ⌈fraction · C⌉, at least 1.

    Rounding *up* keeps at least one class for C < 10 and gives exactly 10 classes
    on CIFAR-100 and 20 on Tiny-ImageNet, the sets FERD Tab. 2 and Tab. 5 use. A
    tiny tolerance absorbs float error (0.1 · 100 = 10.000000000000002 → 10).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction: expected a value in (0, 1], got {fraction}")
    if num_classes < 1:
        raise ValueError(f"num_classes: expected >= 1, got {num_classes}")
    return max(1, math.ceil(fraction * num_classes - 1e-9))


def worst_fraction_accuracy(class_acc: ArrayLike, fraction: float = WORST_FRACTION) -> float:
    """Worst-10 %: mean of the ⌈fraction · C⌉ lowest class-wise accuracies (see :func:`worst_k_count`).

    C counts the classes present in the evaluated set. For CIFAR-10 (C = 10) it is
    the worst-class accuracy; for CIFAR-100 the mean of the 10 lowest classes.
    """
    acc = np.sort(_present(class_acc))
    return float(acc[: worst_k_count(acc.size, fraction)].mean())


def normalized_std(class_acc: ArrayLike) -> float:
    """NSD = σ / μ of the class-wise accuracies, with the *population* σ (ddof = 0).

    FERD §5.1 takes NSD from Fair-ARD (Yue et al., 2023) / ABSLD (Zhao et al., 2024)
    without a formula, and no public code fixes population versus sample standard
    deviation (Fair-ARD's public ``eval.py`` computes the class-wise accuracies as
    numpy arrays but prints only Avg and Worst). We use the population one: the C
    class accuracies are the whole population being described, not a sample of
    classes, and it is what ``numpy.std`` gives by default (ddof = 0), so any
    numpy-based reimplementation in that code base would report it.
    The sample version would be larger by √(C / (C − 1)) (≈ 5.4 % on CIFAR-10).
    NSD is NaN when every class accuracy is 0 (0 / 0).
    """
    acc = _present(class_acc)
    mean = acc.mean()
    if mean == 0.0:
        return float("nan")
    return float(acc.std(ddof=0) / mean)


def class_stats(correct: ArrayLike, y: ArrayLike, num_classes: int,
                fraction: float = WORST_FRACTION) -> ClassStats:
    """Avg, Worst, Worst-10 % and NSD for one (model, attack) from per-sample flags."""
    acc = per_class_accuracy(correct, y, num_classes)
    return ClassStats(avg=average_accuracy(correct), worst=worst_class_accuracy(acc),
                      worst10=worst_fraction_accuracy(acc, fraction), nsd=normalized_std(acc))


def confusion_matrix(y: ArrayLike, y_pred: ArrayLike, num_classes: int) -> np.ndarray:
    """Counts M[i, j] = #{samples of true class i predicted as j}, shape (C, C), int64.

    Rows are true labels and columns predictions, the orientation of FERD Fig. 2
    and Fig. 9 (vertical axis: true label; horizontal: predicted label). With
    adversarial predictions the off-diagonal of row i shows where attacks send
    class i.
    """
    y = _labels(y, num_classes)
    y_pred = _labels(y_pred, num_classes, "y_pred")
    if y_pred.shape != y.shape:
        raise ValueError(f"y_pred: expected shape {y.shape} (one prediction per label), got {y_pred.shape}")
    flat = np.bincount(y * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def _success_mask(y: np.ndarray, y_pred: np.ndarray, clean_correct: ArrayLike | None) -> np.ndarray:
    success = y_pred != y
    if clean_correct is not None:
        clean_correct = np.asarray(clean_correct, dtype=bool)
        if clean_correct.shape != y.shape:
            raise ValueError(f"clean_correct: expected shape {y.shape}, got {clean_correct.shape}")
        success &= clean_correct
    return success


def attack_target_distribution(y: ArrayLike, y_pred: ArrayLike, num_classes: int,
                               clean_correct: ArrayLike | None = None) -> np.ndarray:
    """Share of successful attacks that land in each predicted class, shape (C,), sums to 1.

    An attack is successful on a sample when its adversarial prediction differs
    from the label; with ``clean_correct`` given, only samples the model got right
    before the attack count (attack success in the strict sense). This is the
    column profile of the off-diagonal of FERD Fig. 2 / Fig. 9: a uniform vector
    means unbiased attack targets (the goal of UTAEs, §4.4 and A.2), mass on one
    class means attacks funnel into it. All NaN when no attack succeeded.
    """
    y = _labels(y, num_classes)
    y_pred = _labels(y_pred, num_classes, "y_pred")
    if y_pred.shape != y.shape:
        raise ValueError(f"y_pred: expected shape {y.shape}, got {y_pred.shape}")
    success = _success_mask(y, y_pred, clean_correct)
    counts = np.bincount(y_pred[success], minlength=num_classes).astype(np.float64)
    total = counts.sum()
    return counts / total if total > 0 else np.full(num_classes, np.nan)


def attack_target_matrix(y: ArrayLike, y_pred: ArrayLike, num_classes: int,
                         clean_correct: ArrayLike | None = None) -> np.ndarray:
    """Per true class i, the share of its successful attacks going to each class j, shape (C, C).

    Row i sums to 1 over j ≠ i (the diagonal is 0); a row with no successful attack
    is NaN. The row-normalised off-diagonal of the adversarial confusion matrix
    (FERD §3.2: "for samples with the original label of class 0, when the attack
    target is class 9, the student is more prone to misclassification").
    """
    y = _labels(y, num_classes)
    y_pred = _labels(y_pred, num_classes, "y_pred")
    if y_pred.shape != y.shape:
        raise ValueError(f"y_pred: expected shape {y.shape}, got {y_pred.shape}")
    success = _success_mask(y, y_pred, clean_correct)
    counts = confusion_matrix(y[success], y_pred[success], num_classes).astype(np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.maximum(totals, 1.0), np.nan)


def target_entropy(distribution: ArrayLike) -> float:
    """Normalised Shannon entropy H(p) / log C of a target distribution, in [0, 1].

    1 means attack targets spread uniformly over the C classes, 0 that they all go
    to one class; NaN for an all-NaN distribution (no successful attack).
    """
    p = np.asarray(distribution, dtype=np.float64)
    if p.ndim != 1 or p.size < 2:
        raise ValueError(f"distribution: expected a 1-D array over >= 2 classes, got shape {p.shape}")
    if np.isnan(p).all():
        return float("nan")
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / np.log(p.size))
