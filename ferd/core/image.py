"""The container image the stages run in, pinned by digest: one rule for every way of naming it.

A tag can move; a digest cannot. So a compiled pipeline, a containerised DVC stage and a stage
manifest name the image as ``REF@sha256:<64 hex digits>``, whether it comes from ``--image``,
``$FERD_IMAGE`` or the record ``make image`` writes (``build/image.json``, :func:`from_build`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from .. import __version__

IMAGE_ENV = "FERD_IMAGE"
PLACEHOLDER = f"ghcr.io/ferd/ferd:{__version__}"  # what an uncompiled component names (local subprocess runs)
BUILD_RECORD = Path("build") / "image.json"  # written by image/build.sh (make image)
DIGEST_REF = re.compile(r"^([a-z0-9][a-z0-9._/:-]*@)?sha256:[0-9a-f]{64}$")  # REF@digest, or a bare image id


@dataclass(frozen=True)
class Image:
    ref: str     # REF@sha256:…
    source: str  # where it came from, as the compiled pipeline's description says


def pinned(ref: str, field: str | None) -> str:
    """``ref`` when it names an image by digest; else a one-line ValueError naming ``field`` (None: the caller
    names it, as pydantic does for a parameter)."""
    if not isinstance(ref, str) or not DIGEST_REF.match(ref):
        shown = f", got {ref[:80]!r}" if isinstance(ref, str) else f", got {type(ref).__name__}"
        raise ValueError(f"{field + ': ' if field else ''}expected an image pinned by digest, REF@sha256:<64 hex "
                         f"digits> (a tag can move){shown if field else ''}")
    return ref


def digest_of(ref: str | None) -> str | None:
    """The ``sha256:…`` digest ``ref`` is pinned by (``REF@sha256:…``), or None."""
    return ref.split("@", 1)[1] if ref and "@sha256:" in ref else None


def from_build(path: str | Path = BUILD_RECORD, pushed: bool = False) -> Image:
    """The image ``make image`` built last, from its record (read as untrusted: the ref must be a digest); with
    ``pushed``, the reference ``image/publish.sh`` pushed it under when it did (what a cluster pulls; the local
    ``ref`` is what runs here: an engine may store a pushed image under another digest)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--image-from-build: {path} not found; build the image first (make image)")
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a build record ({exc}); rebuild with make image") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object with 'ref'; rebuild with make image")
    revision = record.get("revision")
    found = re.fullmatch(r"([0-9a-f]{7,40})(-dirty)?", revision) if isinstance(revision, str) else None
    commit = (f" from commit {found[1][:12]}{' with uncommitted changes' if found[2] else ''}" if found else "")
    if pushed and record.get("pushed_ref") is not None:
        return Image(pinned(record["pushed_ref"], f"{path}: pushed_ref"), f"pushed by image/publish.sh{commit} "
                     "(build/image.json)")
    return Image(pinned(record.get("ref"), f"{path}: ref"), f"built by `make image`{commit} (build/image.json)")


def resolve(flag: str | None = None, use_build: bool = False, pushed: bool = False) -> Image:
    """The image to compile in: ``--image``, else ``--image-from-build`` (the pushed reference when ``pushed`` and
    there is one: :func:`from_build`), else ``$FERD_IMAGE``; each pinned by digest, and one of them required (a
    pipeline without a pinned image would run whatever a tag names)."""
    if flag is not None:
        return Image(pinned(flag, "--image"), "given with --image")
    if use_build:
        return from_build(pushed=pushed)
    env = os.environ.get(IMAGE_ENV)
    if env is not None:
        return Image(pinned(env, f"${IMAGE_ENV}"), f"from ${IMAGE_ENV}")
    raise ValueError("--image: the image every task runs, pinned by digest: give --image REF@sha256:…, "
                     f"--image-from-build (after make image) or ${IMAGE_ENV}")


# What a stage in a container sees of the caller's environment (each passed only when set): the thread
# count and CPU-kernel pins (the same bytes as outside), S3 credentials and endpoint, the signing key.
PASS_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "FERD_SIGNING_KEY",
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
            "AWS_DEFAULT_REGION")


def container_command(engine: str, ref: str, ferd_args: list[str]) -> str:
    """The shell command that runs ``ferd <ferd_args>`` in the image ``ref`` (pinned): the working directory
    mounted at its own path (so relative and absolute paths inside it mean the same), run as the calling user
    (its files stay the user's), :data:`PASS_ENV` passed through, ``$FERD_IMAGE`` set (stage manifests
    record it)."""
    pinned(ref, "container.image")
    env = " ".join(f"-e {name}" for name in PASS_ENV)
    return (f'{engine} run --rm --user "$(id -u):$(id -g)" -v "$(pwd):$(pwd)" -w "$(pwd)" '
            f"-e {IMAGE_ENV}={ref} {env} {ref} {shlex.join(ferd_args)}")
