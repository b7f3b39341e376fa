"""A run of Algorithm 1 killed at the start of round 1 (after round 0's checkpoint), then rerun."""

from __future__ import annotations

import importlib

import pytest

from ferd.stages.run import run_algorithm1
from ferd.algorithm.round_state import RunState, read_round_record

synthesis_stage = importlib.import_module("ferd.stages.synthesis")  # the module (ferd.stages.synthesis is its function)


REAL_ROUND = synthesis_stage.generation_round


def _dying(state, teacher, r, epochs, **kwargs):
    if r == 1:
        raise RuntimeError("killed")
    return REAL_ROUND(state, teacher, r, epochs, **kwargs)


def die_at_round_1(monkeypatch) -> None:
    """From now on, Algorithm 1 dies at the start of round 1 (after round 0's checkpoint)."""
    monkeypatch.setattr(synthesis_stage, "generation_round", _dying)


def revive(monkeypatch) -> None:
    """Put the real generation round back (after :func:`die_at_round_1`)."""
    monkeypatch.setattr(synthesis_stage, "generation_round", REAL_ROUND)


def killed_then_resumed(make_teacher, cfg, checkpoint_dir, monkeypatch) -> RunState:
    """Die at the start of round 1, check the checkpoint points there, rerun; returns the resumed state."""
    die_at_round_1(monkeypatch)
    with pytest.raises(RuntimeError, match="killed"):
        run_algorithm1(make_teacher(), cfg, checkpoint_dir=checkpoint_dir, progress=False)
    assert read_round_record(checkpoint_dir)["next_round"] == 1
    revive(monkeypatch)
    return run_algorithm1(make_teacher(), cfg, checkpoint_dir=checkpoint_dir, progress=False)
