"""Stage artifacts: directories of atomically written files plus a ``manifest.json``.

Every stage writes one directory. Its ``manifest.json`` names the stage, the round, the
parameter fingerprint, the ferd version, the sha256 of every file in the directory and the
manifests of the inputs it was made from (so the lineage of any artifact can be followed
back to the teacher). A stage reading an artifact checks its stage name, its round, the
parameter fingerprint and the sha256 of every file before using it.

The *parameter fingerprint* is the sha256 of the resolved parameters without the keys
that cannot change a result bit (``device`` — a GPU stage and a CPU stage of one run
differ there —, ``data_root``, ``checkpoint_every``) and without ``evaluation`` (only the
evaluation stage reads it). Two artifacts with different fingerprints were made by
different runs; mixing them is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..checkpoint import atomic_path, atomic_write_bytes, sha256_file
from ..config import FerdConfig, load_config

MANIFEST = "manifest.json"
FINGERPRINT_EXCLUDES = ("device", "data_root", "checkpoint_every", "evaluation")


class ArtifactError(ValueError):
    """An input artifact is missing, of the wrong stage or round, from another run, or corrupt."""


def num_rounds(cfg: FerdConfig) -> int:
    """R: the rounds the epochs are grouped in (``rounds``, or ``epochs`` when unset)."""
    return cfg.rounds or cfg.epochs


def params_fingerprint(cfg: FerdConfig) -> str:
    data = cfg.model_dump(mode="json")
    for key in FINGERPRINT_EXCLUDES:
        data.pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def config_from_text(params_yaml: str, overrides: list[str] | tuple[str, ...] = ()) -> FerdConfig:
    """Validate parameters given as YAML text (what a Kubeflow component receives) plus overrides."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        path.write_text(params_yaml)
        return load_config(path, list(overrides))


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    return path


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing")
    return json.loads(path.read_text())


def save_tensors(obj: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """``torch.save`` a dict of tensors / numbers / strings / lists atomically; loads with
    ``torch.load(..., weights_only=True)``."""
    buf = io.BytesIO()
    torch.save(dict(obj), buf)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_tensors(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing")
    return torch.load(path, map_location=device, weights_only=True)


def _files(directory: Path) -> dict[str, str]:
    out = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        if path.is_file() and rel != MANIFEST and not any(part.startswith(".") for part in rel.split("/")):
            out[rel] = sha256_file(path)
    return out


def write_manifest(directory: str | os.PathLike[str], stage: str, cfg: FerdConfig, *, round_index: int | None = None,
                   inputs: Mapping[str, str | os.PathLike[str] | None] | None = None,
                   extra: Mapping[str, Any] | None = None) -> dict:
    """Hash every file of ``directory`` and write its ``manifest.json`` (last, atomically)."""
    directory = Path(directory)
    parents = {}
    for name, path in (inputs or {}).items():
        if path is not None:
            m = Path(path) / MANIFEST
            parents[name] = {"path": str(path), "manifest_sha256": sha256_file(m) if m.is_file() else None}
    manifest = {"stage": stage, "round": round_index, "rounds": num_rounds(cfg), "epochs": cfg.epochs,
                "params_fingerprint": params_fingerprint(cfg), "ferd_version": __version__,
                "files": _files(directory), "inputs": parents, **(extra or {})}
    write_json(directory / MANIFEST, manifest)
    return manifest


def read_manifest(directory: str | os.PathLike[str] | None, stage: str, cfg: FerdConfig, *,
                  round_index: int | None = None, what: str | None = None, verify: bool = True) -> dict:
    """Read and check the manifest of an input artifact (stage, round, fingerprint, file hashes)."""
    what = what or stage
    if directory is None:
        raise ArtifactError(f"{what}: no artifact given")
    directory = Path(directory)
    path = directory / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"{what}: {directory} is not a ferd {stage} artifact (no {MANIFEST})")
    manifest = json.loads(path.read_text())
    if manifest.get("stage") != stage:
        raise ArtifactError(f"{what}: {directory} holds a {manifest.get('stage')!r} artifact, expected {stage!r}")
    if round_index is not None and manifest.get("round") != round_index:
        raise ArtifactError(f"{what}: {directory} is from round {manifest.get('round')}, expected round {round_index}")
    fp = params_fingerprint(cfg)
    if manifest.get("params_fingerprint") != fp:
        raise ArtifactError(f"{what}: {directory} was made with other parameters (fingerprint "
                            f"{str(manifest.get('params_fingerprint'))[:12]}…, these give {fp[:12]}…); "
                            "every stage of a run must get the same parameters")
    if verify:
        for rel, digest in manifest.get("files", {}).items():
            f = directory / rel
            if not f.is_file():
                raise ArtifactError(f"{what}: {f} is listed in the manifest but missing")
            if sha256_file(f) != digest:
                raise ArtifactError(f"{what}: {f}: sha256 does not match the manifest (changed or corrupt)")
    return manifest


def copy_file(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Copy bytes atomically (temporary name in the destination directory, then rename)."""
    dst = Path(dst)
    with atomic_path(dst) as tmp, open(src, "rb") as fin, open(tmp, "wb") as fout:
        while chunk := fin.read(1 << 20):
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    return dst
