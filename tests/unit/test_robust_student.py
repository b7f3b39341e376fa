"""The pieces that make the student robust (issue 16): augmented distillation, the diversity figure,
the informative FAE mask, reweighting on correctly classified samples, retention, the equal-terms
comparison arm, and presets that run the configuration that works (the default generator's pool on the CI
preset: ``tests/integration/test_robust_student_slow.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ferd.data.augment import crop_flip, random_crop
from ferd.plan.resolve import resolve
from ferd.plan.resolve import load_config
from ferd.evaluation.runner import EvaluationResult, flat_metrics, retention
from ferd.synthesis.bottleneck import initial_noise_scale, non_robust_mask
from ferd.synthesis.diversity import batch_diversity, within_label_share
from ferd.synthesis.reweighting import reweight

ROOT = Path(__file__).resolve().parents[2]


# ---- augmentation ------------------------------------------------------------------------------
def test_crop_flip_moves_every_batch_by_the_same_whole_pixel_shift_and_flip():
    x = torch.rand(6, 3, 8, 8)
    delta = (torch.rand_like(x) * 2 - 1) * 0.03
    a, b = crop_flip(x, (x + delta).clamp(0, 1), padding=2, flip=True, generator=torch.Generator().manual_seed(3))
    assert a.shape == b.shape == x.shape
    assert float((a - b).abs().max()) <= 0.03 + 1e-7  # still inside the ε-ball of the augmented image
    # by hand: the same draws, in the same order: crop offsets (y then x), then the flip coin
    g = torch.Generator().manual_seed(3)
    oy, ox = torch.randint(0, 5, (6,), generator=g), torch.randint(0, 5, (6,), generator=g)
    flip = torch.rand(6, generator=g) < 0.5
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(6):
        want = padded[i, :, oy[i]:oy[i] + 8, ox[i]:ox[i] + 8]
        assert torch.equal(a[i], want.flip(2) if flip[i] else want)


def test_crop_without_flip_never_mirrors_and_matches_random_crop():
    x = torch.rand(5, 3, 8, 8)
    (a,) = crop_flip(x, padding=1, flip=False, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, random_crop(x, 1, torch.Generator().manual_seed(0)))


def test_distillation_augments_only_when_asked_and_stays_deterministic(tmp_path):
    from ferd.algorithm.rounds import RunState, generation_round
    from ferd.models import create_model

    cfg = load_config(ROOT / "params" / "ci.yaml", ["teacher.arch=cnn-4", "student.arch=cnn-4"])
    teacher = create_model("cnn-4", num_classes=10).eval().requires_grad_(False)

    def final_weights(augment: bool) -> torch.Tensor:
        c = cfg.model_copy(update={"distill": cfg.distill.model_copy(update={"augment": augment})})
        state = RunState.initial(resolve(c))
        state.pool.append(generation_round(state, teacher, 0, range(1)))
        state.distiller.run_epoch(teacher, state.pool, 0)
        return torch.cat([p.flatten() for p in state.student.parameters()])

    on, off = final_weights(True), final_weights(False)
    assert not torch.equal(on, off)
    assert torch.equal(on, final_weights(True))


# ---- diversity -----------------------------------------------------------------------------------
def test_within_label_share_by_hand():
    # label 0: 0, 2 (mean 1); label 1: 4, 6 (mean 5); batch mean 3
    # within = 1 + 1 + 1 + 1 = 4; total = 9 + 1 + 1 + 9 = 20 → 0.2
    x = torch.tensor([0.0, 2.0, 4.0, 6.0]).view(4, 1, 1, 1)
    y = torch.tensor([0, 0, 1, 1])
    assert within_label_share(x, y) == pytest.approx(0.2)
    assert within_label_share(torch.ones(3, 1, 2, 2), torch.tensor([0, 1, 1])) == 0.0
    # one image per label: nothing within labels
    assert within_label_share(torch.rand(4, 3, 2, 2), torch.arange(4)) == 0.0


def test_batch_diversity_confidence_and_accuracy_by_hand():
    logits = torch.tensor([[0.0, math_ln3()], [0.0, 0.0]])  # softmax [1/4, 3/4] and [1/2, 1/2]
    d = batch_diversity(torch.rand(2, 1, 2, 2), torch.tensor([1, 0]), logits)
    assert d["teacher_confidence"] == pytest.approx((0.75 + 0.5) / 2)
    assert d["teacher_accuracy"] == pytest.approx(1.0)  # argmax of a tie is the first index


def math_ln3() -> float:
    import math

    return math.log(3)


# ---- FAE mask ------------------------------------------------------------------------------------
def test_own_threshold_compares_each_channel_with_its_own_variance():
    v = torch.tensor([0.5, 3.0, 1.0, 2.0])
    sigma2 = torch.tensor([0.2, 2.9, 0.6, 0.9])  # τ·v = 0.25, 1.5, 0.5, 1.0 → channels 0 and 3 non-robust
    assert non_robust_mask(sigma2, v, "paper", "own", 0.5).flatten().tolist() == [1.0, 0.0, 0.0, 1.0]
    # the printed Eq. 6 marks every one of them (all σ² < max v = 3)
    assert non_robust_mask(sigma2, v, "paper", "global").flatten().tolist() == [1.0, 1.0, 1.0, 1.0]


def test_own_threshold_starts_the_fit_at_the_regularisers_optimum():
    v = torch.tensor([1e-4, 0.3, 1.0, 40.0])
    assert torch.allclose(F.softplus(initial_noise_scale(v, "own")) ** 2, v, rtol=1e-5)
    assert torch.equal(initial_noise_scale(v, "global"), torch.zeros(4))


# ---- reweighting on correctly classified samples --------------------------------------------------
class _Fixed(torch.nn.Module):
    """Logits read off the first pixel: 2·x[:, 0, 0, 0] (pixels in [0, 1]) selects a row of a fixed table."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = table

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.table[(2 * x[:, 0, 0, 0]).round().long()] + 0.0 * x.sum(dim=(1, 2, 3), keepdim=False)[:, None]


