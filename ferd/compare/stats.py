"""The statistics of a comparison: paired differences over seeds and what their interval supports."""

from __future__ import annotations

import math

import numpy as np


def paired_interval(values: list[float], reference: list[float], level: float = 0.95
                    ) -> tuple[float, float, float]:
    """mean(d) and its two-sided t interval for paired differences d = values − reference."""
    from scipy import stats

    d = np.asarray(values, dtype=float) - np.asarray(reference, dtype=float)
    mean = float(d.mean())
    if d.size < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    return mean, mean - half, mean + half


def verdict(low: float, high: float) -> str:
    if math.isnan(low):
        return "one seed: no interval"
    if low == high == 0:
        return "equal in every seed (no difference)"
    if high < 0:
        return "worse than the reference beyond noise"
    if low > 0:
        return "better than the reference beyond noise"
    return "within noise"
