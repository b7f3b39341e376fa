"""``ferd bench`` runs on a tiny preset and reports every figure (a smoke test: timings are not asserted)."""

from __future__ import annotations

import sys
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


def _plan_of_ferd_run(monkeypatch, cfg, out):
    """The plan ``ferd run`` (:func:`ferd.stages.run.run`) trains with, its preflight (device, teacher source,
    test set) skipped."""
    from ferd.stages import run as run_module

    monkeypatch.setattr(run_module, "preflight", lambda cfg: None)
    return _plan_given_to_the_run_state(monkeypatch, lambda: run_module.run(cfg, out, progress=False, live=False))


def _plan_of_a_stage(monkeypatch, cfg, tmp_path):
    """The plan a per-round stage (:func:`ferd.stages.round_start.start_round`) trains with, its inputs' checks and
    the teacher's load skipped."""
    import torch

    from ferd.stages import round_start

    monkeypatch.setattr(round_start, "check_inputs", lambda *a, **k: None)
    monkeypatch.setattr(round_start, "load_teacher", lambda cfg, path: (torch.nn.Identity(), {}))
    return _plan_given_to_the_run_state(monkeypatch, lambda: round_start.start_round(
        cfg, "synthesis", 0, tmp_path, teacher=tmp_path))


@pytest.mark.parametrize("preset", RUN_PRESETS)
def test_bench_and_run_train_with_the_same_plan_for_every_method(preset, monkeypatch, tmp_path):
    from ferd.plan.methods import known_methods
    from ferd.core.params_io import ConfigError

    for method in known_methods():
        try:
            cfg = load_config(ROOT / "params" / f"{preset}.yaml", [f"method={method}"])
        except ConfigError:  # refused for every entry point alike (e.g. the UTAE cache with a baseline)
            continue
        benched = _plan_given_to_the_run_state(monkeypatch, lambda: bench(cfg, iterations=1, repeats=1, warmup=0))
        for trained in (_plan_of_ferd_run(monkeypatch, cfg, tmp_path / method),
                        _plan_of_a_stage(monkeypatch, cfg, tmp_path)):
            assert trained.cfg == cfg and trained.method.name == method, (preset, method)
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


# ---- the generator iteration: each method declares its passes ---------------------------------------------
def _method(overrides):
    """The generation method ``ferd run`` builds for ``params/ci.yaml`` with ``overrides``."""
    from ferd.plan.resolve import resolve

    return resolve(load_config(CI, overrides)).synthesizer(10, 32).method


def test_the_generator_iterations_flop_count_follows_each_methods_passes_by_hand():
    """Per sample, 2 FLOPs per MAC and a forward with its input-backward = 2 forwards. Teacher 100 MACs, student
    10, the teacher's head 4, batch 2, 3 bottleneck steps. FERD: teacher and student 2·2·(2·100 + 2·10) = 880;
    with L_uni the head's 3 fit steps and the masked pass add 2·2·(2·(3 + 1)·4) = 128: 1008; without L_adv no
    student: 800. DFHL, the student alone: 2·2·(2·10) = 80. CMI, the teacher on two views: 2·2·(4·100 + 2·10) =
    1680. ZSKT and DeepInversion: 880; Fast during its adversarial warm-up, the teacher alone: 800."""
    uni = ["synthesis.bottleneck.iterations=3", "synthesis.fae=true", "synthesis.lambda_uni=5"]
    assert _method(uni).generator_passes(0).flops(100, 10, 2, 4) == 1008
    assert _method([*uni, "synthesis.lambda_uni=0"]).generator_passes(0).flops(100, 10, 2, 4) == 880
    assert _method([*uni, "synthesis.fae=false"]).generator_passes(0).flops(100, 10, 2, 4) == 880
    assert _method([*uni, "synthesis.lambda_adv=0"]).generator_passes(0).flops(100, 10, 2, 4) == 928
    assert _method([*uni, "synthesis.lambda_adv=0", "synthesis.lambda_uni=0"]).generator_passes(0).flops(
        100, 10, 2, 4) == 800
    assert _method(["method=dfhl"]).generator_passes(0).flops(100, 10, 2, 4) == 80
    assert _method(["method=cmi"]).generator_passes(0).flops(100, 10, 2, 4) == 1680
    for method in ("zskt", "deepinv"):
        assert _method([f"method={method}"]).generator_passes(0).flops(100, 10, 2, 4) == 880
    fast = _method(["method=fast", "baseline.fast.adv_warmup=1"])
    assert (fast.generator_passes(0).flops(100, 10, 2, 4), fast.generator_passes(1).flops(100, 10, 2, 4)) == (800, 880)


