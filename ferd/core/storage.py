"""Artifact storage: a local directory or an S3 bucket (``storage`` in the parameters).

Every stage works on a local copy of its artifacts (the path the user or ``dvc.yaml``
names). With ``storage.uri`` set, a relative stage path ``P`` also lives at
``<storage.uri>/P``:

* **inputs** missing locally are fetched from there (``manifest.json`` first, then every file
  it lists, each checked against its sha256 before it is renamed into place);
* **outputs** are published there after the stage: every file, then ``manifest.json`` last
  (and a manifest already there is deleted first), so an artifact whose manifest is visible is complete.

What comes back is untrusted: a manifest is read whole only under :data:`MAX_MANIFEST_BYTES`, every
entry needs a sha256 and a path inside the artifact (:func:`listed_files`), and keys are taken literally
(:func:`split_s3`).

S3 guarantees (boto3 / s3transfer):

* an object appears under its key only when its upload completed — a single PUT is atomic,
  and a multipart upload (files over ``MULTIPART_THRESHOLD``) becomes visible only on
  ``CompleteMultipartUpload``; a failed multipart upload is aborted (its parts are deleted)
  by s3transfer, and :func:`publish_dir` aborts any upload of the key left behind;
* each request is retried by botocore's ``standard`` or ``adaptive`` retry mode
  (``storage.retries``: exponential backoff with jitter, at most ``max_attempts`` tries,
  connect/read time-outs bounded), after which a :class:`StorageError` names the object and the
  endpoint.

A local ``storage.uri`` is the same layout on a file system (files copied with an atomic
rename, manifest last).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import ServiceError
from .checkpoint import atomic_path, atomic_write_bytes, copy_file, sha256_file

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MULTIPART_THRESHOLD = 8 * 1024 * 1024  # s3transfer's default; parts of the same size
MAX_MANIFEST_BYTES = 16 * 1024 * 1024  # a stage's manifest is kilobytes; a larger one is refused unread
_SHA256 = re.compile(r"[0-9a-f]{64}")


class StorageError(ServiceError):
    """An object could not be read or written after the configured retries."""

    kind = "storage"


def is_s3(uri: str | os.PathLike[str] | None) -> bool:
    return isinstance(uri, str) and uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → ``("bucket", "a/b")``, taken literally (not as a URL, where ``?`` or ``#`` would cut
    the key short); ValueError for a key that names no single folder or object: a ``.``/``..``/empty part, a
    backslash, ``?``, ``#`` or a control character."""
    bucket, _, key = uri.removeprefix("s3://").partition("/") if is_s3(uri) else ("", "", "")
    key = key.rstrip("/")
    if (not bucket or any(c in uri for c in "?#\\") or any(ord(c) < 32 or ord(c) == 127 for c in uri)
            or (key and any(p in ("", ".", "..") for p in key.split("/")))):
        raise ValueError(f"expected s3://bucket/key (no '.', '..' or empty parts, no ?, #, backslash or control "
                         f"characters), got {uri[:200]!r}")
    return bucket, key


def join_uri(root: str, rel: str | os.PathLike[str]) -> str:
    rel = PurePosixPath(Path(rel).as_posix())
    if rel.is_absolute() or ".." in rel.parts:
        raise ValueError(f"storage: {rel} must be a relative path inside storage.uri")
    return f"{root.rstrip('/')}/{rel}" if is_s3(root) else str(Path(root) / rel)


@dataclass(frozen=True)
class S3Settings:
    endpoint_url: str | None = None
    region: str | None = None
    retry_mode: str = "standard"
    max_attempts: int = 5
    connect_timeout: float = 5.0
    read_timeout: float = 60.0

    @classmethod
    def from_config(cls, storage: Any) -> S3Settings:
        return cls(storage.endpoint_url, storage.region, storage.retries.mode, storage.retries.max_attempts,
                   storage.connect_timeout, storage.read_timeout)


def s3_client(settings: S3Settings | None = None):
    """A boto3 S3 client with bounded, botocore-managed retries and time-outs."""
    import boto3
    from botocore.config import Config

    s = settings or S3Settings()
    # botocore's own "max_attempts" counts retries after the first try; "total_max_attempts" is ours
    config = Config(retries={"mode": s.retry_mode, "total_max_attempts": s.max_attempts},
                    connect_timeout=s.connect_timeout, read_timeout=s.read_timeout)
    return boto3.client("s3", endpoint_url=s.endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None,
                        region_name=s.region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1", config=config)


def storage_error(action: str, uri: str, client: Any, exc: Exception) -> StorageError:
    """The one line a request that failed after its retries ends in (exit 4)."""
    endpoint = getattr(getattr(client, "meta", None), "endpoint_url", "?")
    return StorageError(f"storage: could not {action} {uri} (endpoint {endpoint}) after the configured retries: "
                        f"{type(exc).__name__}: {exc}")


def _abort_uploads(client: Any, bucket: str, key: str) -> None:
    """Abort multipart uploads of ``key`` left by a failed transfer (best effort)."""
    try:
        for up in client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", []):
            if up["Key"] == key:
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=up["UploadId"])
    except Exception:  # noqa: BLE001 — the endpoint is down; s3transfer already aborted what it could
        log.debug("storage: could not list/abort multipart uploads of s3://%s/%s", bucket, key)


