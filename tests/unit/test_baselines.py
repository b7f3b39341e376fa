"""The baselines as ``method:`` choices: views, synthesis, A.8 conversion, DFHL's distillation, resume."""

from __future__ import annotations

import pytest
import torch

from ferd.stages.run import run_algorithm1
from ferd.algorithm.round_state import RunState
from ferd.plan.methods import method_class
from ferd.plan.resolve import resolve
from ferd.baselines.cmi import channel_means
from ferd.synthesis.epoch import SynthesisContext, Synthesizer
from ferd.baselines.views import crop_flip, resized_crop_flip, roll_flip
from ferd.core.params_io import ConfigError
from ferd.plan.resolve import load_config, parse_config
from ferd.models import create_model
from support.resume import killed_then_resumed

pytestmark = pytest.mark.usefixtures("single_thread")

BASELINES = ("deepinv", "cmi", "fast", "zskt", "dfhl")
TINY = dict(dataset="digits", epochs=2, seed=3, threat=dict(eps=0.1, step=0.025),
            teacher=dict(arch="cnn-4"), student=dict(arch="cnn-4"),
            synthesis=dict(iterations=2, batch_size=8, generator=dict(ngf=4, nz=8)),
            distill=dict(iterations=2, batch_size=8), baseline=dict(robust=dict(attack_steps=2),
                                                                 dfhl=dict(hee_steps=2)))


def _teacher():
    torch.manual_seed(0)
    return create_model("cnn-4", num_classes=10).eval().requires_grad_(False)


def _student():
    torch.manual_seed(1)
    return create_model("cnn-4", num_classes=10)


# ---- views -------------------------------------------------------------------------------------
def _image(n=3, size=8):
    return torch.arange(n * 3 * size * size, dtype=torch.float32).reshape(n, 3, size, size) / (n * 3 * size * size)


def test_crop_flip_is_an_exact_whole_pixel_shift_with_zero_padding():
    x = _image()
    got = crop_flip(x, 2, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)  # the same draws, in the same order
    dx, dy = (torch.randint(-2, 3, (3,), generator=g) for _ in range(2))
    flip = torch.rand(3, generator=g) < 0.5
    for i in range(3):
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))  # crop, then flip the crop
        want = padded[:, 2 + dy[i]:2 + dy[i] + 8, 2 + dx[i]:2 + dx[i] + 8]
        want = want.flip(2) if flip[i] else want
        assert torch.allclose(got[i], want, atol=1e-6), i


