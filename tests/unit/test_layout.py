"""The shape of the package (issues 17, 33): small modules, argparse only in ``ferd.cli``, the import contracts of
``.importlinter``."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ferd"


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_is_small(path):
    assert len(path.read_text().splitlines()) <= 400, f"{path}: over 400 lines"


def test_the_import_contracts_hold():
    """``.importlinter``: the layers (each package or module imports only the layers below it) and no cycle
    between the sibling packages and modules of any package, checked by import-linter on every import,
    including those inside functions (issue 33)."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a dev dependency: pip install -e '.[dev]'"
    proc = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in proc.stdout


def test_argparse_and_sys_path_edits_only_where_they_belong():
    for path in _modules():
        text = path.read_text()
        if "ferd/cli/" not in path.as_posix():
            assert "import argparse" not in text, f"{path}: argparse outside ferd.cli"
    for path in (ROOT / "ferd").rglob("*.py"):
        assert "sys.path.insert" not in path.read_text(), f"{path}: edits sys.path"


def test_the_command_line_starts_without_torch():
    """``ferd --help``, ``--version`` and the parser of every command import no torch (0.3 s, not 3-5 s):
    command modules import the library when their command runs."""
    import subprocess
    import sys

    code = ("import sys; from ferd.cli import build_parser; build_parser(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'pyarrow', 'kfp', 'matplotlib', 'dvc'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_test_files_have_unique_names_across_the_lanes():
    """pytest imports test modules by their base name (no packages under tests/): two lanes with the same
    file name fail collection of the whole suite."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


def test_the_package_root_holds_packages_only():
    """The tree shows the layers (issue 33): every module lives in the package of its layer (``.importlinter``
    names them), none flat at ``ferd/`` beside them."""
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py"]
