"""What made an artifact: code version, environment, times, and the manifest's own checksum.

Recorded in every stage's ``manifest.json`` (:func:`ferd.stages.artifacts.write_manifest`):

* ``code``: the ferd version; the git commit (``git rev-parse HEAD`` of the source tree when
  ferd runs from a checkout, with ``dirty: true`` when tracked files differ from it, else
  ``$FERD_GIT_COMMIT``, which the image sets at build time, ``-dirty`` after it when the files built
  differed from that commit); the container image (``$FERD_IMAGE``, which a compiled pipeline's tasks and a
  containerised DVC stage set to the reference they run, and the digest it is pinned by; ``$FERD_IMAGE_DIGEST``
  only for an image named without one).
* ``environment``: python, torch, CUDA (``torch.version.cuda``; ``null`` on a CPU build), the
  device the stage ran on, the host name.
* ``manifest_sha256``: sha256 of the canonical JSON of the manifest without this key, so a
  changed byte anywhere in a manifest is detected (:func:`manifest_digest`). That is integrity, not
  authenticity: anyone who can write the store can reseal a changed manifest.
* ``signature`` (only with ``$FERD_SIGNING_KEY`` set): HMAC-SHA256 of that digest under the key. With
  the key set, every consumer (:func:`ferd.stages.artifacts.read_manifest`) and ``ferd lineage
  verify`` refuse an unsigned or wrongly signed manifest (:func:`authenticity_problem`). A set but
  empty ``$FERD_SIGNING_KEY`` is an error, never "no signing" (:func:`signing_key`).

The same seal makes any JSON record of ferd's self-checking: ``ferd run``'s ``checkpoint/round.json`` and
``elapsed.json`` are written with :func:`seal` and read back by :func:`read_sealed` (a JSON object, its
required fields of their types, its checksum and, with the key, its signature), one line naming the file
and the field otherwise.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import hmac
import json
import os
import platform
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import __version__
from .image import digest_of

SELF_KEY = "manifest_sha256"
SIGNATURE_KEY, SIGNING_KEY_ENV = "signature", "FERD_SIGNING_KEY"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


PACKAGE = Path(__file__).resolve().parents[1]  # the ferd package whose code every stage runs


def package_sources() -> list[Path]:
    """Every ``.py`` file of the ferd package, sorted: the code a stage's DVC deps and a kept evaluation's key
    cover."""
    return sorted(PACKAGE.rglob("*.py"))


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    src = PACKAGE.parent  # the checkout above the ferd package
    commit = dirty = None
    if (src / ".git").exists():
        commit = _git(["rev-parse", "HEAD"], src)
        if commit is not None:
            status = _git(["status", "--porcelain", "--untracked-files=no"], src)
            dirty = bool(status) if status is not None else None
    env_commit = os.environ.get("FERD_GIT_COMMIT") or ""  # in the image: its build's revision, "-dirty" if it differed
    if commit is None and env_commit not in ("", "unknown"):
        commit, dirty = env_commit.removesuffix("-dirty"), env_commit.endswith("-dirty")
    image = os.environ.get("FERD_IMAGE") or None
    # the digest the image is pinned by; $FERD_IMAGE_DIGEST only for an image named otherwise (environment.check
    # refuses the two disagreeing)
    digest = digest_of(image) or os.environ.get("FERD_IMAGE_DIGEST") or None
    return {"ferd_version": __version__, "git_commit": commit, "git_dirty": dirty, "image": image,
            "image_digest": digest}


def environment(device: str) -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": device, "device_name": torch.cuda.get_device_name(torch.device(device))
            if device.startswith("cuda") and torch.cuda.is_available() else platform.processor() or "cpu",
            "host": platform.node()}


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of ``manifest`` without its ``manifest_sha256`` and ``signature`` keys (canonical JSON)."""
    return hashlib.sha256(canonical_json({k: v for k, v in manifest.items()
                                          if k not in (SELF_KEY, SIGNATURE_KEY)})).hexdigest()


