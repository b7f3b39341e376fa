"""Finished attacks kept while an evaluation runs, so an interrupted one resumes at the attack it was in.

An evaluation is the longest step after training (AutoAttack on a CIFAR test set takes hours), and a run stopped
in it would otherwise attack every model again from the first attack. Each (model, attack) outcome is written,
as soon as it is known, to ``<partial>/<model>.<attack>.npz``: its predictions, its wall time, and the key it was
made under, the sha256 of the model (its layers as ``repr`` gives them, every parameter and every buffer,
the normalisation's included), of the code that computes it (ferd's sources, and the source files of a model's or
attack's classes defined elsewhere: a plugin), the examples and labels, every setting the attack draws on (its own
settings, ε, step, seed, batch size, number of classes, device) and what decides the arithmetic (torch, the CPU and
the kernels it uses, its thread count, the GPU's name). The attacks are seeded per (seed, model, attack) and leave the global RNG
alone (:func:`ferd.evaluation.runner.attack_seed`), so an attack read back gives the predictions the evaluation
would have made; the report's time for it is the time it took when it ran.

A file is read back only when its key is the evaluation's and it holds N predictions in [0, C); anything else (a
file from another model, code or setting, a truncated or edited one) is ignored with a warning naming what is wrong,
and the attack runs again; a folder or a kept file that is not one (a file in place of the folder, a folder in
place of a file) is refused in one line before any attack. The caller removes the folder once it has recorded the
evaluation's result (:func:`remove_partial`), before any manifest lists the files beside it.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import io
import json
import logging
import os
import platform
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..core.checkpoint import atomic_write_bytes
from ..core.provenance import PACKAGE, package_sources

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"


def partial_dir(out_dir: Path) -> Path:
    """Where the finished attacks of the evaluation written to ``out_dir`` are kept until it is written (beside
    it: ``eval`` → ``eval.partial``)."""
    out_dir = out_dir.resolve()
    return out_dir.with_name(out_dir.name + PARTIAL_SUFFIX)


def check_partial(folder: Path) -> None:
    """Before any attack: the folder of kept attacks is a folder (created if absent, so an unwritable place fails
    now, not after the first attack), and each kept entry a file; else one line naming it."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder}: expected the folder of an evaluation's kept attacks, found a file; move it away")
    folder.mkdir(parents=True, exist_ok=True)
    odd = sorted(p.name for p in folder.iterdir() if p.suffix == ".npz" and not p.is_file())
    if odd:
        raise ValueError(f"{folder}: {odd[0]}: expected a kept attack's file, found something else; move it away")


def remove_partial(folder: Path) -> None:
    """Remove the kept attacks once the evaluation's result is recorded (an error if they cannot be: they must not
    stay beside files a manifest then lists)."""
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
    """What decides an attack's floating-point sums besides its inputs: torch, the CPU (its model: oneDNN picks its
    kernels by it unless pinned) and its kernels (their instruction set, as the AVX2 pins of
    docs/reproducibility.md set it), the thread count and, on a GPU, its name."""
    dev = torch.device(device)
    return {"torch": torch.__version__, "cpu": _cpu_model(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"), "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None}


@functools.cache
def _cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what :mod:`platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}".strip()


_TORCH = Path(torch.__file__).resolve().parent


@functools.cache
def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.cache
def _ferd_sources() -> str:
    """sha256 of ferd's own sources: every ``.py`` of the package, by path and bytes."""
    h = hashlib.sha256()
    for path in package_sources():
        h.update(f"{path.relative_to(PACKAGE).as_posix()}\n{_file_digest(path)}\n".encode())
    return h.hexdigest()


def code_digest(objects: Iterable[object]) -> str:
    """sha256 of the code that computes an attack on a model: ferd's sources and, for each class of ``objects``
    (a model's modules, the attack) and its bases defined outside ferd and torch, its source file (a plugin's
    model or attack; torch's is its version in :func:`arithmetic`)."""
    files = set()
    for cls in {c for obj in objects for c in type(obj).__mro__}:
        try:
            source = inspect.getsourcefile(cls)
        except TypeError:  # a builtin
            continue
        path = Path(source).resolve() if source else None
        if path is not None and path.is_file() and PACKAGE not in path.parents and _TORCH not in path.parents:
            files.add(path)
    h = hashlib.sha256(_ferd_sources().encode())
    for path in sorted(files):
        h.update(f"{path}\n{_file_digest(path)}\n".encode())
    return h.hexdigest()


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
        logger.warning("%s: kept under other settings, code, model or examples; running %s/%s again", path, model,
                       attack)
        return None
    wrong = ("predictions", f"expected {n} int64 labels in [0, {num_classes})") \
        if pred.dtype != np.int64 or pred.shape != (n,) or (n and (pred.min() < 0 or pred.max() >= num_classes)) \
        else ("seconds", "expected a finite number ≥ 0") if not np.isfinite(seconds) or seconds < 0 else None
    if wrong is not None:
        logger.warning("%s: %s: %s; running %s/%s again", path, *wrong, model, attack)
        return None
    return pred, seconds
