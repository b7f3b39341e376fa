"""Numbers read back from JSON (untrusted): which values count as numbers."""

from __future__ import annotations

import math


def is_number(value: object) -> bool:
    """A JSON number read back: an int or a float, not a bool (which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: object) -> bool:
    """:func:`is_number` and finite (Python's JSON reader admits NaN and Infinity)."""
    return is_number(value) and math.isfinite(value)
