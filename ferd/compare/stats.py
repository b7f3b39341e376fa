"""The statistics of a comparison: paired differences over seeds and what their interval supports."""

from __future__ import annotations

import math

import numpy as np

SAME = 1e-12  # differences closer than this are one value (float rounding of k/N − j/N), not a spread


def paired_interval(values: list[float], reference: list[float], level: float = 0.95, span: float | None = None
                    ) -> tuple[float, float, float]:
    """mean(d) and its two-sided t interval for paired differences d = values − reference. No interval (NaN
    bounds) with one seed, or when the differences do not vary but are not all 0: the t interval is then
    degenerate (zero width), not evidence (accuracies move in steps of 1/N, so two seeds can tie); all 0 is
    (0, 0, 0), the same in every seed. ``span``: the values lie in [0, span] (1 for accuracies), so the interval
    is cut to [−span, +span] — two seeds' t quantile (12.7) otherwise gives a class ±600 points; a confidence
    interval intersected with the values the difference can take keeps its coverage."""
    from scipy import stats

    d = np.asarray(values, dtype=float) - np.asarray(reference, dtype=float)
    mean = float(d.mean())
    if d.size < 2 or (np.allclose(d, d[0], rtol=0, atol=SAME) and abs(d[0]) > SAME):
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, d.size - 1) * d.std(ddof=1) / math.sqrt(d.size))
    if span is None:
        return mean, mean - half, mean + half
    return mean, max(mean - half, -span), min(mean + half, span)


def verdict(low: float, high: float) -> str:
    if math.isnan(low):
        return "no interval (one seed, or the same difference in every seed)"
    if low == high == 0:
        return "equal in every seed (no difference)"
    if high < 0:
        return "worse than the reference beyond noise"
    if low > 0:
        return "better than the reference beyond noise"
    return "within noise"
