"""Finished attacks kept while an evaluation runs, so an interrupted one resumes at the attack it was in.

An evaluation is the longest step after training (AutoAttack on a CIFAR test set takes hours), and a run stopped
in it would otherwise attack every model again from the first attack. Each (model, attack) outcome is written,
as soon as it is known, to ``<partial>/<model>.<attack>.npz``: its predictions, its wall time, and the key it was
made under, the sha256 of the model (its layers as ``repr`` gives them, every parameter and every buffer,
the normalisation's included), the examples and labels, every setting the attack draws on (its own settings, ε,
step, seed, batch size, number of classes, device) and what decides the arithmetic (torch, the CPU kernels it
uses, its thread count, the GPU's name). The attacks are seeded per (seed, model, attack) and leave the global RNG
alone (:func:`ferd.evaluation.runner.attack_seed`), so an attack read back gives the predictions the evaluation
would have made; the report's time for it is the time it took when it ran.

A file is read back only when its key is the evaluation's and it holds N predictions in [0, C); anything else (a
file from another model or setting, a truncated or edited one) is ignored with a warning and the attack runs
again. The caller removes the folder once the evaluation is written (:func:`partial_dir`), before any manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.checkpoint import atomic_write_bytes

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"


def partial_dir(out_dir: Path) -> Path:
    """Where the finished attacks of the evaluation written to ``out_dir`` are kept until it is written (beside
    it: ``eval`` → ``eval.partial``)."""
    out_dir = out_dir.resolve()
    return out_dir.with_name(out_dir.name + PARTIAL_SUFFIX)


def remove_partial(folder: Path) -> None:
    """Remove the kept attacks once the evaluation is written (an error if they cannot be: they must not stay
    beside files a manifest then lists)."""
    if folder.exists():
        shutil.rmtree(folder)


def _update(h: "hashlib._Hash", t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def model_digest(model: nn.Module) -> str:
    """sha256 of a model's class and layers (``repr``) and every parameter and buffer, those left out of its
    ``state_dict`` included (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}\n{model!r}".encode())
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        h.update(name.encode())
        _update(h, t)
    return h.hexdigest()


def arithmetic(device: str) -> dict[str, object]:
    """What decides an attack's floating-point sums besides its inputs: torch, the CPU kernels (their instruction
    set, as the AVX2 pins of docs/reproducibility.md set it), the thread count and, on a GPU, its name."""
    dev = torch.device(device)
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None}


def examples_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 of the examples and their labels."""
    h = hashlib.sha256()
    _update(h, x)
    _update(h, y)
    return h.hexdigest()


def attack_key(model: str, attack: str, model_sha: str, examples_sha: str, settings: dict) -> str:
    """The key one (model, attack) outcome is kept under: everything that decides its predictions (``settings``:
    the attack's and the evaluation's, with :func:`arithmetic`)."""
    data = {"model": model, "attack": attack, "model_sha256": model_sha, "examples_sha256": examples_sha,
            "settings": settings}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _path(folder: Path, model: str, attack: str) -> Path:
    return folder / f"{model}.{attack}.npz"


def save_attack(folder: Path, model: str, attack: str, key: str, predictions: np.ndarray, seconds: float) -> None:
    """Keep one finished (model, attack) (written atomically)."""
    buf = io.BytesIO()
    np.savez(buf, key=np.array(key), predictions=predictions.astype(np.int64), seconds=np.array(float(seconds)))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(_path(folder, model, attack), buf.getvalue())


def load_attack(folder: Path, model: str, attack: str, key: str, n: int,
                num_classes: int) -> tuple[np.ndarray, float] | None:
    """The predictions and seconds of a kept (model, attack) made under ``key``, or None (nothing kept, or a file
    that is not one: ignored with a warning, and the attack runs again)."""
    path = _path(folder, model, attack)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            kept_key, pred, seconds = str(data["key"][()]), np.asarray(data["predictions"]), float(data["seconds"])
    except Exception as exc:  # noqa: BLE001  an untrusted file: whatever numpy or zlib raise on it
        logger.warning("%s: not a kept attack (%s); running %s/%s again", path, exc, model, attack)
        return None
    if kept_key != key:
        logger.warning("%s: kept under other settings, model or examples; running %s/%s again", path, model, attack)
        return None
    if pred.dtype != np.int64 or pred.shape != (n,) or (n and (pred.min() < 0 or pred.max() >= num_classes)) \
            or not np.isfinite(seconds) or seconds < 0:
        logger.warning("%s: expected %d predictions in [0, %d); running %s/%s again", path, n, num_classes, model,
                       attack)
        return None
    return pred, seconds
