"""``compute.amp: bf16``: synthesis and distillation under bfloat16 autocast still train, with finite losses."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ferd.checkpoint import load_state_dict
from ferd.config import load_config

CI = Path(__file__).resolve().parents[1] / "params" / "ci.yaml"


def test_bf16_autocast_runs_and_changes_only_rounding(tmp_path, monkeypatch, single_thread):
    import ferd.run as run_mod

    monkeypatch.setattr(run_mod, "quick_evaluation", lambda *a, **k: {})
    run_mod.run(load_config(CI), tmp_path / "fp32", progress=False)
    run_mod.run(load_config(CI, ["compute.amp=bf16"]), tmp_path / "bf16", progress=False)
    a, b = (load_state_dict(tmp_path / d / "student.safetensors") for d in ("fp32", "bf16"))
    assert all(v.dtype == a[k].dtype for k, v in b.items())  # weights stay fp32
    assert any(not torch.equal(a[k], b[k]) for k in a)  # bf16 rounding does change them
    history = json.loads((tmp_path / "bf16" / "history.json").read_text())
    assert all(torch.isfinite(torch.tensor(h["distill"]["loss"])) for h in history)
