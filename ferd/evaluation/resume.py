"""Finished attacks kept while an evaluation runs, so an interrupted one resumes at the attack it was in.

An evaluation is the longest step after training (AutoAttack on a CIFAR test set takes hours), and a run stopped
in it would otherwise attack every model again from the first attack. Each (model, attack) outcome is written,
as soon as it is known, to ``<partial>/<model>.<attack>.npz``: its predictions, its wall time, and the key it was
made under, the sha256 of the model's parameters and buffers, the examples and labels, and every setting the
attack draws on (its own settings, ε, step, seed, batch size, number of classes, device, torch). The attacks are
seeded per (seed, model, attack) and leave the global RNG alone (:func:`ferd.evaluation.runner.attack_seed`), so
an attack read back is the attack the evaluation would have run, and the report is the same bytes.

A file is read back only when its key is the evaluation's and it holds N predictions in [0, C); anything else (a
file from another model or setting, a truncated or edited one) is ignored with a warning and the attack runs
again. The caller removes the folder once the evaluation is written (:func:`partial_dir`), before any manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.checkpoint import atomic_write_bytes

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"


def partial_dir(out_dir: Path) -> Path:
    """Where the finished attacks of the evaluation written to ``out_dir`` are kept until it is written."""
    return out_dir.with_name(out_dir.name + PARTIAL_SUFFIX)


def _update(h: "hashlib._Hash", t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def model_digest(model: nn.Module) -> str:
    """sha256 of a model's class and every parameter and buffer (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        _update(h, t)
    return h.hexdigest()


def examples_digest(x: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 of the examples and their labels."""
    h = hashlib.sha256()
    _update(h, x)
    _update(h, y)
    return h.hexdigest()


def attack_key(model: str, attack: str, model_sha: str, examples_sha: str, settings: dict) -> str:
    """The key one (model, attack) outcome is kept under: everything that decides its predictions."""
    data = {"model": model, "attack": attack, "model_sha256": model_sha, "examples_sha256": examples_sha,
            "settings": settings, "torch": torch.__version__}
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
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as exc:
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