def test_each_methods_declared_passes_are_the_ones_its_objective_makes():
    """One objective call of every method (and the one-module method of tests/support), counted at the first
    convolution of the teacher and of the student: the passes the method declares, no more, no fewer."""
    import importlib

    import torch

    from ferd.models import create_model
    from ferd.plan.methods import known_methods
    from ferd.settings.method import METHODS
    from ferd.synthesis.epoch import frozen_student
    from ferd.synthesis.losses import BatchNormStatistics

    importlib.import_module("support.throwaway_method")
    try:
        names = known_methods()
        assert "pixel-ce" in names and "ferd" in names
        for name in names:
            method = _method([f"method={name}", "synthesis.fae=true", "synthesis.lambda_uni=5"])
            teacher, student = (create_model("cnn-8", num_classes=10).eval() for _ in range(2))
            teacher.requires_grad_(False)
            calls = {"teacher": 0, "student": 0}
            for role, model in (("teacher", teacher), ("student", student)):
                first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
                first.register_forward_hook(lambda *_, role=role: calls.__setitem__(role, calls[role] + 1))
            y = torch.arange(method.ctx.cfg.batch_size) % 10
            synthesize, _ = method.start_epoch(0, y, torch.Generator().manual_seed(0))
            with frozen_student(student), BatchNormStatistics(teacher) as bn:
                method.objective(synthesize(), y, teacher, student, bn, torch.Generator().manual_seed(1), 0)
            declared = method.generator_passes(0)
            assert (calls["teacher"], calls["student"]) == (declared.teacher_passes, declared.student_passes), name
    finally:
        METHODS.pop("pixel-ce", None)
        sys.modules.pop("support.throwaway_method", None)


def test_bench_counts_a_methods_declared_generator_passes_not_ferds(single_thread):
    """DFHL's generator iteration runs the student alone: bench counts 2·2·batch·student MACs per iteration
    (FERD's teacher and student passes before each method declared its own)."""
    r = bench(load_config(CI, ["method=dfhl"]), iterations=1, repeats=1, warmup=0)
    flops = r["generator_tflops"] * 1e12 * r["generator_bare_s"]
    assert flops == pytest.approx(2 * 2 * r["batch"]["generator"] * r["student_macs"])


def test_bench_refuses_a_method_that_declares_no_generator_passes_before_timing(monkeypatch):
    """No default declaration (it would be silently wrong): one line naming the method and what to define,
    before any iteration is timed."""
    from ferd.baselines.generation import BaselineMethod
    from ferd.settings.method import METHODS, register
    from ferd.synthesis.epoch import Synthesizer

    class Undeclared(BaselineMethod):
        name = "undeclared"
        groups = ()

    register(Undeclared)
    monkeypatch.setattr(Synthesizer, "run_epoch", lambda *a, **k: pytest.fail("timed before the refusal"))
    try:
        with pytest.raises(ValueError, match="'undeclared' declares no generator passes.*"
                                                      "Undeclared.generator_passes"):
            bench(load_config(CI, ["method=undeclared"]), iterations=1, repeats=1, warmup=0)
    finally:
        METHODS.pop("undeclared", None)
