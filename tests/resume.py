"""A run of Algorithm 1 killed at the start of round 1 (after round 0's checkpoint), then rerun."""

from __future__ import annotations

import pytest
import torch

import ferd.algorithm as alg


def killed_then_resumed(make_teacher, cfg, checkpoint_dir, monkeypatch) -> alg.RunState:
    """Die at the start of round 1, check ``state.pt`` points there, rerun; returns the resumed state."""
    real = alg.generation_round

    def dying(state, teacher, r, epochs, progress=False):
        if r == 1:
            raise RuntimeError("killed")
        return real(state, teacher, r, epochs, progress)

    monkeypatch.setattr(alg, "generation_round", dying)
    with pytest.raises(RuntimeError, match="killed"):
        alg.run_algorithm1(make_teacher(), cfg, 32, checkpoint_dir=checkpoint_dir, progress=False)
    assert torch.load(checkpoint_dir / "state.pt", weights_only=True)["next_round"] == 1
    monkeypatch.setattr(alg, "generation_round", real)
    return alg.run_algorithm1(make_teacher(), cfg, 32, checkpoint_dir=checkpoint_dir, progress=False)
