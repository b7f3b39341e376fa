"""Kubeflow components, one per stage: thin lightweight Python components over :mod:`ferd.stages`.

Each ``components/<stage>/component.py`` defines one ``@dsl.component(base_image=…,
install_kfp_package=False)`` whose body imports ``ferd.stages`` and calls the stage
function; nothing about the algorithm lives here. Every component runs in the project's one
image (``Dockerfile``), which has ferd and kfp installed. A component is declared with a placeholder
image; the DAG that uses it names the image it was built for, pinned by digest (:func:`use_image`,
:mod:`ferd.core.image`), so no compiled pipeline runs what a tag names.
"""

from __future__ import annotations

import copy

from ferd.core.image import PLACEHOLDER


def base_image() -> str:
    """The image a component is declared with: :data:`ferd.core.image.PLACEHOLDER` until a DAG names its own."""
    return PLACEHOLDER


def use_image(component, ref: str):
    """A copy of ``component`` (a kfp component) that runs ``ref``; the component itself is left as it is."""
    copied = copy.copy(component)
    copied.component_spec = copy.deepcopy(component.component_spec)
    copied.component_spec.implementation.container.image = ref
    return copied
