"""What made an artifact: code version, environment, times, and the manifest's own checksum.

Recorded in every stage's ``manifest.json`` (:func:`ferd.stages.artifacts.write_manifest`):

* ``code``: the ferd version; the git commit (``git rev-parse HEAD`` of the source tree when
  ferd runs from a checkout, with ``dirty: true`` when tracked files differ from it, else
  ``$FERD_GIT_COMMIT``, which the Docker image sets at build time); the container image
  (``$FERD_IMAGE`` / ``$FERD_IMAGE_DIGEST``, set by the Kubeflow components from the image
  reference they run, when known).
* ``environment``: python, torch, CUDA (``torch.version.cuda``; ``null`` on a CPU build), the
  device the stage ran on, the host name.
* ``manifest_sha256``: sha256 of the canonical JSON of the manifest without this key, so a
  changed byte anywhere in a manifest is detected (:func:`manifest_digest`).
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from . import __version__

SELF_KEY = "manifest_sha256"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    src = Path(__file__).resolve().parent.parent
    commit = dirty = None
    if (src / ".git").exists():
        commit = _git(["rev-parse", "HEAD"], src)
        if commit is not None:
            status = _git(["status", "--porcelain", "--untracked-files=no"], src)
            dirty = bool(status) if status is not None else None
    env_commit = os.environ.get("FERD_GIT_COMMIT")
    image = os.environ.get("FERD_IMAGE") or None
    digest = os.environ.get("FERD_IMAGE_DIGEST") or (image.split("@", 1)[1] if image and "@sha256:" in image else None)
    return {"ferd_version": __version__,
            "git_commit": commit or (env_commit if env_commit not in (None, "", "unknown") else None),
            "git_dirty": dirty, "image": image, "image_digest": digest}


def environment(device: str) -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": device, "device_name": torch.cuda.get_device_name(torch.device(device))
            if device.startswith("cuda") and torch.cuda.is_available() else platform.processor() or "cpu",
            "host": platform.node()}


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of ``manifest`` without its ``manifest_sha256`` key (canonical JSON)."""
    return hashlib.sha256(canonical_json({k: v for k, v in manifest.items() if k != SELF_KEY})).hexdigest()


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its ``manifest_sha256`` (re)computed."""
    body = {k: v for k, v in manifest.items() if k != SELF_KEY}
    return {**body, SELF_KEY: manifest_digest(body)}
