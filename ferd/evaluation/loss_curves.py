"""The loss curves of a run's history (``history.json``), per epoch: every term of the generator's objective
L_gen at the kept iteration (e.g. gen, adv, bn, oh, uni) and every Eq. 11 student loss (loss, kl_clean, kl_adv),
as :mod:`ferd.core.tracking` names them for the live curves (``generator/<term>``, ``student/<term>``), so the
report's figure and the DVCLive curves show the same numbers. An epoch whose student was not trained
(``distill.warmup_epochs``) has no student point; a non-finite value has no point."""

from __future__ import annotations

from collections.abc import Sequence

from ..core.tracking import distillation_metrics, generation_metrics

GROUPS = ("generator", "student")
Series = dict[str, dict[str, list[tuple[int, float]]]]


def loss_series(history: Sequence[dict]) -> Series:
    """``{group: {term: [(epoch, value), …]}}`` for the :data:`GROUPS` (a group absent from every epoch is
    left out)."""
    out: Series = {}
    for h in history:
        for name, value in {**generation_metrics(h), **distillation_metrics(h)}.items():
            group, term = name.split("/", 1)
            if group in GROUPS:
                out.setdefault(group, {}).setdefault(term, []).append((int(h["epoch"]), value))
    return out
