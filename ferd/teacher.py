"""The robust teacher: safe strict loading, and PGD adversarial training for the embedded task.

FERD distils a *given* adversarially robust teacher (§3, §5.1: RobustBench WRN-34-10 on
CIFAR, PreActResNet-34 on Tiny-ImageNet). :func:`load_model` builds the architecture from
the registry and loads a checkpoint strictly (via :mod:`ferd.checkpoint`, never plain
unpickling). :func:`train_robust_teacher` makes a teacher where none can be downloaded
(the embedded digits task): Madry et al. PGD adversarial training.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .attacks import pgd
from .augment import random_crop
from .checkpoint import load_state_dict
from .models import FerdModel, create_model

IGNORED_PREFIXES = ("sub_block1.",)
"""Keys dropped by name: TRADES-era WideResNets (RobustBench ``sub_block1=True``) store an
unused ``sub_block1`` network block that the forward pass never touches."""


def _classifier_name(model: nn.Module) -> str:
    """Name of the last ``nn.Linear`` (the classifier: ``fc`` or ``linear``)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__}: no nn.Linear classifier found")
    return names[-1]


def _listing(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], num_classes: int,
                     where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Drop ignored keys, then require the exact keys and shapes of ``model.state_dict()``.

    Raises ValueError saying expected vs found for a wrong number of classes, and listing
    every missing key, unexpected key and shape mismatch otherwise.
    """
    state = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}
    expected = model.state_dict()
    fc_key = f"{_classifier_name(model)}.weight"
    if fc_key in state and state[fc_key].ndim == 2 and state[fc_key].shape[0] != num_classes:
        raise ValueError(f"{where}: num_classes mismatch: expected {num_classes} classes, found "
                         f"{state[fc_key].shape[0]} rows in {fc_key}")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k}: expected {tuple(expected[k].shape)}, found {tuple(state[k].shape)}"
                    for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {_listing(shapes)}")
    if problems:
        raise ValueError(f"{where}: does not match architecture {type(model).__name__}; " + "; ".join(problems))
    return state


def load_model(path: str | os.PathLike[str], arch: str, num_classes: int,
               mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
               sha256: str | None = None) -> FerdModel:
    """Build ``arch`` from the registry and load the checkpoint at ``path`` strictly.

    ``mean``/``std`` add in-model normalisation (``None``: inputs used as they are, like
    RobustBench's CIFAR L∞ models). ``sha256`` is verified before parsing. Returns the
    model on the CPU in ``eval()`` mode with ``requires_grad=False`` on every parameter.
    """
    state = load_state_dict(path, sha256=sha256)
    model = create_model(arch, num_classes=num_classes, mean=mean, std=std)
    state = check_state_dict(model, state, num_classes, where=str(path))
    model.load_state_dict(state, strict=True)
    model.eval()
    model.requires_grad_(False)
    return model


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
