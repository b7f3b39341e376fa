"""Where a stage's input and output artifacts live: local paths, ``storage.uri``, or ``s3://``.

A stage always works on a local directory; :class:`StageIO` maps what the user named to it:

==========================  ======================================  ====================
path given                  local working copy                      remote copy
==========================  ======================================  ====================
relative, no storage.uri    the path                                —
relative, local storage     ``<storage.uri>/<path>``                —
relative, S3 storage        the path                                ``<storage.uri>/<path>``
``s3://bucket/key``         ``$FERD_CACHE/s3/bucket/key``           the URI
absolute local path         the path                                —
==========================  ======================================  ====================

Inputs with a remote copy are fetched when the local copy has no manifest; outputs with a
remote copy are published after the stage (files, then the manifest; a manifest already there is
deleted first). Publishing also completes the manifest's lineage: the URI of every S3 input with the
ETag and version id of its manifest when that is still the manifest the stage read (none when it was
published again meanwhile), and the URI, ETag and version id of every output object.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from ..settings.config import FerdConfig
from ..core.provenance import seal
from ..core.storage import (MANIFEST, S3Settings, StorageError, abort_incomplete_uploads, fetch_dir, is_s3, join_uri,
                            listed_files, member, read_small_object, s3_client, split_s3, upload_file,
                            withdraw_manifest)
from .artifacts import write_json

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    return Path(os.environ.get("FERD_CACHE") or Path.home() / ".cache" / "ferd")


def remote_of(local_dir: Path) -> str | None:
    """The object-store URI an absolute local directory mirrors, or None: ``$FERD_CACHE/s3/<bucket>/<key>``
    (where ``s3://`` artifacts are kept, :meth:`StageIO.locate`) and Kubeflow's artifact mounts
    ``/s3/<bucket>/<key>`` and ``/minio/<bucket>/<key>`` (MinIO speaks the S3 API)."""
    for root in (cache_dir().absolute() / "s3", Path("/s3"), Path("/minio")):
        if local_dir.is_absolute() and local_dir.is_relative_to(root) and local_dir != root:
            return "s3://" + local_dir.relative_to(root).as_posix()
    return None


class StageIO:
    def __init__(self, cfg: FerdConfig):
        self.root = cfg.storage.uri
        self.settings = S3Settings.from_config(cfg.storage)
        self._client: Any = None
        self.remote: dict[str, str] = {}  # resolved local path → remote URI

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client(self.settings)
        return self._client

    def locate(self, path: str | os.PathLike[str]) -> tuple[Path, str | None]:
        text = str(path)
        if is_s3(text):
            bucket, key = split_s3(text)  # no '..' or empty part: the copy stays inside the cache
            return cache_dir() / "s3" / bucket / key, text
        p = Path(path)
        if self.root is None or p.is_absolute():
            return p, None
        if is_s3(self.root):
            return p, join_uri(self.root, p)
        return Path(self.root) / p, None

    def input(self, path: str | os.PathLike[str] | None) -> Path | None:
        """The local copy of an input artifact, fetched from its remote copy when missing."""
        if path is None:
            return None
        local, uri = self.locate(path)
        if uri is not None:
            self.remote[str(local.resolve())] = uri
            if not (local / MANIFEST).is_file():
                fetch_dir(uri, local, self.settings, client=self.client)
        return local

    def mirrored(self, where: Path) -> Path | None:
        """Fetch (and verify) an artifact that is not here from the URI its path mirrors (:func:`remote_of`)
        or, for a relative path, from ``storage.uri`` as every input is; its local copy, or None when the
        path names no object-store copy (an earlier pool shard's artifact, read through the pool index)."""
        uri = remote_of(where)
        if uri is not None:
            log.info("fetching %s", uri)
            return self.input(uri)
        if not where.is_absolute() and where.parts[:1] != ("..",) and self.root is not None and is_s3(self.root):
            log.info("fetching %s from %s", where, self.root)
            return self.input(where)
        return None

    def output(self, path: str | os.PathLike[str]) -> Path:
        local, uri = self.locate(path)
        if uri is not None:
            self.remote[str(local.resolve())] = uri
        return local

    def publish(self, local_dir: str | os.PathLike[str]) -> str:
        """Publish an output artifact to its remote copy (if any); return its URI."""
        local_dir = Path(local_dir)
        uri = self.remote.get(str(local_dir.resolve()))
        mpath = local_dir / MANIFEST
        manifest = json.loads(mpath.read_text())
        for record in manifest.get("inputs", {}).values():
            src = (local_dir / record["relpath"]).resolve() if record.get("relpath") else None
            remote = self.remote.get(str(src)) if src is not None else None
            if remote is not None:
                try:
                    raw, tags = read_small_object(self.client, join_uri(remote, MANIFEST))
                except StorageError:  # a local input never published: the manifest names the local copy
                    continue
                except ValueError:  # over the size cap now: not the manifest this stage read
                    raw, tags = b"", {"etag": None, "version_id": None}
                if hashlib.sha256(raw).hexdigest() != record.get("manifest_sha256"):
                    # republished since this stage read it: its ETag/version would name other bytes
                    log.warning("%s changed after this stage read it; its lineage records the URI only", remote)
                    tags = {"etag": None, "version_id": None}
                record.update({"uri": remote, **tags})
        if uri is None:
            write_json(mpath, seal(manifest))
            return str(local_dir)
        manifest["uri"] = uri
        abort_incomplete_uploads(self.client, uri)
        withdraw_manifest(self.client, uri)  # a republish: no manifest stands over files being replaced
        for rel in listed_files(manifest, mpath):
            manifest["outputs"][rel].update({"uri": join_uri(uri, rel),
                                             **upload_file(self.client, member(local_dir, rel), join_uri(uri, rel))})
        write_json(mpath, seal(manifest))
        upload_file(self.client, mpath, join_uri(uri, MANIFEST))  # last: the artifact is complete
        return uri