def is_missing(exc: BaseException | None) -> bool:
    """Whether a botocore error says the object is not there (as opposed to the store failing)."""
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound")


def withdraw_manifest(client: Any, uri: str) -> None:
    """Delete the manifest of the artifact at ``uri`` (S3) before its files are written again: an artifact
    whose manifest is visible is whole, on a republish too (which needs ``s3:DeleteObject``; a first publish
    does not)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(join_uri(uri, MANIFEST))
    try:
        client.head_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError) as exc:
        if is_missing(exc):
            return  # a first publish: nothing to withdraw (and no s3:DeleteObject needed)
        raise storage_error("read", join_uri(uri, MANIFEST), client, exc) from exc
    try:
        client.delete_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError) as exc:
        raise storage_error("delete", join_uri(uri, MANIFEST), client, exc) from exc


def abort_incomplete_uploads(client: Any, uri: str) -> int:
    """Abort the multipart uploads under ``uri`` left by an earlier failed run (invisible, but billed)."""
    bucket, prefix = split_s3(uri)
    prefix = prefix.rstrip("/") + "/"  # exactly this artifact's keys, not a sibling's sharing the prefix
    n = 0
    for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix):
        for up in page.get("Uploads", []):
            client.abort_multipart_upload(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"])
            n += 1
    if n:
        log.info("storage: aborted %d incomplete multipart uploads under %s", n, uri)
    return n


def upload_file(client: Any, path: Path, uri: str) -> dict[str, str | None]:
    """Upload one file to ``uri``; return its ETag and version id. Never leaves a partial object."""
    from boto3.s3.transfer import TransferConfig
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(uri)
    try:
        client.upload_file(str(path), bucket, key,
                           Config=TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, use_threads=False))
        head = client.head_object(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError, OSError) as exc:
        _abort_uploads(client, bucket, key)
        raise storage_error("upload", uri, client, exc) from exc
    return {"etag": head.get("ETag", "").strip('"') or None, "version_id": head.get("VersionId")}


def download_file(client: Any, uri: str, dest: Path, sha256: str | None = None) -> Path:
    """Download ``uri`` to ``dest`` atomically, checking ``sha256`` before the rename."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_s3(uri)
    with atomic_path(dest) as tmp:
        try:
            client.download_file(bucket, key, str(tmp))
        except (BotoCoreError, ClientError, OSError) as exc:
            raise storage_error("download", uri, client, exc) from exc
        if sha256 is not None and sha256_file(tmp) != sha256:
            raise StorageError(f"storage: {uri}: sha256 does not match its manifest (changed or corrupt)")
    return dest


def listed_files(manifest: dict, where: str | os.PathLike[str]) -> list[str]:
    """The relative paths a manifest lists, refusing (ValueError naming the field) an ``outputs`` that is no
    object, an entry without a sha256 of 64 hex digits or with a byte count that is no whole number, and any
    path that could leave the artifact: absolute, with ``..``, a backslash, an empty or hidden part."""
    outputs = manifest.get("outputs", {}) if isinstance(manifest, dict) else None
    if not isinstance(outputs, dict):
        raise ValueError(f"{where}: not a manifest (expected a JSON object with an 'outputs' object)")
    out = []
    for rel in sorted(outputs):
        parts = rel.split("/") if isinstance(rel, str) else [""]
        if (not isinstance(rel, str) or rel.startswith("/") or "\\" in rel or ":" in parts[0]
                or any(p in ("", ".", "..") or p.startswith(".") for p in parts)):
            raise ValueError(f"{where}: the manifest lists {str(rel)[:80]!r}, not a path inside the artifact")
        entry = outputs[rel]
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        size = entry.get("bytes", 0) if isinstance(entry, dict) else None
        if not (isinstance(digest, str) and _SHA256.fullmatch(digest)) or type(size) is not int:
            raise ValueError(f"{where}: outputs[{rel[:80]!r}] must hold a sha256 (64 hex digits) and a byte count")
        out.append(rel)
    return out


def member(directory: str | os.PathLike[str], rel: str) -> Path:
    """``directory/rel`` when it is a regular file inside ``directory`` (no symbolic link on the way, no
    device or pipe): what a stage wrote, and so what may be published."""
    d = Path(directory)
    path = d / rel
    node = d
    for part in Path(rel).parts:
        node = node / part
        if node.is_symlink():
            raise ValueError(f"{node}: a symbolic link in an artifact; only files the stage wrote are published")
    if not path.is_file():
        raise ValueError(f"{path}: listed in the manifest but not a regular file")
    return path