def signing_key() -> bytes | None:
    """``$FERD_SIGNING_KEY`` (on Kubeflow from the secret that ``ferd/pipeline/cluster.yaml`` names), or None
    when unset; set but empty (or only blanks) is a ValueError, not "no signing" (``ferd``'s entry point
    checks it before any work: :func:`ferd.core.environment.check`)."""
    key = os.environ.get(SIGNING_KEY_ENV)
    if key is None:
        return None
    if not key.strip():
        raise ValueError(f"{SIGNING_KEY_ENV} is set but empty: expected the signing secret (a non-empty string); "
                         "unset the variable to run without signing")
    return key.encode()


def _signature(digest: str, key: bytes) -> str:
    return "hmac-sha256:" + hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def seal(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest with its ``manifest_sha256`` (re)computed and, when a signing key is set, its
    ``signature`` (HMAC-SHA256 of that digest under the key)."""
    body = {k: v for k, v in manifest.items() if k not in (SELF_KEY, SIGNATURE_KEY)}
    digest = manifest_digest(body)
    key = signing_key()
    return {**body, SELF_KEY: digest, **({SIGNATURE_KEY: _signature(digest, key)} if key else {})}


def authenticity_problem(manifest: dict[str, Any]) -> str | None:
    """Why ``manifest`` is not authentic under the signing key; None when it is, or when no key is set
    (then only integrity is checked: a manifest resealed by whoever can write the store passes)."""
    key = signing_key()
    if key is None:
        return None
    sig = manifest.get(SIGNATURE_KEY)
    if not sig:
        return "unsigned, and FERD_SIGNING_KEY is set: every manifest must carry its signature"
    # bytes: compare_digest refuses a str with non-ASCII characters (a TypeError, not a verdict)
    if not hmac.compare_digest(str(sig).encode("utf-8", "replace"),
                               _signature(manifest_digest(manifest), key).encode()):
        return "signature does not match (forged, changed, or signed with another key)"
    return None


def seal_problem(record: Mapping[str, Any]) -> str | None:
    """Why ``record`` is not as :func:`seal` left it: no or a wrong checksum, or not authentic under the key."""
    if not isinstance(record.get(SELF_KEY), str):
        return f"no {SELF_KEY}: not sealed by ferd (written by an older release, or edited)"
    if record[SELF_KEY] != manifest_digest(dict(record)):
        return f"{SELF_KEY} does not match the content (changed or corrupt)"
    return authenticity_problem(dict(record))


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


def require_fields(record: Mapping[str, Any], required: Mapping[str, type | tuple[type, ...]],
                   where: str | os.PathLike[str], error: type[ValueError] = ValueError) -> None:
    """``error`` naming ``where`` and the field unless every ``required`` field is in ``record`` with its type
    (a JSON boolean is no number)."""
    for name, kind in required.items():
        if name not in record:
            raise error(f"{where}: field {name!r} missing")
        kinds = kind if isinstance(kind, tuple) else (kind,)
        value = record[name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise error(f"{where}: field {name!r} must be {_kind_name(kind)}, got {type(value).__name__}")


def read_sealed(path: str | os.PathLike[str], required: Mapping[str, type | tuple[type, ...]],
                error: type[ValueError] = ValueError) -> dict[str, Any]:
    """The JSON record at ``path`` written with :func:`seal`: an object, sealed (checksum, and signature
    with the key), with every ``required`` field of its type; otherwise ``error`` with one line naming the
    file and the field."""
    path = Path(path)
    try:
        record = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise error(f"{path}: missing") from None
    except (OSError, ValueError) as exc:  # unreadable, not UTF-8, not JSON
        raise error(f"{path}: not a JSON record ({type(exc).__name__})") from None
    if not isinstance(record, dict):
        raise error(f"{path}: expected a JSON object, got a JSON {type(record).__name__}")
    if (problem := seal_problem(record)) is not None:
        raise error(f"{path}: {problem}")
    require_fields(record, required, path, error)
    return record
