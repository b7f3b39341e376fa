"""Kubeflow components, one per stage: thin lightweight Python components over :mod:`ferd.stages`.

Each ``components/<stage>/component.py`` defines one ``@dsl.component(base_image=…,
install_kfp_package=False)`` whose body imports ``ferd.stages`` and calls the stage
function; nothing about the algorithm lives here. Every component runs in the project's one
image (``Dockerfile``), which has ferd and kfp installed. The image is ``$FERD_IMAGE`` when set
(read when the component module is imported, i.e. at compile time), else
:data:`DEFAULT_IMAGE`.
"""

from __future__ import annotations

import os

from ferd import __version__

IMAGE_ENV = "FERD_IMAGE"
DEFAULT_IMAGE = f"ghcr.io/ferd/ferd:{__version__}"


def base_image() -> str:
    """The image every component runs in: ``$FERD_IMAGE`` or ``ghcr.io/ferd/ferd:<ferd version>``."""
    return os.environ.get(IMAGE_ENV) or DEFAULT_IMAGE