def publish_dir(local_dir: str | os.PathLike[str], uri: str, settings: S3Settings | None = None,
                client: Any = None) -> dict[str, dict[str, str | None]]:
    """Copy an artifact directory to ``uri`` (S3 or a local directory): the files its manifest
    lists, then the manifest. Returns ``{relative path: {"etag", "version_id"}}`` (S3) or ``{}``."""
    local_dir = Path(local_dir)
    manifest = json.loads((local_dir / MANIFEST).read_text())
    files = listed_files(manifest, local_dir / MANIFEST)
    if not is_s3(uri):
        dest = Path(uri)
        if dest.resolve() != local_dir.resolve():
            (dest / MANIFEST).unlink(missing_ok=True)  # no manifest over files being replaced
            for rel in [*files, MANIFEST]:
                copy_file(member(local_dir, rel), dest / rel)
        return {}
    client = client or s3_client(settings)
    withdraw_manifest(client, uri)
    tags = {}
    for rel in files:
        tags[rel] = upload_file(client, member(local_dir, rel), join_uri(uri, rel))
    tags[MANIFEST] = upload_file(client, local_dir / MANIFEST, join_uri(uri, MANIFEST))
    log.info("storage: published %d files to %s", len(files) + 1, uri)
    return tags


def read_small_object(client: Any, uri: str, limit: int | None = None, what: str = "manifest"
                      ) -> tuple[bytes, dict[str, str | None]]:
    """The bytes of the object ``uri`` (a ``what``, refused over ``limit`` bytes, default :data:`MAX_MANIFEST_BYTES`,
    before its body is read: a ValueError) and the ETag and version id of exactly those bytes (one GET);
    :class:`StorageError` when it cannot be read (:func:`is_missing` of its cause tells an absent object)."""
    from botocore.exceptions import BotoCoreError, ClientError

    limit = MAX_MANIFEST_BYTES if limit is None else limit  # read at call time: one setting for every manifest
    bucket, key = split_s3(uri)
    try:
        obj = client.get_object(Bucket=bucket, Key=key)
        size = int(obj["ContentLength"])
        raw = b"" if size > limit else obj["Body"].read(limit + 1)
        obj["Body"].close()
    except (BotoCoreError, ClientError, OSError) as exc:
        raise storage_error("read", uri, client, exc) from exc
    if size > limit or len(raw) > limit:
        raise ValueError(f"{uri}: {size} bytes, more than a {what}'s {limit}")
    return raw, {"etag": (obj.get("ETag") or "").strip('"') or None, "version_id": obj.get("VersionId")}


def _manifest_of(raw: bytes, where: str) -> dict:
    try:
        manifest = json.loads(raw)
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict):
        raise ValueError(f"{where}: not a ferd manifest (expected a JSON object)")
    listed_files(manifest, where)  # every entry checked, every path inside the artifact, before any copy
    return manifest


def _copy_checked(src: Path, dest: Path, sha256: str) -> None:
    with atomic_path(dest) as tmp:
        copy_file(src, tmp)
        if sha256_file(tmp) != sha256:
            raise ValueError(f"{src}: sha256 does not match its manifest (changed or corrupt)")


def fetch_dir(uri: str, local_dir: str | os.PathLike[str], settings: S3Settings | None = None,
              client: Any = None) -> Path:
    """Copy an artifact directory from ``uri`` (S3 or a local directory) into ``local_dir``: its manifest read
    and checked (size, entries, paths), then every file it lists, each checked against its sha256 before its
    atomic rename. The local manifest is written last, so processes fetching into one folder at once agree."""
    local_dir = Path(local_dir)
    where = join_uri(uri, MANIFEST)
    if is_s3(uri):
        client = client or s3_client(settings)
        raw, _ = read_small_object(client, where)
    else:
        src = Path(where)
        if not src.is_file():
            raise FileNotFoundError(f"storage: {uri} is not an artifact (no {MANIFEST})")
        if src.stat().st_size > MAX_MANIFEST_BYTES:
            raise ValueError(f"{where}: {src.stat().st_size} bytes, more than a manifest's {MAX_MANIFEST_BYTES}")
        raw = src.read_bytes()
    manifest = _manifest_of(raw, where)
    for rel in listed_files(manifest, where):
        digest, target = manifest["outputs"][rel]["sha256"], local_dir / rel
        if target.is_file() and sha256_file(target) == digest:
            continue
        if is_s3(uri):
            download_file(client, join_uri(uri, rel), target, sha256=digest)
        else:
            _copy_checked(member(uri, rel), target, digest)
    atomic_write_bytes(local_dir / MANIFEST, raw)
    log.info("storage: fetched %s into %s", uri, local_dir)
    return local_dir
