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


def test_a_non_root_image_needs_a_backend_that_mounts_the_launchers_folders():
    """The image's tasks run as a non-root user (Dockerfile ``USER``); the KFP launcher writes artifacts under
    ``/s3``, ``/minio``, ``/gcs``, writable for such a task only from backend 2.3.0 (kubeflow/pipelines#10857):
    each component's metadata must ask for that backend."""
    import re

    user = re.search(r"^USER (\d+)", (ROOT / "Dockerfile").read_text(), re.M)
    assert user is not None and user.group(1) != "0"
    for meta in (ROOT / "ferd" / "components").glob("*/metadata.yaml"):
        (pipelines,) = [d for d in yaml.safe_load(meta.read_text())["dependencies"]["kubeflow"]
                        if d["name"] == "Pipelines"]
        minimum = tuple(int(x) for x in re.fullmatch(r">=(\d+)\.(\d+)", pipelines["version"]).groups())
        assert minimum >= (2, 3), meta.parent.name
