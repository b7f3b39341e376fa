"""A dataset in an object store: ``data_root: s3://bucket/prefix`` (issue 18: the test set on a cluster).

``ferd data pack --dataset cifar10 --from <folder or .npz> --to <folder or s3://…>`` writes the layout:
one ``<dataset>_<split>.npz`` per split (``images`` uint8 N×H×W×3, ``labels``, ``classes``, what the
CIFAR loader reads) and ``dataset.json`` listing each file's split, rows, bytes and sha256, sealed and signed
under ``$FERD_SIGNING_KEY`` (:mod:`ferd.data.dataset_json`). A run with ``data_root: s3://…`` reads
``dataset.json`` (bounded, into memory, checked) and then only the split it needs, cached in
``$FERD_CACHE/data/<bucket>/<prefix>/``:

* the root is checked before any request (:func:`dataset_root`): a bucket, and a prefix of plain parts (no ``..``,
  ``.``, empty part or backslash), so every key is ``<prefix>/<listed name>`` and every cache path lies inside
  the cache (:func:`cache_file`, which also refuses a symbolic link leading out of it);
* an object whose size is not the listed one is refused before it is downloaded; a download is checked against
  its sha256 before it is renamed into place (:func:`ferd.core.storage.download_file`, atomic);
* a cached copy is read once, hashed, and those bytes are used; one that no longer matches is fetched again.

CIFAR-10 and CIFAR-100 (Tiny-ImageNet is an image folder: mount it on Kubeflow with ``data_pvc`` in
``ferd/pipeline/cluster.yaml``).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from ..core.storage import (S3Settings, StorageError, download_file, is_missing, read_small_object, s3_client, split_s3,
                            storage_error)
from .dataset_json import (DATASET_MANIFEST, MAX_MANIFEST_BYTES, PACKABLE, DatasetError, entry, file_name, mismatch,
                           parse, verified)

log = logging.getLogger(__name__)
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")


def cache_root() -> Path:
    return Path(os.environ.get("FERD_CACHE") or Path.home() / ".cache" / "ferd") / "data"


def dataset_root(uri: str) -> tuple[str, tuple[str, ...]]:
    """``s3://bucket/a/b`` → ``("bucket", ("a", "b"))``, refusing (ValueError naming data_root) a root without a
    valid bucket or one :func:`ferd.core.storage.split_s3` refuses (a prefix that could leave it)."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise ValueError(f"data_root: expected s3://bucket/prefix, got {str(uri)[:120]!r}")
    try:
        bucket, prefix = split_s3(uri)
    except ValueError as exc:
        raise ValueError(f"data_root: {exc}") from None
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(f"data_root: {uri[:120]!r} names no valid bucket; expected s3://bucket/prefix")
    return bucket, tuple(prefix.split("/")) if prefix else ()


def _key(parts: tuple[str, ...], name: str) -> str:
    return "/".join((*parts, name))


def cache_file(bucket: str, parts: tuple[str, ...], name: str) -> Path:
    """``$FERD_CACHE/data/<bucket>/<prefix>/<name>``, refused when it resolves outside the cache (a symbolic link on
    the way): the one place a downloaded dataset file may be written."""
    root = cache_root()
    path = root.joinpath(bucket, *parts, name)
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"data_root: the cache path {path} resolves to {path.resolve()}, outside the cache "
                         f"{root} (a symbolic link in it?); remove it")
    return path


def read_manifest(uri: str, client: Any = None, storage: S3Settings | None = None) -> dict:
    """``dataset.json`` of ``uri`` checked (:func:`ferd.data.dataset_json.parse`), read into memory, its size refused
    before its body is read; fetched again on every call (small)."""
    bucket, parts = dataset_root(uri)
    client = client or s3_client(storage)
    where = f"s3://{bucket}/{_key(parts, DATASET_MANIFEST)}"
    try:
        raw, _ = read_small_object(client, where, MAX_MANIFEST_BYTES, DATASET_MANIFEST)
    except StorageError as exc:
        if is_missing(exc.__cause__):
            raise FileNotFoundError(f"data_root: {uri} has no {DATASET_MANIFEST} (write one with `ferd data pack`)") \
                from None
        raise
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    return parse(raw, where)


def _object_size(client: Any, bucket: str, key: str) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
    except (BotoCoreError, ClientError) as exc:
        raise storage_error("read", f"s3://{bucket}/{key}", client, exc) from exc


def read_split(uri: str, dataset: str, split: str, storage: S3Settings | None = None) -> tuple[bytes, str]:
    """The verified bytes of ``<dataset>_<split>.npz`` of the dataset at ``uri`` and where they came from: the
    cached copy when it still matches ``dataset.json``, else the object downloaded (size checked first, sha256
    before the atomic rename into the cache) and read back."""
    bucket, parts = dataset_root(uri)
    client = s3_client(storage)
    manifest = read_manifest(uri, client)
    name = file_name(dataset, split)
    listed = entry(manifest, dataset, split, uri)
    local = cache_file(bucket, parts, name)
    where = f"s3://{bucket}/{_key(parts, name)}"
    if local.is_file():
        data = local.read_bytes()
        if (problem := mismatch(data, listed)) is None:
            return data, str(local)
        log.warning("data: cached %s: %s; fetching it again", local, problem)
    size = _object_size(client, bucket, _key(parts, name))
    if size != listed["bytes"]:
        raise DatasetError(f"{where}: {size} bytes, dataset.json lists {listed['bytes']} (changed or corrupt); "
                         "not downloaded")
    download_file(client, where, local, sha256=listed["sha256"])
    return verified(local.read_bytes(), listed, str(local)), str(local)


__all__ = ["DATASET_MANIFEST", "PACKABLE", "cache_file", "dataset_root", "file_name", "read_manifest", "read_split"]
