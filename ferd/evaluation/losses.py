"""The loss curves of a run's history (``history.json``), per epoch: every term of the generator's objective
L_gen at the kept iteration (``best_terms``: e.g. gen, adv, bn, oh, uni) and every Eq. 11 student loss
(``distill``: loss, and kl_clean / kl_adv where recorded). Every numeric key present is a curve; an epoch whose
student was not trained (``distill.warmup_epochs``: ``{"warmup": 1}``) has no student point."""

from __future__ import annotations

import math
from collections.abc import Sequence

GROUPS = {"best_terms": "generator", "distill": "student"}
"""History key of each group → its name in figures and plot files."""
Series = dict[str, dict[str, list[tuple[int, float]]]]


def loss_series(history: Sequence[dict]) -> Series:
    """``{group: {term: [(epoch, value), …]}}`` for the :data:`GROUPS` (a group absent from every epoch is
    left out; terms in first-seen order; a non-finite value is kept as NaN)."""
    out: Series = {}
    for h in history:
        for key, group in GROUPS.items():
            terms = h.get(key)
            if not isinstance(terms, dict) or (key == "distill" and "warmup" in terms):
                continue
            for term, value in terms.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    v = float(value)
                    out.setdefault(group, {}).setdefault(term, []).append((int(h["epoch"]), v if math.isfinite(v)
                                                                           else math.nan))
    return out
