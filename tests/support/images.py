"""The image references the tests compile with, and what a compiled package says of its image."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ferd.core.image import Image

TEST_IMAGE = "registry.example/team/ferd@sha256:" + "ab" * 32
IMAGE = Image(TEST_IMAGE, "given with --image")


def compiled_image(package: Path) -> str:
    """The one image every task of a compiled package runs."""
    spec = next(yaml.safe_load_all(Path(package).read_text()))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert len(images) == 1, images
    return images.pop()


def image_of(package: Path) -> Image:
    """The image a compiled package names and where its description says it came from."""
    description = next(yaml.safe_load_all(Path(package).read_text()))["pipelineInfo"]["description"]
    found = re.search(r"Image: (\S+), (.*?)\. (Default parameters|Preset)", description)
    assert found, f"{package}: the description does not say which image, from where"
    assert found[1] == compiled_image(package)
    return Image(found[1], found[2])
