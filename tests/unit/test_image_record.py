"""What the image records of itself: the build record names what the registry holds after ``image/publish.sh``,
a build from changed files says so (``-dirty``) in its revision and in every manifest, and the recorded digest is
the one ``$FERD_IMAGE`` is pinned by. The scripts run against a stand-in engine (no image is built)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from ferd.core import provenance
from ferd.core.environment import check
from ferd.core.image import from_build

ROOT = Path(__file__).resolve().parents[2]
BUILT, PUSHED = "sha256:" + "1" * 64, "sha256:" + "2" * 64
# an engine that "builds" nothing: the digest of the local image differs from the pushed one, as in a registry
ENGINE = f"""#!/bin/bash
case "$1" in
  info|pull|build) exit 0;;
  image) case "$4" in *Id*) echo {"5" * 64};; *Size*) echo 1000;; *Digest*) echo {BUILT};; esac;;
  run) echo "ferd $(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')";;
  push) while [ $# -gt 0 ]; do [ "$1" = --digestfile ] && echo {PUSHED} > "$2"; shift; done;;
esac
"""


@pytest.fixture
def checkout(tmp_path) -> tuple[Path, dict[str, str]]:
    """A git checkout of what the image is built from, and an environment whose podman is the stand-in."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    repo = tmp_path / "repo"
    for name in ("image", "ferd"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "Dockerfile", "README.md", "constraints.txt"):
        shutil.copy2(ROOT / name, repo / name)
    git = ["git", "-c", "user.email=t@example", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=repo, check=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "podman").write_text(ENGINE)
    (bin_dir / "podman").chmod(stat.S_IRWXU)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FERD_ENGINE": "podman"}
    return repo, env


def _record(repo: Path) -> dict:
    return json.loads((repo / "build" / "image.json").read_text())


def test_after_publish_the_build_record_names_the_pushed_digest_beside_the_local_one(checkout, monkeypatch):
    repo, env = checkout
    out = subprocess.run(["bash", "image/publish.sh", "registry.example/team/ferd:1"], cwd=repo, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"registry.example/team/ferd@{PUSHED}"
    record = _record(repo)
    assert record["pushed_ref"] == f"registry.example/team/ferd@{PUSHED}" and record["pushed_digest"] == PUSHED
    assert record["ref"] == f"registry.example/team/ferd@{BUILT}"  # the local image: what runs here
    monkeypatch.chdir(repo)
    image = from_build(pushed=True)  # what compile names: what the cluster pulls
    assert image.ref == f"registry.example/team/ferd@{PUSHED}" and image.source.startswith("pushed by image/publish.sh")
    assert from_build().ref == f"registry.example/team/ferd@{BUILT}"  # what run-local --runner docker runs


def test_a_build_from_changed_files_says_so_in_its_revision(checkout, monkeypatch):
    repo, env = checkout
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert subprocess.run(["bash", "image/build.sh"], cwd=repo, env=env, capture_output=True).returncode == 0
    assert _record(repo)["revision"] == head
    (repo / "ferd" / "extra.py").write_text("x = 1\n")  # an untracked file goes into the image too
    out = subprocess.run(["bash", "image/build.sh"], cwd=repo, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert _record(repo)["revision"] == f"{head}-dirty"
    monkeypatch.chdir(repo)
    assert from_build().source.startswith(f"built by `make image` from commit {head[:12]} with uncommitted changes")


def test_in_the_image_the_manifest_records_the_build_revision_and_whether_it_was_dirty(monkeypatch):
    monkeypatch.setattr(provenance, "PACKAGE", Path("/nonexistent/ferd"))  # no checkout: as in the image
    for value, commit, dirty in (("ab" * 20, "ab" * 20, False), ("ab" * 20 + "-dirty", "ab" * 20, True),
                                 ("unknown", None, None)):
        monkeypatch.setenv("FERD_GIT_COMMIT", value)
        provenance.code_version.cache_clear()
        got = provenance.code_version()
        assert (got["git_commit"], got["git_dirty"]) == (commit, dirty), value
    provenance.code_version.cache_clear()


def test_the_recorded_digest_is_the_one_the_image_is_pinned_by(monkeypatch):
    pinned = "registry.example/ferd@sha256:" + "ab" * 32
    monkeypatch.setenv("FERD_IMAGE", pinned)
    monkeypatch.setenv("FERD_IMAGE_DIGEST", "sha256:" + "ab" * 32)
    check()
    monkeypatch.setenv("FERD_IMAGE_DIGEST", "sha256:" + "cd" * 32)
    with pytest.raises(ValueError, match=r"FERD_IMAGE_DIGEST=.*expected the digest \$FERD_IMAGE is pinned by"):
        check()
    monkeypatch.delenv("FERD_IMAGE_DIGEST")
    provenance.code_version.cache_clear()
    assert provenance.code_version()["image_digest"] == "sha256:" + "ab" * 32
    provenance.code_version.cache_clear()


def test_the_version_is_the_same_in_the_package_the_wheel_and_the_image():
    import re
    import tomllib

    from ferd import __version__

    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == __version__
    assert re.search(r"^ARG VERSION=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)[1] == __version__


def test_the_build_record_names_the_version_built(checkout):
    from ferd import __version__

    repo, env = checkout
    assert subprocess.run(["bash", "image/build.sh"], cwd=repo, env=env, capture_output=True).returncode == 0
    assert _record(repo)["version"] == __version__


def test_build_refuses_the_pinned_reference_as_the_name_to_build(checkout):
    repo, env = checkout
    out = subprocess.run(["bash", "image/build.sh"], cwd=repo, env={**env, "FERD_IMAGE": "registry.example/x:1"},
                         capture_output=True, text=True)
    assert out.returncode == 2 and "FERD_IMAGE_TAG" in out.stderr