def test_reweighting_on_correct_samples_ignores_samples_the_teacher_gets_wrong():
    # sample 0 (label 0) logits [2, 0]: margin +2; sample 1 (label 0) logits [0, 5]: wrong, margin −5;
    # sample 2 (label 1) logits [0, 1]: margin +1. ε = 0 keeps every input where it is.
    table = torch.tensor([[2.0, 0.0], [0.0, 5.0], [0.0, 1.0]])
    x = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1, 1).expand(3, 3, 2, 2).contiguous()
    y = torch.tensor([0, 0, 1])
    kw = dict(strategy="softmax", eps=0.0, step=0.0, steps=1, generator=torch.Generator().manual_seed(0))
    every = reweight(_Fixed(table), x, y, 2, **kw)
    correct = reweight(_Fixed(table), x, y, 2, samples="correct", **kw)
    assert every.scores.tolist() == pytest.approx([(-2 + 5) / 2, -1.0])  # D_c = mean(−m)
    assert correct.scores.tolist() == pytest.approx([-2.0, -1.0])


# ---- retention --------------------------------------------------------------------------------------
def _result() -> EvaluationResult:
    y = np.array([0, 0, 1, 1])
    correct = {("teacher", "clean"): np.array([1, 1, 1, 0], bool), ("student", "clean"): np.array([1, 0, 0, 0], bool)}
    preds = {k: np.where(v, y, 1 - y) for k, v in correct.items()}
    return EvaluationResult(models=["teacher", "student"], attacks=["clean"], y=y, num_classes=2, correct=correct,
                            predictions=preds, settings={"eps": 8 / 255}, seconds={})


def test_retention_by_hand():
    # teacher 3/4, student 1/4 → 1/3; per class: teacher [1, 1/2], student [1/2, 0] → [1/2, 0]
    avg, per_class = retention(_result(), "student", "clean")
    assert avg == pytest.approx(1 / 3)
    assert per_class.tolist() == pytest.approx([0.5, 0.0])
    m = flat_metrics(_result())
    assert m["student.clean.retention"] == pytest.approx(1 / 3)
    assert "teacher.clean.retention" not in m


# ---- equal terms and presets --------------------------------------------------------------------------
def test_a_baseline_with_ferds_student_side_distils_exactly_as_ferd():
    a8 = load_config(ROOT / "params" / "embedded.yaml", ["method=fast"])
    paper = ["distill.lambda1=0.8333333333333", "distill.lambda2=0.1666666666667", "distill.utae.gamma=0.5"]
    same = load_config(ROOT / "params" / "embedded.yaml", ["method=fast", "baseline.robust.student_side=ferd", *paper])
    assert resolve(same).distill == load_config(ROOT / "params" / "embedded.yaml", paper).distill
    # A.8 on embedded: RSLAD's weights at the preset's budget of attack steps — FERD's own side exactly
    assert resolve(a8).distill.lambda2 == pytest.approx(5 / 6) and resolve(a8).distill.utae.steps == 5
    assert resolve(a8).distill == load_config(ROOT / "params" / "embedded.yaml").distill


