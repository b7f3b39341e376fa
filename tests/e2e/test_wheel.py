"""The wheel outside a checkout: `pip install 'ferd[all]'` gives every command, the core install `ferd run` alone.

Each environment is fresh, in a temporary folder with no checkout above it; it reuses this environment's
installed dependencies (:mod:`venvs`: the closure of exactly the requirements asked for), and pip installs
ferd's wheel into it with ``--no-index``: every requirement must already be satisfied by the locked versions.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from support import golden
from support.images import TEST_IMAGE
from support.venvs import clean_env, fresh_venv

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    (path,) = out.glob("ferd-*.whl")
    return path


def _install(tmp: Path, wheel: Path, extras: tuple[str, ...]) -> Path:
    bin_ = fresh_venv(tmp, extras)
    spec = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
    subprocess.run([str(bin_ / "python"), "-m", "pip", "install", "--no-index", "-q", spec], check=True, env=clean_env(),
                   capture_output=True)
    return bin_


def _ferd(bin_: Path, cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = clean_env(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    return subprocess.run([str(bin_ / "ferd"), *args], cwd=cwd, env=env, capture_output=True, text=True, check=check)


def test_the_wheel_holds_one_top_level_package_with_its_presets(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.startswith("ferd-")} == {"ferd"}
    assert {"ferd/params/ci.yaml", "ferd/params/embedded.yaml", "ferd/pipeline/cluster.yaml",
            "ferd/components/stage/metadata.yaml"} <= set(names)


def test_with_every_extra_outside_a_checkout(wheel, tmp_path):
    bin_ = _install(tmp_path, wheel, ("all",))
    work = tmp_path / "project"
    work.mkdir()
    assert "wrote params.yaml (from " in _ferd(bin_, work, "params", "use", "ci").stdout
    assert (work / "dvc.yaml").is_file()
    _ferd(bin_, work, "run", "--params", "params.yaml", "--out", "run", "--threads", "1", "--no-progress")
    assert golden.run_fingerprint(work / "run") == golden.load()["run"]  # the same bytes as from the checkout
    _ferd(bin_, work, "pipeline", "compile", "--image", TEST_IMAGE, "--out", "p.yaml")
    assert f"image: {TEST_IMAGE}" in (work / "p.yaml").read_text()


def test_the_core_install_runs_and_names_the_extra_it_lacks(wheel, tmp_path):
    bin_ = _install(tmp_path, wheel, ())
    work = tmp_path / "project"
    work.mkdir()
    for missing in ("kfp", "dvc", "boto3"):
        probe = subprocess.run([str(bin_ / "python"), "-c", f"import {missing}"], capture_output=True, env=clean_env())
        assert probe.returncode != 0, f"{missing} is importable in the core environment"
    _ferd(bin_, work, "params", "use", "ci")
    _ferd(bin_, work, "run", "--params", "params.yaml", "--out", "run", "--threads", "1", "--no-progress")
    assert golden.run_fingerprint(work / "run") == golden.load()["run"]
    res = _ferd(bin_, work, "pipeline", "compile", "--image", TEST_IMAGE, "--out", "p.yaml", check=False)
    assert res.returncode == 2 and not (work / "p.yaml").exists()
    assert res.stderr.strip().splitlines() == [
        "ferd pipeline: error: needs the optional dependency 'kfp': pip install 'ferd[kfp]'"]
