"""Safe, atomic checkpoint I/O (tensors only).

* Writing is atomic: data goes to a temporary file in the destination directory, is
  fsync'd, then ``os.replace``d onto the target (and the directory fsync'd), so a reader
  never sees a half-written file and a crash leaves the old file intact.
* Reading never unpickles arbitrary objects: ``.safetensors`` via safetensors, anything
  else via ``torch.load(..., weights_only=True)``. A pickle that would import or call
  code (``__reduce__`` to ``os.system`` …) is refused *before* anything runs; corrupt or
  truncated files, NaN/Inf weights and wrong hashes are refused with errors naming the
  path, the key or the expected and actual hash.
* Layouts of RobustBench / TRADES / DataParallel checkpoints are normalised:
  ``{'state_dict': …}`` and ``{'model': …}`` are unwrapped, ``module.`` / ``model.`` key
  prefixes are stripped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import uuid
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

PathLike = str | os.PathLike[str]
_PREFIXES = ("module.", "model.")


def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of the file at ``path`` (read in chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is fsync'd and renamed onto ``path``.

    If the block raises, the temporary file is removed and ``path`` is left untouched.
    The parent directory is created if needed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic_path: nothing was written to the temporary file for {target}")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror, str(target)) from exc  # a full disk's error names the file
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def json_safe(value: Any) -> Any:
    """Strict JSON's values: NaN / ±inf → None (``null``: an undefined statistic, e.g. an NSD of 0/0), numpy
    scalars → Python, recursively. Every JSON file ferd writes goes through it."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_json_object(path: PathLike, error: type[ValueError] = ValueError, what: str = "JSON record") -> dict:
    """A JSON file read back (untrusted) that must hold an object; ``error`` naming the file otherwise."""
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise error(f"{path}: not a readable {what} ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, got a JSON {type(data).__name__}")
    return data


def read_json_object_or_none(path: PathLike) -> dict | None:
    """:func:`read_json_object`, or None where the file is missing, unreadable or not an object (a record whose
    absence is itself the answer, e.g. a run that has not finished)."""
    try:
        return read_json_object(path)
    except ValueError:
        return None


def atomic_write_json(path: PathLike, data: object) -> Path:
    """Write ``data`` as indented, key-sorted, strict JSON (:func:`json_safe`; one trailing newline) to ``path``,
    atomically."""
    atomic_write_bytes(path, (json.dumps(json_safe(data), indent=2, sort_keys=True, allow_nan=False) + "\n").encode())
    return Path(path)


def _canonical_safetensors(data: bytes) -> bytes:
    """The same safetensors file with its JSON header written with sorted keys.

    safetensors serialises the ``__metadata__`` map in a per-process random order, so
    identical tensors and metadata would hash differently from one process to the next;
    sorting makes the bytes (and the sha256 that lineage records) a function of the content.
    Readers do not depend on key order; data offsets are relative to the end of the header.
    """
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned, as safetensors pads
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


def save_state_dict(state: Mapping[str, torch.Tensor], path: PathLike,
                    metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors at ``path``, atomically and byte-deterministically
    (see :func:`_canonical_safetensors`); ``metadata`` is string → string."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"state_dict[{key!r}]: expected a tensor, got {type(value).__name__}")
        # clone: safetensors refuses tensors that share storage (tied or viewed weights)
        tensors[key] = value.detach().to("cpu").contiguous().clone()
    if metadata is not None:
        bad = {k: v for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)}
        if bad:
            raise ValueError(f"metadata: keys and values must be strings, got {bad}")
    atomic_write_bytes(path, _canonical_safetensors(save(tensors, metadata=metadata)))


def read_metadata(path: PathLike) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file (empty dict when it has none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc


def verify_sha256(path: PathLike, sha256: str) -> None:
    """Raise ValueError unless the file's sha256 equals ``sha256`` (case-insensitive)."""
    actual = sha256_file(path)
    if actual != sha256.strip().lower():
        raise ValueError(f"{path}: sha256 mismatch: expected {sha256.strip().lower()}, got {actual}; "
                         "refusing to load")


def _torch_load(path: Path) -> object:
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # The restricted unpickler stops at the first global, call or opcode outside its
        # allow-list, before anything runs: code, non-tensor objects, or garbage bytes.
        msg = str(exc)
        detail = msg.split("WeightsUnpickler error:")[-1].strip().split("\n")[0] if "WeightsUnpickler error:" in msg \
            else msg.strip().split("\n")[0]
        raise ValueError(f"{path}: refused: not a plain tensor checkpoint (torch.load(weights_only=True) "
                         f"rejected it: {detail}; nothing in it was executed). If you trust it, convert it "
                         "to safetensors in a trusted environment.") from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError, IndexError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: corrupt or truncated checkpoint ({type(exc).__name__}: "
                         f"{str(exc).strip()[:200]})") from exc


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: expected a state_dict (a mapping of names to tensors), got {type(obj).__name__}")
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor; expected a "
                             "plain state_dict (optionally wrapped as {'state_dict': ...} or {'model': ...})")
        name = key
        stripped = True
        while stripped:
            stripped = False
            for prefix in _PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix):], True
        if name in out:
            raise ValueError(f"{path}: keys collide after stripping {_PREFIXES} prefixes: {key!r} → {name!r}")
        out[name] = value
    return out


def check_finite(state: Mapping[str, torch.Tensor], where: str = "state_dict") -> None:
    """Raise ValueError naming the first floating-point tensor holding NaN or ±Inf."""
    for key, value in state.items():
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            n_bad = int((~torch.isfinite(value)).sum())
            raise ValueError(f"{where}: tensor {key!r} holds {n_bad} NaN/Inf value(s)")


def load_state_dict(path: PathLike, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a tensor-only checkpoint on the CPU, safely (see the module docstring).

    ``sha256`` (hex) is verified before the file is parsed. Returns a plain
    ``{name: tensor}`` with wrappers and ``module.`` / ``model.`` prefixes removed.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint: no file at {p}")
    if sha256 is not None:
        verify_sha256(p, sha256)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: object = load_file(str(p), device="cpu")
        except Exception as exc:  # SafetensorError, OSError, … on corrupt / truncated files
            raise ValueError(f"{p}: corrupt or truncated safetensors file ({exc})") from exc
    else:
        obj = _torch_load(p)
    state = _unwrap(obj, p)
    check_finite(state, str(p))
    return state


def copy_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Copy bytes atomically (temporary name in the destination directory, then rename)."""
    dst = Path(dst)
    with atomic_path(dst) as tmp, open(src, "rb") as fin, open(tmp, "wb") as fout:
        while chunk := fin.read(1 << 20):
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return dst
