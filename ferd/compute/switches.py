"""The GPU-path switches of ``compute:`` that change how, not what, synthesis and distillation compute.

* ``fold_bn`` — the frozen teacher's BatchNorm folded into the convolution before it, for the
  attack passes only (UTAEs of Eq. 10 against the teacher, cached or not, and the reweighting PGD
  of Eq. 1). :func:`fold_batchnorm` uses ``torch.fx.experimental.optimization.fuse`` (eval-mode
  Conv2d → BatchNorm2d pairs whose convolution output has no other user). Post-activation nets
  (ResNet, MobileNetV2, the CNNs) lose every BN; pre-activation nets (WRN, PreAct-ResNet) keep the
  BNs that follow a residual sum (WRN-16-2: 13 → 6; PreAct-ResNet-18: 17 → 9). Synthesis keeps the
  unfolded teacher (L_bn hooks its BN inputs), and so do the teacher logits stored in the pool.
  Logits equal the unfolded teacher's within 1e-5 of the largest logit, input gradients within 1 %
  of the largest with ≥ 99 % of their signs equal (tested per architecture); results change in the
  last bits, so the switch is in the stage fingerprints (``compute``).
* ``channels_last`` — teacher, student and generator weights in NHWC memory format (faster
  convolutions on tensor cores). Evaluation converts back: a channels_last model returns
  non-contiguous input gradients, which pyautoattack rejects (``../shared/notes/evaluation.md``).
* ``compile`` — ``torch.compile`` (``compile_backend``, ``compile_mode``) of the student, in place
  (``nn.Module.compile``: parameter names and checkpoints unchanged), and of the teacher's attack
  passes (a compiled wrapper; synthesis keeps the eager teacher, whose BN hooks would break graphs).
  The first iterations pay the compilation (tens of seconds on a CPU).
* ``pool_on_device`` — the pool tensors (FAEs, teacher logits, cached UTAEs) moved to the device
  once per distillation epoch instead of one batch at a time (``auto``: on CUDA when they take
  less than half of the free device memory).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ..settings.config import ComputeConfig

_ATTACK: weakref.WeakKeyDictionary[nn.Module, dict[tuple, nn.Module]] = weakref.WeakKeyDictionary()


def require_device(text: str, what: str = "device") -> torch.device:
    """The torch device ``text`` names, refused (ValueError, one line naming ``what``) when torch cannot
    use it on this machine: checked by the entry points before any work, not by the configuration, so
    parameters for a GPU cluster still validate and compile on a machine without one."""
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise ValueError(f"{what}: not a torch device: {text[:40]!r} (expected cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{what}: {text} requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"{what}: {text} requested but {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type != "cpu":
        raise ValueError(f"{what}: expected cpu, cuda or cuda:N, got {text[:40]!r}")
    return device


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A frozen, eval-mode copy of ``model`` (its ``forward`` only) with Conv2d → BatchNorm2d folded."""
    from torch.fx.experimental.optimization import fuse

    return fuse(model.eval(), inplace=False).eval().requires_grad_(False)


def attack_model(teacher: nn.Module, compute: ComputeConfig) -> nn.Module:
    """The teacher the attack passes run on: itself, or its BN-folded copy and/or a compiled wrapper
    (``compute.fold_bn``, ``compute.compile``); made once per teacher and setting."""
    key = (compute.fold_bn, compile_settings(compute))
    if key == (False, None):
        return teacher
    cache = _ATTACK.setdefault(teacher, {})
    if key not in cache:
        model = fold_batchnorm(teacher) if compute.fold_bn else teacher
        if key[1] is not None:
            model = torch.compile(model, backend=key[1][0], mode=_mode(key[1][1]))
        cache[key] = model
    return cache[key]


def compile_settings(compute: ComputeConfig) -> tuple[str, str] | None:
    """(backend, mode) when ``compute.compile`` is on, else None."""
    return (compute.compile_backend, compute.compile_mode) if compute.compile else None


def compile_in_place(model: nn.Module, settings: tuple[str, str] | None) -> nn.Module:
    if settings is not None:
        model.compile(backend=settings[0], mode=_mode(settings[1]))
    return model


def _mode(mode: str) -> str | None:
    return None if mode == "default" else mode


def set_memory_format(model: nn.Module, channels_last: bool) -> nn.Module:
    """``model`` with its 4-D weights in channels_last (or back to contiguous) memory format."""
    return model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def keep_pool_on_device(mode: str, device: str | torch.device, *tensors: torch.Tensor | None) -> bool:
    """Whether the pool ``tensors`` (None entries ignored) go to the device once per epoch, not per
    batch (``compute.pool_on_device``)."""
    if mode != "auto":
        return mode == "always"
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        return False
    nbytes = sum(t.numel() * t.element_size() for t in tensors if t is not None)
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return nbytes < free // 2