def test_resized_crop_at_full_scale_is_identity_or_flip_and_keeps_gradients():
    x = _image().requires_grad_(True)
    got = resized_crop_flip(x, torch.Generator().manual_seed(1), scale=(1.0, 1.0))
    for i in range(3):
        assert torch.allclose(got[i], x[i], atol=1e-6) or torch.allclose(got[i], x[i].flip(2), atol=1e-6)
    got.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_roll_flip_rolls_the_whole_batch():
    x = _image()
    got = roll_flip(x, 3, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    dx, dy = torch.randint(-3, 4, (2,), generator=g).tolist()
    want = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    want = want.flip(3) if torch.rand((), generator=g) < 0.5 else want
    assert torch.equal(got, want)


def test_channel_means_by_hand():
    a = torch.tensor([[[[1.0, 3.0]], [[2.0, 2.0]]]])  # 1 sample, 2 channels, 1×2
    b = torch.tensor([[[[5.0, 7.0, 9.0]]]])            # 1 sample, 1 channel, 1×3
    assert channel_means([a, b]).tolist() == [[2.0, 2.0, 7.0]]


def _synthesizer(method, cfg, seed):
    """The one generation loop running ``method`` on a 10-class, 32-pixel task."""
    return Synthesizer(method(SynthesisContext(cfg.synthesis, cfg.baseline, 10, 32, seed, "cpu")))


# ---- synthesis -----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", BASELINES)
def test_each_baseline_synthesises_images_in_the_box_deterministically(method):
    cfg = parse_config({**TINY, "method": method})
    outs = []
    for _ in range(2):
        syn = _synthesizer(method_class(method), cfg, cfg.seed)
        outs.append(syn.run_epoch(_teacher(), _student(), torch.full((10,), 0.1), epoch=0))
    a, b = outs
    assert a.images.shape == (8, 3, 32, 32) and 0 <= a.images.min() and a.images.max() <= 1
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.best_loss == min(h["gen"] for h in a.history)
    if method in ("zskt", "dfhl"):  # the teacher labels the kept batch (top-1)
        assert torch.equal(a.labels, _teacher()(a.images).argmax(1))


def test_fast_meta_generator_learns_from_the_clone_and_cmi_fills_its_bank():
    cfg = parse_config({**TINY, "method": "fast"})
    syn = _synthesizer(method_class("fast"), cfg, cfg.seed)
    before = [q.clone() for q in syn.generator.parameters()]
    syn.run_epoch(_teacher(), _student(), torch.full((10,), 0.1), epoch=0)
    assert any(not torch.equal(q, b) for q, b in zip(syn.generator.parameters(), before))
    assert len(syn.method.ema) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in _teacher().modules())
    cfg = parse_config({**TINY, "method": "cmi"})
    syn = _synthesizer(method_class("cmi"), cfg, cfg.seed)
    for epoch in range(2):
        syn.run_epoch(_teacher(), _student(), torch.full((10,), 0.1), epoch=epoch)
    width = sum(m.num_features for m in _teacher().modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert syn.method.bank.shape == (16, 2 * width)  # two kept batches of 8 rows: [f_local, f_global]


# ---- distillation: A.8 conversion and DFHL -------------------------------------------------------
def test_a8_conversion_of_the_four_dfkd_baselines():
    for method in ("deepinv", "cmi", "fast", "zskt"):
        plan = resolve(parse_config({**TINY, "method": method}))
        d = plan.distill
        assert plan.student_side == "a8" and plan.reweighting is None
        assert (d.utae.target, d.utae.gamma, d.utae.random_start, d.utae.steps) == ("student", 0.0, "gaussian", 2)
        assert (d.lambda1, d.lambda2) == pytest.approx((1 / 6, 5 / 6))  # RSLAD: 5/6 on the adversarial term
    ferd = parse_config(TINY)
    assert resolve(ferd).distill == ferd.distill and resolve(ferd).student_side == "given"
    # without its own attack_steps the conversion takes FERD's budget of attack steps
    budget = parse_config({**TINY, "method": "fast", "baseline": {}, "distill": {"utae": {"steps": 3}}})
    assert resolve(budget).distill.utae.steps == 3
    dfhl = resolve(parse_config({**TINY, "method": "dfhl"}))
    assert dfhl.distill == ferd.distill and dfhl.student_side == "own" and type(dfhl.side()).__name__ == "HeeSide"


def test_a_baseline_with_the_utae_cache_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"distill\.utae\.cache"):
        load_config(None, ["method=cmi", "distill.utae.target=teacher", "distill.utae.cache=pool"])
    with pytest.raises(ConfigError, match="method"):
        load_config(None, ["method=dfkd"])


def test_dfhl_distils_on_teacher_hard_labels_of_high_entropy_examples(monkeypatch):
    import ferd.baselines.dfhl as stage

    seen = {}
    real = stage.high_entropy_examples

    def spy(student, x, **kw):
        seen["x"] = real(student, x, **kw)
        return seen["x"]

    monkeypatch.setattr(stage, "high_entropy_examples", spy)
    cfg = parse_config({**TINY, "method": "dfhl", "epochs": 1})
    state = run_algorithm1(_teacher(), cfg, progress=False)
    assert "x" in seen and state.history[0]["distill"]["loss"] > 0
    assert state.history[0]["strategy"] == "uniform"  # baselines do not reweight


@pytest.mark.parametrize("method", BASELINES)
def test_each_baseline_resumes_bit_identically(method, tmp_path, monkeypatch):
    cfg = parse_config({**TINY, "method": method})
    a = run_algorithm1(_teacher(), cfg, progress=False)
    b = killed_then_resumed(_teacher, cfg, tmp_path, monkeypatch)
    for k, v in a.student.state_dict().items():
        assert torch.equal(v, b.student.state_dict()[k]), (method, k)
    assert isinstance(RunState.initial(resolve(cfg)).synthesizer.method, method_class(method))


