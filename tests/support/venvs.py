"""Fresh virtual environments outside the checkout that reuse this environment's installed dependencies.

Installing torch with its CUDA wheels into a new environment copies ~5 GB; the tests need the *resolution* and
the *installed package* to be real, not the copy. So a fresh venv gets a ``.pth`` file pointing at a link farm
of exactly the distributions a requirement set needs (its closure, markers and extras evaluated, read from
this environment's metadata), never ferd itself; pip then installs ferd's wheel into the venv, finding its
requirements satisfied (or not: a missing one fails the install, as it would for a user).
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(requirements: list[str]) -> set[str]:
    """The canonical names of every installed distribution ``requirements`` need, transitively."""
    dists = {_canon(d.metadata["Name"]): d for d in md.distributions()}
    todo = [Requirement(r) for r in requirements]  # markers already evaluated (with the extras that asked)
    seen: set[str] = set()
    while todo:
        req = todo.pop()
        name = _canon(req.name)
        if name not in dists:
            continue
        new_extras = frozenset(req.extras)
        if name in seen and not new_extras:
            continue
        seen.add(name)
        for sub in dists[name].requires or []:
            r = Requirement(sub)
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in (new_extras or {""})):
                todo.append(r)
    return seen


def ferd_requirements(extras: tuple[str, ...]) -> list[str]:
    """ferd's own requirements for ``extras`` (from its installed metadata: pyproject.toml's)."""
    out = []
    for raw in md.distribution("ferd").requires or []:
        r = Requirement(raw)
        if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras):
            if _canon(r.name) == "ferd":  # all = ferd[s3,dvc,kfp]
                out += ferd_requirements(tuple(r.extras))
            else:
                out.append(str(r).split(";")[0])
    return out


def link_farm(names: set[str], farm: Path) -> Path:
    """Symlinks to the top-level files of the distributions ``names`` (their packages and dist-info)."""
    farm.mkdir(parents=True)
    site = None
    for dist in md.distributions():
        if _canon(dist.metadata["Name"]) not in names or _canon(dist.metadata["Name"]) == "ferd":
            continue
        for f in dist.files or []:
            top = f.parts[0]
            if top.startswith("..") or top.endswith(".pth") or top == "__pycache__":
                continue
            src = Path(dist.locate_file(top))
            site = site or src.parent
            if src.exists() and not (farm / top).exists():
                (farm / top).symlink_to(src)
    return farm


def fresh_venv(where: Path, extras: tuple[str, ...]) -> Path:
    """A new venv at ``where/venv`` seeing only the dependencies of ``ferd[extras]`` and pip (this environment's:
    the venv's own, older setuptools would shadow the one torch requires); returns its ``bin`` folder (pip runs
    as ``bin/python -m pip``)."""
    venv = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    farm = link_farm(closure([*ferd_requirements(extras), "pip"]), where / "deps")
    (site / "zz_inherited_deps.pth").write_text(f"{farm}\n")
    return venv / "bin"


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that would point a child at the checkout or this venv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON", "PIP_"))}
    env.update(extra)
    return env
