"""ferd.compare.per_class: per-class paired differences and pool shares, by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ferd.compare.per_class import class_deltas, per_class_section, pool_share


def test_class_deltas_pair_by_seed_by_hand():
    ref = {0: np.array([0.1, 0.5]), 1: np.array([0.2, 0.5]), 2: np.array([0.3, 0.5]), 9: np.array([0.0, 0.0])}
    arm = {0: np.array([0.2, 0.5]), 1: np.array([0.4, 0.5]), 2: np.array([0.6, 0.5])}  # seed 9: reference only
    (m0, lo0, hi0), (m1, lo1, hi1) = class_deltas(arm, ref)
    # class 0: d = (0.1, 0.2, 0.3), mean 0.2, sd 0.1, t_{0.975, 2} = 4.302653 → half-width 0.2484138
    assert (m0, lo0, hi0) == pytest.approx((0.2, 0.2 - 0.2484138, 0.2 + 0.2484138), abs=1e-6)
    assert (m1, lo1, hi1) == (0.0, 0.0, 0.0)
    assert class_deltas({5: np.array([0.1])}, ref) == []  # no seed in common


def test_pool_share_is_the_mean_p_that_drew_the_labels(tmp_path):
    path = tmp_path / "history.json"
    path.write_text(json.dumps([{"epoch": 0, "p_generation": [0.5, 0.25, 0.25]},
                                {"epoch": 1, "p_generation": [0.25, 0.25, 0.5]},
                                {"epoch": 2, "p_generation": [1.0, "x", 0.0]},  # not numbers: skipped
                                {"epoch": 3}]))
    assert pool_share(path, 3) == pytest.approx([0.375, 0.25, 0.375])
    assert pool_share(path, 4) is None  # another class count
    assert pool_share(tmp_path / "absent.json", 3) is None
    path.write_text("[NaN")
    assert pool_share(path, 3) is None


def test_the_section_orders_classes_from_the_teachers_weakest_and_shows_each_arm():
    acc = {"ferd": {0: np.array([0.2, 0.4]), 1: np.array([0.4, 0.4])},
           "fast": {0: np.array([0.1, 0.5]), 1: np.array([0.3, 0.5])},
           "other": {7: np.array([0.0, 0.0])}}  # no seed in common with the reference: no column
    lines = per_class_section("ferd", "cnn-8", "pgd20", ["cat", "dog"], acc, {"ferd": np.array([0.75, 0.25])},
                              [0.5, 0.1])
    table = [line for line in lines if line.startswith("| ")]
    assert table[0] == "| class | teacher | `ferd` | pool share `ferd` | `fast` − `ferd` (2 seeds) |"
    # the teacher's weakest first; the same difference in both seeds: no interval (a t interval of zero width)
    assert table[1] == "| dog | 10.0 | 40.0 | 25.0 | +10.0 |"
    assert table[2] == "| cat | 50.0 | 30.0 | 75.0 | -10.0 |"
    assert per_class_section("absent", "cnn-8", "pgd20", ["cat", "dog"], acc, {}, None) == []