def test_fast_fomaml_meta_step_by_hand():
    """Fast's meta update: the summed clone gradients feed Adam at lr = lr_g × inner steps; Adam's first
    step is −lr·g/(|g| + ε) ≈ −lr·sign(g). The BN EMA starts from the last step's statistics."""
    cfg = parse_config({**TINY, "method": "fast"})  # lr_g 2e-3 (default), 2 inner steps → meta lr 4e-3
    syn = _synthesizer(method_class("fast"), cfg, cfg.seed)
    before = [q.detach().clone() for q in syn.generator.parameters()]
    grads = [torch.full_like(q, 0.5) * (-1) ** i for i, q in enumerate(before)]
    stats = [(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]))]
    syn.method.meta_step(grads, stats)
    for i, (q, b) in enumerate(zip(syn.generator.parameters(), before)):
        assert torch.allclose(q.detach(), b - 4e-3 * (-1) ** i, atol=1e-7), i
    assert torch.equal(syn.method.ema[0][0], stats[0][0])
    syn.method.meta_step(grads, [(torch.tensor([3.0, 2.0]), torch.tensor([1.0, 4.0]))])
    assert torch.allclose(syn.method.ema[0][0], 0.9 * torch.tensor([1.0, 2.0]) + 0.1 * torch.tensor([3.0, 2.0]))


def test_every_method_is_registered_once_with_its_parameter_group():
    """FERD and each baseline are one registered class; a baseline's module is named after it and its
    parameter group (ferd.settings.baseline_config.BASELINE_CONFIGS) after its name."""
    from ferd.settings.baseline_config import BASELINE_CONFIGS
    from ferd.plan.methods import known_methods

    names = known_methods()
    assert set(names) == {"ferd", *BASELINE_CONFIGS}
    assert method_class("ferd").groups == () and method_class("ferd").reweights
    for name in set(names) - {"ferd"}:
        cls = method_class(name)
        assert cls.__module__ == f"ferd.baselines.{name}" and not cls.reweights
        assert cls.groups == ("baseline.robust", f"baseline.{name}")


def test_the_utae_cache_needs_ferds_student_side_whatever_the_method():
    """``distill.utae.cache: pool`` caches UTAEs against the teacher, so it needs the student side that runs
    ``distill.*`` as written: FERD's, or a baseline given FERD's (``baseline.robust.student_side: ferd``);
    a baseline on A.8's side (UTAEs against the student) or its own is refused with one line."""
    cache = {"distill": {"utae": {"cache": "pool", "target": "teacher"}}}
    assert resolve(parse_config({**TINY, **cache})).distill.utae.cache == "pool"
    given = {**TINY, **cache, "method": "fast", "baseline": {"robust": {"student_side": "ferd"}}}
    assert resolve(parse_config(given)).student_side == "given"
    for method in ("fast", "dfhl"):
        with pytest.raises(ConfigError, match=r"distill\.utae\.cache: 'pool' needs UTAEs against the teacher"):
            parse_config({**TINY, **cache, "method": method})


def test_a_method_of_an_installed_package_registers_through_its_entry_point(monkeypatch):
    import importlib.metadata
    import sys

    from ferd.plan import methods
    from ferd.settings.method import METHODS

    sys.modules.pop("support.throwaway_method", None)  # imported afresh, so it registers
    methods._load_shipped.cache_clear()  # the entry points are read once per process: read them again here
    found = [importlib.metadata.EntryPoint("pixel-ce", "support.throwaway_method", methods.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: found if group == methods.ENTRY_POINT_GROUP
                        else [])
    try:
        assert methods.method_class("pixel-ce").name == "pixel-ce" and "pixel-ce" in methods.known_methods()
    finally:
        METHODS.pop("pixel-ce", None)
        sys.modules.pop("support.throwaway_method", None)
    found[:] = [importlib.metadata.EntryPoint("broken", "no_such_module_of_anyone", methods.ENTRY_POINT_GROUP)]
    methods._load_shipped.cache_clear()
    with pytest.raises(ValueError, match=r"^method plugin 'broken' \(no_such_module_of_anyone, entry point group "
                                         r"ferd.methods\): cannot be imported \(ModuleNotFoundError"):
        methods.known_methods()
