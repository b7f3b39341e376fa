"""``distill.utae.cache: pool``: UTAEs against the teacher computed once per FAE and stored in the pool."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ferd.core import rng
from ferd.core.checkpoint import load_state_dict
from ferd.core.params_io import ConfigError
from ferd.plan.resolve import load_config
from ferd.distill.utae import cache_utaes, generate_utae, utae_start
from ferd.models import create_model
from ferd.data.pool import FaePool, Shard, read_shard, write_shard
from ferd.stages.pool_store import load_pool
from ferd.stages import run_stages

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "params" / "ci.yaml"
CACHE = ["distill.utae.cache=pool", "distill.utae.target=teacher", "distill.utae.cache_starts=2"]


def test_cache_with_student_target_is_refused():
    with pytest.raises(ConfigError, match="distill.utae.cache: 'pool' needs distill.utae.target: teacher"):
        load_config(CI, ["distill.utae.cache=pool", "distill.utae.target=student"])
    with pytest.raises(ConfigError, match="cache_starts"):
        load_config(CI, [*CACHE[:2], "distill.utae.cache_starts=0"])


def test_cached_utaes_equal_the_attack_run_directly(single_thread):
    torch.manual_seed(0)
    teacher = create_model("cnn-8", num_classes=10).eval().requires_grad_(False)
    x = torch.rand(5, 3, 32, 32)
    logits = teacher(x)
    kw = dict(eps=8 / 255, alpha=2 / 255, steps=3, gamma=0.5)
    got = cache_utaes(teacher, x, logits, **kw, random_start="uniform", starts=2,
                      generator=rng.generator(0, "utae-cache", 0), batch_size=2)
    assert got.shape == (5, 2, 3, 32, 32)
    g = rng.generator(0, "utae-cache", 0)
    expected = [torch.cat([generate_utae(teacher, x[lo:lo + 2], logits[lo:lo + 2], **kw,
                                         start=utae_start(x[lo:lo + 2], 8 / 255, "uniform", g))
                           for lo in range(0, 5, 2)]) for _ in range(2)]
    for k in range(2):
        assert torch.equal(got[:, k], expected[k])
    assert (got - x[:, None]).abs().max() <= 8 / 255 + 1e-6 and got.min() >= 0 and got.max() <= 1
    assert not torch.equal(got[:, 0], got[:, 1])  # two random starts


def test_pool_keeps_cached_utaes_bit_exact(tmp_path):
    n = 4
    shard = Shard(round=0, images=torch.rand(n, 3, 8, 8), labels=torch.arange(n), teacher_logits=torch.randn(n, 10),
                  class_weight=torch.rand(n, dtype=torch.float64), epochs=torch.zeros(n, dtype=torch.int32),
                  utaes=torch.rand(n, 3, 3, 8, 8))
    back = read_shard(write_shard(shard, tmp_path))
    assert torch.equal(back.utaes, shard.utaes) and torch.equal(back.images, shard.images)
    pool = FaePool.load(tmp_path)
    assert pool.utaes().shape == (n, 3, 3, 8, 8)
    plain = Shard(round=0, images=shard.images, labels=shard.labels, teacher_logits=shard.teacher_logits,
                  class_weight=shard.class_weight, epochs=shard.epochs)
    assert read_shard(write_shard(plain, tmp_path / "plain")).utaes is None
    p2 = FaePool()
    p2.append(plain)
    with pytest.raises(ValueError, match="no cached UTAEs"):
        p2.utaes()


def test_cached_run_is_bit_identical_across_the_stage_split_and_skips_the_teacher(tmp_path, single_thread,
                                                                                   monkeypatch):
    import ferd.evaluation.quick
    import ferd.stages.run as run_mod

    cfg = load_config(CI, CACHE)
    monkeypatch.setattr(ferd.evaluation.quick, "quick_evaluation", lambda *a, **k: {})  # no evaluation
    run_mod.run(cfg, tmp_path / "single", progress=False)
    # count teacher calls during distillation: with the cache there are none
    import ferd.distill.side as dist_stage

    calls = {"generate_utae": 0}
    real = dist_stage.generate_utae

    def counting(*a, **k):
        calls["generate_utae"] += 1
        return real(*a, **k)

    monkeypatch.setattr(dist_stage, "generate_utae", counting)
    paths = run_stages(cfg, tmp_path / "split", evaluate=False)
    assert calls["generate_utae"] == 0
    ref = load_state_dict(tmp_path / "single" / "student.safetensors")
    got = load_state_dict(paths["distillation"] / "student.safetensors")
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    pool = load_pool(cfg, paths["pool-store"])
    assert pool.utaes().shape[1] == 2 and len(pool) == pool.utaes().shape[0]
