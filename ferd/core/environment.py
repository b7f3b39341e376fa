"""The environment variables ferd obeys that carry a value it records or computes with, each checked once.

``ferd``'s entry point calls :func:`check` before any work: a malformed value is bad input like a bad
parameter (one line naming the variable and what it expects, status 2), not a traceback deep in a run or
a wrong value written into an artifact's provenance. An empty value means unset, as everywhere in ferd, but for
the signing key: set but empty is refused, never read as "no signing" (:func:`ferd.core.provenance.signing_key`).
The variables ferd only passes on (S3 credentials, thread counts) are the libraries' to check.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

from .image import digest_of
from .kill_points import KILL_ENV, STOP_ENV, parse
from .provenance import signing_key


def _matching(pattern: str, expected: str) -> Callable[[str, str], None]:
    def check(name: str, value: str) -> None:
        if re.fullmatch(pattern, value) is None:
            raise ValueError(f"{name}={value[:80]!r}: expected {expected}")
    return check


def _kill_spec(name: str, value: str) -> None:
    parse(value, name)


_COUNT = _matching(r"[0-9]{1,6}", "a non-negative integer")

VARIABLES: dict[str, Callable[[str, str], None]] = {
    KILL_ENV: _kill_spec,
    STOP_ENV: _kill_spec,
    # torchrun's: the world a rank belongs to (ferd.compute.distributed)
    "WORLD_SIZE": _matching(r"[1-9][0-9]{0,5}", "a positive integer (the number of processes)"),
    "RANK": _COUNT,
    "LOCAL_RANK": _COUNT,
    # provenance recorded in every manifest (ferd.core.provenance.code_version); the image sets them
    "FERD_GIT_COMMIT": _matching(r"[0-9a-f]{7,40}(-dirty)?|unknown",
                                 "a git commit (7-40 hex digits, '-dirty' after it when the image's files differed) "
                                 "or 'unknown'"),
    "FERD_IMAGE_DIGEST": _matching(r"sha256:[0-9a-f]{64}", "sha256:<64 hex digits>"),
}


def check() -> None:
    """Refuse the first malformed variable of :data:`VARIABLES`, then a set but empty signing key (ValueError,
    one line)."""
    for name, validate in VARIABLES.items():
        if value := os.environ.get(name):
            validate(name, value)
    pinned, digest = digest_of(os.environ.get("FERD_IMAGE")), os.environ.get("FERD_IMAGE_DIGEST")
    if digest and pinned and digest != pinned:
        raise ValueError(f"FERD_IMAGE_DIGEST={digest[:80]!r}: expected the digest $FERD_IMAGE is pinned by "
                         f"({pinned[:80]}), or unset")
    signing_key()
