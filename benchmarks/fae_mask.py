"""Is the FAE mask of Eq. 6 informative? The non-robust channel fraction under each reading.

On the shared robust CIFAR-10 teacher (WRN-16-2) and a seeded class-stratified subset of
``../shared/data/cifar10_test.npz`` (and, with ``--faes``, on one synthesis epoch of FAEs made
against the same teacher), fits the bottleneck of Eq. 4-5 at the configured layer and reports,
for each ``bottleneck.threshold`` (global = Eq. 6 as printed, own = σ_k² < τ·v_k) and each
``bottleneck.mode`` (paper / authors):

(each at β = 0.3 and 0.03):

- ``fraction``: the share of channels (paper) or sample-channels (authors) marked non-robust;
- ``shift_nr`` / ``shift_r``: how far a PGD-10 attack on the teacher (ε 8/255, step 2/255) moves
  the masked and the unmasked channels, |Z_k(x_adv) − Z_k(x)| averaged over samples and
  positions, in units of the channel's clean standard deviation. A mask that separates
  non-robust from robust channels has ``shift_nr`` > ``shift_r``.

Run from the repository root::

    .venv/bin/python benchmarks/fae_mask.py --n 256 --faes --out benchmarks/results/fae_mask.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ferd.attacks import pgd
from ferd.settings.config import BottleneckConfig
from ferd.plan.resolve import load_config, resolve
from ferd.data import load_split
from ferd.evaluation.runner import stratified_subset
from ferd.synthesis.bottleneck import channel_variance, fit_noise_scale, non_robust_mask
from ferd.models.loading import load_model

VARIANTS = [(mode, threshold, beta) for mode in ("paper", "authors") for threshold in ("global", "own")
            for beta in (0.3, 0.03)]
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def mask_report(teacher, x: torch.Tensor, y: torch.Tensor, layer: str, base: BottleneckConfig, seed: int
                ) -> list[dict]:
    with torch.no_grad():
        z = teacher.features(x, layer)
    x_adv = pgd(teacher, x, y, 8 / 255, 2 / 255, 10, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        z_adv = teacher.features(x_adv, layer)
    std = channel_variance(z, "paper").clamp_min(1e-8).sqrt()
    shift = ((z_adv - z).abs() / std.view(1, -1, 1, 1)).mean(dim=(2, 3))  # B×C
    rows = []
    for mode, threshold, beta in VARIANTS:
        cfg = base.model_copy(update={"mode": mode, "threshold": threshold, "beta": beta})
        sigma2, v = fit_noise_scale(teacher, z, y, layer, mode, cfg.iterations, cfg.lr, cfg.beta,
                                    torch.Generator().manual_seed(seed), threshold)
        mask = non_robust_mask(sigma2, v, mode, threshold, cfg.ratio).flatten(1).expand_as(shift).bool()
        rows.append({"mode": mode, "threshold": threshold, "beta": beta, "fraction": float(mask.float().mean()),
                     "shift_nr": float(shift[mask].mean()) if mask.any() else None,
                     "shift_r": float(shift[~mask].mean()) if (~mask).any() else None})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=256, help="test images (stratified)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--faes", action="store_true", help="also one synthesis epoch of FAEs against the teacher")
    ap.add_argument("--params", default="params/cifar10-resnet18.yaml", help="bottleneck and synthesis settings")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    cfg = load_config(args.params, ["device=cpu", "teacher.arch=wrn-16-2", "synthesis.batch_size=64",
                                    "synthesis.iterations=30", "synthesis.generator.ngf=32"])
    teacher = load_model(SHARED / "models" / "wrn-16-2_cifar10_linf.safetensors", "wrn-16-2", 10).eval()
    teacher.requires_grad_(False)
    layer = teacher.check_layer(cfg.synthesis.layer)
    x, y = load_split("cifar10", "test", root=SHARED / "data")
    idx = torch.from_numpy(stratified_subset(y, args.n, seed=args.seed))
    result = {"test_images": mask_report(teacher, x[idx], y[idx], layer, cfg.synthesis.bottleneck, args.seed)}
    if args.faes:
        from ferd.models import create_model

        student = create_model("cnn-32", num_classes=10)
        syn = resolve(cfg.model_copy(update={"seed": args.seed})).synthesizer(10, 32)
        out = syn.run_epoch(teacher, student, torch.full((10,), 0.1, dtype=torch.float64), 0)
        result["faes"] = mask_report(teacher, out.images, out.labels, layer, cfg.synthesis.bottleneck, args.seed)
    for where, rows in result.items():
        for r in rows:
            print(f"{where:12s} {r['mode']:8s} {r['threshold']:7s} β {r['beta']:<5g} fraction {r['fraction']:.4f}  "
                  f"shift non-robust {r['shift_nr']}  robust {r['shift_r']}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"args": vars(args), **result}, indent=1))


if __name__ == "__main__":
    main()
