"""``compute.amp: bf16``: synthesis and distillation under bfloat16 autocast still train, with finite losses."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ferd.core.checkpoint import load_state_dict
from ferd.plan.resolve import load_config

CI = Path(__file__).resolve().parents[2] / "params" / "ci.yaml"


def test_bf16_autocast_runs_and_changes_only_rounding(tmp_path, monkeypatch, single_thread):
    import ferd.evaluation.quick
    import ferd.stages.run as run_mod

    monkeypatch.setattr(ferd.evaluation.quick, "quick_evaluation", lambda *a, **k: {})  # no evaluation
    run_mod.run(load_config(CI), tmp_path / "fp32", progress=False)
    run_mod.run(load_config(CI, ["compute.amp=bf16"]), tmp_path / "bf16", progress=False)
    a, b = (load_state_dict(tmp_path / d / "student.safetensors") for d in ("fp32", "bf16"))
    assert all(v.dtype == a[k].dtype for k, v in b.items())  # weights stay fp32
    assert any(not torch.equal(a[k], b[k]) for k in a)  # bf16 rounding does change them
    history = json.loads((tmp_path / "bf16" / "history.json").read_text())
    assert all(torch.isfinite(torch.tensor(h["distill"]["loss"])) for h in history)


# ---- compute.fold_bn, compute.channels_last, compute.pool_on_device (ferd/compute/switches.py) -------------
import pytest  # noqa: E402

from ferd.compute.switches import attack_model, fold_batchnorm, keep_pool_on_device  # noqa: E402
from ferd.settings.config import ComputeConfig  # noqa: E402
from ferd.models import create_model  # noqa: E402

FOLD_TOLERANCE = 1e-5  # relative to the largest logit magnitude


@pytest.mark.parametrize("arch,left", [("cnn-16", 0), ("wrn-16-2", 6), ("resnet18", 0), ("mobilenetv2", 0),
                                       ("preactresnet18", 9)])
def test_folded_teacher_equals_the_teacher_within_rounding(arch, left, single_thread):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10).eval()
    for m in model.modules():  # non-trivial statistics, so that folding matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.5, 0.5)
    folded = fold_batchnorm(model)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules()) == left  # pre-act nets keep some
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    ref, got = model(x), folded(x)
    assert (ref - got).abs().max() <= FOLD_TOLERANCE * ref.abs().max()
    g_ref, = torch.autograd.grad(ref.sum(), x)
    g_got, = torch.autograd.grad(got.sum(), x)
    # the attack steps along sign(∇): rounding differences grow through depth, the signs agree
    assert (g_ref - g_got).abs().max() <= 1e-2 * g_ref.abs().max()
    assert (g_ref.sign() == g_got.sign()).float().mean() >= 0.99


def test_attack_model_is_made_once_and_stays_out_of_the_teacher(single_thread):
    teacher = create_model("cnn-8", num_classes=10).eval()
    keys = set(teacher.state_dict())
    assert attack_model(teacher, ComputeConfig()) is teacher
    folded = attack_model(teacher, ComputeConfig(fold_bn=True))
    assert attack_model(teacher, ComputeConfig(fold_bn=True)) is folded and set(teacher.state_dict()) == keys


def test_fold_bn_channels_last_and_device_pool_runs(tmp_path, monkeypatch, single_thread):
    import ferd.evaluation.quick
    import ferd.stages.run as run_mod

    monkeypatch.setattr(ferd.evaluation.quick, "quick_evaluation", lambda *a, **k: {})  # no evaluation
    base = ["distill.utae.target=teacher"]
    run_mod.run(load_config(CI, base), tmp_path / "plain", progress=False)
    run_mod.run(load_config(CI, [*base, "compute.pool_on_device=always"]), tmp_path / "pool", progress=False)
    run_mod.run(load_config(CI, [*base, "compute.fold_bn=true", "compute.channels_last=true"]), tmp_path / "fast",
                progress=False)
    plain, pool, fast = (load_state_dict(tmp_path / d / "student.safetensors") for d in ("plain", "pool", "fast"))
    assert all(torch.equal(plain[k], pool[k]) for k in plain)  # on the CPU the device pool is the same tensors
    assert all(v.is_contiguous() for v in fast.values())  # saved contiguous
    for k in plain:  # folding and NHWC change float rounding only
        assert torch.allclose(plain[k], fast[k], rtol=1e-2, atol=1e-3), k
    t = torch.zeros(4)
    assert not keep_pool_on_device("auto", "cpu", t, None) and keep_pool_on_device("always", "cpu", t, None)


def test_compile_wires_student_and_attack_teacher(tmp_path, monkeypatch, single_thread):
    """compute.compile with the aot_eager backend (no code generation: the wiring, not the speed)."""
    import ferd.evaluation.quick
    import ferd.stages.run as run_mod

    monkeypatch.setattr(ferd.evaluation.quick, "quick_evaluation", lambda *a, **k: {})  # no evaluation
    cfg = load_config(CI, ["distill.utae.target=teacher", "compute.compile=true", "compute.compile_backend=aot_eager",
                           "compute.fold_bn=true"])
    run_mod.run(cfg, tmp_path / "c", progress=False)
    student = load_state_dict(tmp_path / "c" / "student.safetensors")
    assert not any(k.startswith("_orig_mod") for k in student)  # in-place compile keeps the names
    history = json.loads((tmp_path / "c" / "history.json").read_text())
    assert all(torch.isfinite(torch.tensor(h["distill"]["loss"])) for h in history)
