"""A dataset in an object store: ``data_root: s3://bucket/prefix`` (issue 18: the test set on a cluster).

``ferd data pack --dataset cifar10 --from <folder or .npz> --to <folder or s3://…>`` writes the layout:
one ``<dataset>_<split>.npz`` per split (``images`` uint8 N×H×W×3, ``labels``, ``classes``, what the
CIFAR loader reads) and ``dataset.json`` listing each file's split, rows, bytes and sha256. A run with
``data_root: s3://…`` downloads ``dataset.json`` and then only the split it reads into
``$FERD_CACHE/data/<bucket>/<prefix>/``, checking the file against its sha256 before it is renamed
into place; a cached copy is re-hashed, not downloaded again. CIFAR-10 and CIFAR-100 (Tiny-ImageNet
is an image folder: mount it on Kubeflow with ``data_pvc`` in ``ferd/pipeline/cluster.yaml``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import atomic_write_json, copy_file, sha256_file
from ..storage import download_file, is_s3, join_uri, s3_client, split_s3, upload_file

DATASET_MANIFEST = "dataset.json"
PACKABLE = ("cifar10", "cifar100")


def cache_root() -> Path:
    return Path(os.environ.get("FERD_CACHE") or Path.home() / ".cache" / "ferd") / "data"


def file_name(dataset: str, split: str) -> str:
    return f"{dataset}_{split}.npz"


def read_manifest(uri: str, client=None) -> dict:
    """``dataset.json`` of ``uri``, downloaded into the cache (small; always fetched again)."""
    bucket, prefix = split_s3(uri)
    local = cache_root() / bucket / prefix / DATASET_MANIFEST
    download_file(client or s3_client(), join_uri(uri, DATASET_MANIFEST), local)
    try:
        manifest = json.loads(local.read_bytes())
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ValueError(f"data_root: {join_uri(uri, DATASET_MANIFEST)} is not a ferd dataset manifest "
                         "(write one with `ferd data pack`)")
    return manifest


def fetch_split(uri: str, dataset: str, split: str) -> Path:
    """The local, verified ``<dataset>_<split>.npz`` of the dataset at ``uri``."""
    client = s3_client()
    manifest = read_manifest(uri, client)
    name = file_name(dataset, split)
    entry = manifest["files"].get(name)
    if manifest.get("dataset") != dataset or not isinstance(entry, dict):
        raise FileNotFoundError(f"data_root: {uri} holds {manifest.get('dataset')!r} splits "
                                f"{sorted(manifest['files'])}, not {name}")
    bucket, prefix = split_s3(uri)
    local = cache_root() / bucket / prefix / name
    if not (local.is_file() and sha256_file(local) == entry.get("sha256")):
        download_file(client, join_uri(uri, name), local, sha256=entry.get("sha256"))
    return local


def pack(dataset: str, source: str | os.PathLike[str], dest: str, split: str | None = None) -> list[str]:
    """Write ``dataset``'s splits found at ``source`` (a folder the loader reads, or one ``.npz`` holding
    ``split``) to ``dest`` (a folder or ``s3://…``) with their ``dataset.json``; returns the files written."""
    from .datasets import dataset_info, load_split

    if dataset not in PACKABLE:
        raise ValueError(f"--dataset: expected one of {list(PACKABLE)} (tiny-imagenet is an image folder: mount "
                         f"it as a volume), got {dataset!r}")
    info = dataset_info(dataset)
    src = Path(source)
    if src.is_file() and split is None:
        raise ValueError("--split: required when --from is one .npz file (which split it holds: train or test)")
    splits = [split] if split else [s for s in info.splits]
    files: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        for s in splits:
            try:
                x, y = load_split(dataset, s, root=src)
            except FileNotFoundError:
                if split:
                    raise
                continue
            name = file_name(dataset, s)
            images = x.permute(0, 2, 3, 1).mul(255).round().clamp(0, 255).to(torch.uint8).numpy()
            np.savez(staging / name, images=images, labels=y.numpy().astype(np.int64),
                     classes=np.array(info.class_names))
            files[name] = {"split": s, "rows": int(len(y)), "bytes": (staging / name).stat().st_size,
                           "sha256": sha256_file(staging / name)}
        if not files:
            raise FileNotFoundError(f"--from: no {dataset} split found at {src}")
        atomic_write_json(staging / DATASET_MANIFEST, {"dataset": dataset, "files": files,
                                                       "layout": "<dataset>_<split>.npz (ferd.data.remote)"})
        names = [*sorted(files), DATASET_MANIFEST]  # the manifest last: a listed file is complete
        if is_s3(dest):
            client = s3_client()
            for n in names:
                upload_file(client, staging / n, join_uri(dest, n))
        else:
            out = Path(dest)
            out.mkdir(parents=True, exist_ok=True)
            for n in names:
                copy_file(staging / n, out / n)
        return [join_uri(dest, n) if is_s3(dest) else str(Path(dest) / n) for n in names]


__all__ = ["DATASET_MANIFEST", "fetch_split", "pack", "read_manifest"]
