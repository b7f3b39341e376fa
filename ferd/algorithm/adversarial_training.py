"""PGD adversarial training (Madry et al., 2018) of a teacher where none can be downloaded (the embedded
digits task; ``teacher.source: train:<dataset>``, :mod:`ferd.algorithm.teacher_source`). FERD itself distils a *given*
robust teacher (§3, §5.1: RobustBench WRN-34-10 on CIFAR, PreActResNet-34 on Tiny-ImageNet).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..attacks import pgd
from ..data.augment import random_crop


def train_robust_teacher(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float,
                         steps: int, epochs: int, batch_size: int, lr: float, momentum: float = 0.9,
                         weight_decay: float = 5e-4, seed: int, augment: bool = False,
                         progress: bool = True) -> nn.Module:
    """PGD adversarial training (Madry et al., 2018): min_θ E max_{‖δ‖∞≤ε} CE(f(x+δ), y).

    Each iteration crafts PGD-``steps`` examples (step ``alpha``, uniform random start,
    :func:`ferd.attacks.pgd`) with the model in ``eval()`` mode — so the attack neither
    uses batch statistics nor moves the BatchNorm running averages — then takes one SGD
    step (``momentum``, ``weight_decay``) on their cross-entropy in ``train()`` mode. The
    learning rate follows a cosine schedule from ``lr`` to 0 over all iterations. Shuffling,
    random starts and the optional random crop (zero-pad 4, no flip) all draw from
    generators seeded with ``seed``, so two runs with the same seed on the same device give
    identical weights. A final batch of a single image is skipped (BatchNorm needs two).
    Trains in place and returns ``model`` in ``eval()`` mode.
    """
    if x.ndim != 4 or len(x) != len(y):
        raise ValueError(f"x, y: expected N×C×H×W images and N labels, got {tuple(x.shape)} and {tuple(y.shape)}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value}")
    device = next(model.parameters()).device
    model.requires_grad_(True)
    shuffle_gen = torch.Generator().manual_seed(seed)
    attack_gen = torch.Generator(device=device).manual_seed(seed + 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    per_epoch = math.ceil(len(x) / batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * per_epoch)
    bar = tqdm(total=epochs * per_epoch, disable=not progress, desc="adversarial training", unit="it")
    try:
        for epoch in range(epochs):
            order = torch.randperm(len(x), generator=shuffle_gen)
            for start in range(0, len(x), batch_size):
                idx = order[start:start + batch_size]
                xb, yb = x[idx].to(device), y[idx].to(device)
                if augment:
                    xb = random_crop(xb, 4, shuffle_gen)
                if len(idx) > 1:
                    model.eval()
                    x_adv = pgd(model, xb, yb, eps, alpha, steps, generator=attack_gen)
                    model.train()
                    logits = model(x_adv)
                    loss = F.cross_entropy(logits, yb)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    acc = (logits.argmax(1) == yb).float().mean().item()
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", adv_acc=f"{acc:.3f}")
                scheduler.step()
                bar.update(1)
    finally:
        bar.close()
        model.eval()
    return model
