"""Every component folder (kubeflow/pipelines-components layout): component.py, metadata.yaml, README, tests,
and an __init__ that re-exports the component; the stage components are the stage graph's."""

from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from ferd.plan.graph import COMPONENTS

ROOT = Path(__file__).resolve().parents[2]


def test_each_component_folder_is_complete_and_reexports_its_component():
    folders = sorted(p.parent for p in (ROOT / "ferd" / "components").glob("*/component.py"))
    assert set(COMPONENTS) <= {f.name for f in folders}
    for folder in folders:
        for name in ("metadata.yaml", "README.md", "test_component.py", "__init__.py"):
            assert (folder / name).is_file(), f"{folder.name}: {name} missing"
        meta = yaml.safe_load((folder / "metadata.yaml").read_text())
        assert meta["name"] == folder.name and meta["tier"] in ("core", "third_party")
        assert meta["stability"] in ("alpha", "beta", "stable")
        assert any(d["name"] == "Pipelines" for d in meta["dependencies"]["kubeflow"])
        package = importlib.import_module(f"ferd.components.{folder.name}")
        assert getattr(package, folder.name) is getattr(package.component, folder.name)
