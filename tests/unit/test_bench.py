"""``ferd bench`` runs on a tiny preset and reports every figure (a smoke test: timings are not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferd.algorithm.bench import bench, timed_plan
from ferd.cli import main
from ferd.plan.resolve import load_config

CI = Path(__file__).resolve().parents[2] / "params" / "ci.yaml"


@pytest.mark.parametrize("cache", ["recompute", "pool"])
def test_bench_reports_iterations_bare_passes_and_flops(cache, single_thread):
    r = bench(load_config(CI, [f"distill.utae.cache={cache}", "distill.utae.target=teacher"]), iterations=2,
              repeats=1, warmup=0)
    for kind in ("generator", "student"):
        assert r[f"{kind}_iteration_s"] > 0 and r[f"{kind}_bare_s"] > 0 and r[f"{kind}_tflops"] > 0
        assert r[f"{kind}_ratio"] == pytest.approx(r[f"{kind}_iteration_s"] / r[f"{kind}_bare_s"])
    assert r["utae_cache"] == cache and r["teacher_macs"] > 0 and r["paper_220_epochs_h"] > 0


def test_bench_cli_writes_json(tmp_path, capsys, single_thread):
    out = tmp_path / "b.json"
    assert main(["bench", "--preset", str(CI), "--iterations", "1", "--repeats", "1", "--warmup", "0",
                 "--out", str(out)]) == 0
    assert "ratio" in capsys.readouterr().out and out.is_file()


# ---- bench times what ferd run trains (issue 33) -------------------------------------------------------
ROOT = CI.parents[1]
RUN_PRESETS = sorted(p.stem for p in (ROOT / "params").glob("*.yaml") if not p.stem.startswith("compare-"))


class _Captured(Exception):
    pass


def _plan_given_to_the_run_state(monkeypatch, call):
    """The plan ``call`` builds its RunState from (stopped there: no model is built)."""
    from ferd.algorithm.round_state import RunState

    seen = []

    def initial(plan):
        seen.append(plan)
        raise _Captured

    monkeypatch.setattr(RunState, "initial", staticmethod(initial))
    with pytest.raises(_Captured):
        call()
    return seen[0]


@pytest.mark.parametrize("preset", RUN_PRESETS)
def test_bench_and_run_train_with_the_same_plan_for_every_method(preset, monkeypatch):
    import torch

    from ferd.plan.methods import known_methods
    from ferd.core.params_io import ConfigError
    from ferd.stages.run import run_algorithm1

    for method in known_methods():
        try:
            cfg = load_config(ROOT / "params" / f"{preset}.yaml", [f"method={method}"])
        except ConfigError:  # refused for every entry point alike (e.g. the UTAE cache with a baseline)
            continue
        benched = _plan_given_to_the_run_state(monkeypatch, lambda: bench(cfg, iterations=1, repeats=1, warmup=0))
        trained = _plan_given_to_the_run_state(monkeypatch, lambda: run_algorithm1(torch.nn.Identity(), cfg,
                                                                                     progress=False))
        assert benched == timed_plan(trained, 1), (preset, method)  # only the iterations per timed call differ
        assert benched.distill.model_copy(update={"iterations": 0}) == trained.distill.model_copy(
            update={"iterations": 0})


def test_the_student_iterations_flop_count_follows_the_attack_target_by_hand():
    """Per sample: steps × (forward + input-backward = 2 passes) of the attacked model, one teacher forward,
    two student passes × 3 (forward + backward to inputs and weights); 2 FLOPs per MAC. Teacher 100 MACs,
    student 10, 10 steps, batch 2: teacher target 2·2·(10·2·100 + 100 + 60) = 8640, student target
    2·2·(10·2·10 + 100 + 60) = 1440; cached (augmented view: one teacher forward) 2·2·(100 + 60) = 640."""
    from ferd.distill.side import UtaeSide

    cfg = load_config(CI, ["distill.utae.steps=10"])
    side = UtaeSide()
    teacher_cfg = cfg.distill.model_copy(update={"utae": cfg.distill.utae.model_copy(update={"target": "teacher"})})
    assert side.passes(teacher_cfg).flops(100, 10, 2) == 8640
    assert side.passes(cfg.distill).flops(100, 10, 2) == 1440
    cached = teacher_cfg.model_copy(update={"utae": teacher_cfg.utae.model_copy(update={"cache": "pool"})})
    assert side.passes(cached).flops(100, 10, 2) == 640


def test_bench_of_a_baseline_under_the_printed_paper_attacks_the_student(monkeypatch):
    """paper-as-printed attacks the teacher with γ = 0.5; a baseline's A.8 conversion attacks the student with
    γ = 0, and bench times and counts that."""
    from ferd.plan.resolve import resolve

    plan = resolve(load_config(ROOT / "params" / "paper-as-printed.yaml", ["method=fast"]))
    assert (plan.distill.utae.target, plan.distill.utae.gamma) == ("student", 0.0)
    ferd = resolve(load_config(ROOT / "params" / "paper-as-printed.yaml"))
    assert (ferd.distill.utae.target, ferd.distill.utae.gamma) == ("teacher", 0.5)
    assert plan.side().passes(plan.distill).attacked == "student"
