"""One distillation iteration on a fixed pool per student side, under ``torchrun`` or in one process
(tests/integration/test_distributed.py).

    [torchrun --nproc_per_node N] python tests/support/ddp_step.py OUT_DIR

For each of :data:`VARIANTS` builds the CI preset's round state (``params/ci.yaml`` with the variant's
overrides and one student iteration), a seeded random teacher and a pool of 64 random FAEs, runs
distillation epoch 0 and, on rank 0, saves the student's gradients, its parameters after the step and
the logged loss to ``OUT_DIR/<variant>.pt``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ferd.compute import distributed
from ferd.core import rng
from ferd.settings.config import FerdConfig
from ferd.plan.resolve import load_config, resolve
from ferd.models import create_model
from ferd.data.pool import Shard
from ferd.algorithm.round_state import RunState

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {
    "ferd": [],  # UTAEs against the student, crop augmentation
    "utae-cache": ["distill.utae.cache=pool", "distill.utae.target=teacher"],  # x_U from the pool
    "dfhl": ["method=dfhl"],  # high-entropy examples, one training pass
}


SYNTHESIS = {  # FERD's generator kinds (L_bn, L_oh, L_adv and L_uni with the bottleneck of Eq. 4-6)
    "reinit": [],
    "conditional": ["synthesis.generator.kind=conditional"],
    "marked-channels": ["synthesis.bottleneck.ratio=1"],  # σ² < v: the mask marks channels, L_uni reaches x
}


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    with distributed.process_group(load_config(ROOT / "params" / "ci.yaml")):
        for name, overrides in VARIANTS.items():
            step(load_config(ROOT / "params" / "ci.yaml", [*overrides, "distill.iterations=1"]),
                 Path(out_dir) / f"{name}.pt")
        for name, overrides in SYNTHESIS.items():
            synthesis(load_config(ROOT / "params" / "ci.yaml", overrides), Path(out_dir) / f"synthesis-{name}.pt")


def _teacher(cfg: FerdConfig) -> torch.nn.Module:
    with rng.seeded(0, "test-teacher"):
        return create_model(cfg.teacher.arch, num_classes=cfg.num_classes).eval().requires_grad_(False)


def synthesis(cfg: FerdConfig, out: Path) -> None:
    """One generation epoch (the CI preset's 2 generator iterations); rank 0 saves the kept batch and the
    per-iteration loss terms."""
    state = RunState.initial(resolve(cfg))
    p = torch.full((cfg.num_classes,), 1.0 / cfg.num_classes, dtype=torch.float64)
    res = state.synthesizer.run_epoch(_teacher(cfg), state.student, p, 0)
    if distributed.is_main():
        torch.save({"images": res.images, "labels": res.labels, "history": res.history,
                    "nonrobust": res.nonrobust_fraction, "share": res.teacher_top1_share}, out)


def step(cfg: FerdConfig, out: Path) -> None:
    """One distillation epoch of ``cfg`` on the fixed pool; rank 0 saves what the test compares."""
    state = RunState.initial(resolve(cfg))
    teacher = _teacher(cfg)
    g = torch.Generator().manual_seed(0)
    n = 64
    images = torch.rand(n, 3, 32, 32, generator=g)
    with torch.no_grad():
        logits = teacher(images)
    utaes = (images[:, None] + 0.03 * torch.randn(n, 2, 3, 32, 32, generator=g)).clamp(0, 1)
    state.pool.append(Shard(round=0, images=images, labels=logits.argmax(1), teacher_logits=logits,
                            class_weight=torch.full((n,), 0.1, dtype=torch.float64),
                            epochs=torch.zeros(n, dtype=torch.int32),
                            utaes=utaes if cfg.distill.utae.cache == "pool" else None))
    losses = state.distiller.run_epoch(teacher, state.pool, 0)
    if distributed.is_main():
        torch.save({"grads": {k: p.grad.clone() for k, p in state.student.named_parameters()},
                    "state": {k: v.clone() for k, v in state.student.state_dict().items()},
                    "loss": losses["loss"]}, out)


if __name__ == "__main__":
    main(*sys.argv[1:])
