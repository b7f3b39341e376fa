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
from pathlib import Path


from ..checkpoint import sha256_file
from ..storage import download_file, join_uri, s3_client, split_s3

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


__all__ = ["DATASET_MANIFEST", "PACKABLE", "fetch_split", "file_name", "read_manifest"]