@pytest.mark.parametrize("preset", ["paper", "compare-gpu"])
def test_ferds_default_student_side_is_the_a8_conversion(preset):
    """With the defaults a baseline's own arm and FERD's distil identically: they differ in synthesis only."""
    from ferd.compare.config import Arm, load_compare, run_config

    if preset == "paper":
        cfgs = [load_config(ROOT / "params" / "cifar10-resnet18.yaml", [f"method={m}"]) for m in ("ferd", "fast")]
    else:
        cc = load_compare(preset)
        cfgs = [run_config(cc, Arm(m, cc.students[0], cc.seeds[0])) for m in ("ferd", "fast")]
    assert resolve(cfgs[1]).distill == resolve(cfgs[0]).distill == cfgs[0].distill


PAPER_PRESETS = sorted(p.stem for p in (ROOT / "params").glob("*.yaml")
                       if p.stem.split("-")[0] in ("cifar10", "cifar100", "tiny") and "rehearsal" not in p.stem)


@pytest.mark.parametrize("preset", PAPER_PRESETS + ["embedded", "ci"])
def test_paper_presets_run_the_configuration_that_works(preset):
    cfg = load_config(ROOT / "params" / f"{preset}.yaml")
    assert cfg.distill.utae.target == "student"
    assert cfg.distill.augment
    assert cfg.synthesis.bottleneck.threshold == "own"
    assert cfg.synthesis.generator.kind != "conditional"
    assert (cfg.distill.lambda1, cfg.distill.lambda2) == pytest.approx((1 / 6, 5 / 6))  # RSLAD's student side


def test_compare_gpu_runs_the_configuration_that_works():
    from ferd.compare.config import Arm, load_compare, run_config

    cc = load_compare("compare-gpu")
    cfg = run_config(cc, Arm(cc.reference, cc.students[0], cc.seeds[0]))
    assert cfg.distill.utae.target == "student" and cfg.distill.augment
    assert cfg.synthesis.generator.kind != "conditional"
    assert (cfg.distill.lambda1, cfg.distill.lambda2, cfg.distill.utae.gamma) == pytest.approx((1 / 6, 5 / 6, 0.0))


def test_paper_as_printed_is_the_text_exactly():
    cfg = load_config(ROOT / "params" / "paper-as-printed.yaml")
    assert cfg.distill.utae.target == "teacher" and not cfg.distill.augment
    assert cfg.synthesis.generator.kind == "conditional"
    assert cfg.synthesis.bottleneck.threshold == "global" and cfg.synthesis.bottleneck.mode == "paper"
    assert cfg.synthesis.lambda_uni == 5.0 and cfg.distill.utae.gamma == 0.5
    assert (cfg.distill.lambda1, cfg.distill.lambda2) == pytest.approx((5 / 6, 1 / 6))
    assert cfg.distill.utae.random_start == "uniform"
    assert cfg.synthesis.reweighting.strategy == "softmax" and cfg.synthesis.reweighting.samples == "all"


def test_synthesis_metrics_average_the_recorded_epochs():
    from ferd.synthesis.diversity import synthesis_metrics, synthesis_rows

    history = [{"epoch": 0, "round": 0, "within_label_share": 0.8, "teacher_confidence": 0.4, "teacher_accuracy": 0.5,
                "nonrobust_fraction": None},
               {"epoch": 1, "round": 0, "within_label_share": 0.6, "teacher_confidence": 0.6, "teacher_accuracy": 1.0,
                "nonrobust_fraction": 0.25},
               {"epoch": 2, "round": 1}]  # a history entry without the figures (an older run) is skipped
    assert [r["epoch"] for r in synthesis_rows(history)] == [0, 1]
    m = synthesis_metrics(history)
    assert m["synthesis.within_label_share.mean"] == pytest.approx(0.7)
    assert m["synthesis.teacher_accuracy.last"] == 1.0
    assert m["synthesis.nonrobust_fraction.mean"] == 0.25  # epochs without a mask do not count
