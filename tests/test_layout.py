"""The shape of the package (issue 17): small modules, argparse only in ``ferd.cli``, imports only downward."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ferd"
# the layers, lowest first: a module may import its own layer and the layers below, never above
LAYERS = [
    {"ferd"},  # the modules at the package root and the method packages below
    {"ferd.stages", "ferd.compare"},
    {"ferd.components", "ferd.pipeline"},  # the Kubeflow front door (the kfp extra)
    {"ferd.cli"},
]
METHOD_PACKAGES = {"attacks", "baselines", "data", "distill", "evaluation", "models", "synthesis"}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _layer(module: str) -> int:
    parts = module.split(".")
    top = ".".join(parts[:2]) if len(parts) > 1 and parts[1] not in METHOD_PACKAGES else "ferd"
    return next((i for i, names in enumerate(LAYERS) if top in names), 0)


def _name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    me = _name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                out.add(".".join(base + ([node.module] if node.module else [])))
            else:
                out.add(node.module or "")
    return {m for m in out if m == "ferd" or m.startswith("ferd.")}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_is_small_and_imports_only_downward(path):
    assert len(path.read_text().splitlines()) <= 400, f"{path}: over 400 lines"
    me = _layer(_name(path))
    upward = sorted(m for m in _imports(path) if _layer(m) > me)
    assert not upward, f"{_name(path)} imports from a layer above it: {upward}"


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
