"""Hand-computed checks of the robust-fairness metrics (FERD §5.1) and the stratified subset."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ferd.evaluation import metrics as M
from ferd.evaluation.runner import stratified_subset


def test_per_class_accuracy_and_avg():
    y = np.array([0, 0, 1, 1, 1, 2])
    correct = np.array([True, False, True, True, False, False])
    acc = M.per_class_accuracy(correct, y, 3)
    np.testing.assert_allclose(acc, [0.5, 2 / 3, 0.0])
    assert M.average_accuracy(correct) == pytest.approx(0.5)
    assert M.worst_class_accuracy(acc) == 0.0


def test_absent_class_is_nan_and_skipped():
    y = np.array([0, 0, 2, 2])
    acc = M.per_class_accuracy([True, False, True, True], y, 3)
    assert math.isnan(acc[1])
    assert M.worst_class_accuracy(acc) == 0.5
    # population std of [0.5, 1.0] = 0.25, mean 0.75
    assert M.normalized_std(acc) == pytest.approx(1 / 3)


def test_nsd_population_std_by_hand():
    acc = np.array([0.2, 0.4, 0.6, 0.8])
    # mean 0.5; deviations ±0.3, ±0.1 → variance (0.09+0.01+0.01+0.09)/4 = 0.05
    assert M.normalized_std(acc) == pytest.approx(math.sqrt(0.05) / 0.5)
    assert M.normalized_std(acc) != pytest.approx(np.std(acc, ddof=1) / 0.5)
    assert M.normalized_std([0.7] * 10) == 0.0
    assert math.isnan(M.normalized_std([0.0, 0.0]))


def test_worst_k_count_rounding():
    assert M.worst_k_count(10) == 1
    assert M.worst_k_count(100) == 10
    assert M.worst_k_count(200) == 20
    assert M.worst_k_count(15) == 2  # ceil(1.5)
    assert M.worst_k_count(5) == 1
    with pytest.raises(ValueError, match="fraction"):
        M.worst_k_count(10, 0.0)


def test_worst10_with_100_classes():
    rng = np.random.default_rng(0)
    acc = rng.permutation(np.arange(100) / 100)
    # the 10 lowest are 0.00 … 0.09
    assert M.worst_fraction_accuracy(acc) == pytest.approx(np.mean(np.arange(10) / 100))
    assert M.worst_class_accuracy(acc) == 0.0
    # CIFAR-10: worst-10 % is the worst class
    acc10 = np.array([0.9, 0.3, 0.5, 0.7, 0.8, 0.6, 0.4, 0.95, 0.85, 0.75])
    assert M.worst_fraction_accuracy(acc10) == M.worst_class_accuracy(acc10) == 0.3


def test_class_stats_from_flags_100_classes():
    y = np.repeat(np.arange(100), 4)
    correct = np.zeros(400, dtype=bool)
    for c in range(100):  # class c gets min(c, 4) of its 4 right
        correct[4 * c: 4 * c + min(c, 4)] = True
    st = M.class_stats(correct, y, 100)
    acc = np.minimum(np.arange(100), 4) / 4
    assert st["avg"] == pytest.approx(acc.mean())
    assert st["worst"] == 0.0
    assert st["worst10"] == pytest.approx(np.sort(acc)[:10].mean())  # 0, .25, .5, .75, 1 × 6
    assert st["nsd"] == pytest.approx(acc.std() / acc.mean())


def test_confusion_matrix_by_hand():
    y = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 2, 0, 0])
    cm = M.confusion_matrix(y, pred, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [2, 0, 1]])
    assert cm.sum() == 6 and cm.dtype == np.int64
    with pytest.raises(ValueError, match="y_pred"):
        M.confusion_matrix(y, np.array([0, 1, 3, 0, 0, 0]), 3)


def test_attack_target_distribution_by_hand():
    y = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 2, 0, 0])
    # successes: 0→1, 2→0, 2→0
    np.testing.assert_allclose(M.attack_target_distribution(y, pred, 3), [2 / 3, 1 / 3, 0])
    clean_correct = np.array([True, False, True, True, True, False])  # only sample 4 counts
    np.testing.assert_allclose(M.attack_target_distribution(y, pred, 3, clean_correct), [1, 0, 0])
    mat = M.attack_target_matrix(y, pred, 3)
    np.testing.assert_allclose(mat[0], [0, 1, 0])
    assert np.isnan(mat[1]).all()  # class 1 never attacked successfully
    np.testing.assert_allclose(mat[2], [1, 0, 0])
    assert np.isnan(M.attack_target_distribution(y, y, 3)).all()


def test_target_entropy():
    assert M.target_entropy([0.25] * 4) == pytest.approx(1.0)
    assert M.target_entropy([1.0, 0, 0, 0]) == 0.0
    assert math.isnan(M.target_entropy([np.nan] * 3))


def test_label_validation():
    with pytest.raises(ValueError, match="correct"):
        M.per_class_accuracy([True], [0, 1], 2)
    with pytest.raises(ValueError, match="y"):
        M.per_class_accuracy([True, True], [0, 2], 2)
    with pytest.raises(ValueError, match="at least one"):
        M.average_accuracy([])


def test_stratified_subset_balanced_and_seeded():
    y = np.repeat(np.arange(10), 100)
    idx = stratified_subset(y, 200, seed=3)
    assert len(idx) == 200 and len(set(idx.tolist())) == 200 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(np.bincount(y[idx], minlength=10), [20] * 10)
    np.testing.assert_array_equal(idx, stratified_subset(y, 200, seed=3))
    assert not np.array_equal(idx, stratified_subset(y, 200, seed=4))
    counts = np.bincount(y[stratified_subset(y, 15, 0)], minlength=10)
    assert counts.sum() == 15 and counts.max() - counts.min() <= 1
    np.testing.assert_array_equal(stratified_subset(y, 5000, 0), np.arange(1000))


def test_stratified_subset_imbalanced_proportions():
    y = np.array([0] * 600 + [1] * 300 + [2] * 100)
    counts = np.bincount(y[stratified_subset(y, 100, 0)], minlength=3)
    np.testing.assert_array_equal(counts, [60, 30, 10])
    with pytest.raises(ValueError, match="n_examples"):
        stratified_subset(y, 0)
