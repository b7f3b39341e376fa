"""The registered methods by name (:data:`ferd.settings.method.METHODS`), the shipped ones loaded first.

The shipped methods register on import; this module imports them the first time a name is looked up (not at
import time: ``ferd --help`` loads no torch), so the registry itself stays a leaf of :mod:`ferd.settings`. So do
the methods of installed packages that declare a module in the ``ferd.methods`` entry-point group
(``[project.entry-points."ferd.methods"] pixel-ce = "my_pkg.pixel_ce"``): importing that module registers its
method (``tests/support/throwaway_method.py`` is a complete one), and ``method: pixel-ce`` then works in every
front door.
"""

from __future__ import annotations

import functools
import importlib.metadata

from ..settings.method import METHODS, Method

ENTRY_POINT_GROUP = "ferd.methods"

SHIPPED = ("ferd.synthesis.ferd", "ferd.baselines")
"""The modules whose import registers the shipped methods (the code of every stage whose results depend on the
method: :func:`ferd.stages.code_deps.code_modules`)."""


@functools.cache  # once per process (a failed plugin import is not cached: it is raised again next time)
def _load_shipped() -> None:
    from .. import baselines
    from ..synthesis import ferd

    del baselines, ferd  # imported for their registrations: deepinv, cmi, fast, zskt, dfhl; ferd
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a plugin's own failure, named in one line
            raise ValueError(f"method plugin {ep.name!r} ({ep.value}, entry point group {ENTRY_POINT_GROUP}): "
                             f"cannot be imported ({type(exc).__name__}: {str(exc)[:200]})") from None


def method_class(name: str) -> type[Method]:
    """The method registered as ``name`` (one line naming the known ones otherwise)."""
    if name not in METHODS:
        _load_shipped()
    if name not in METHODS:
        raise KeyError(f"method: expected one of {known_methods()}, got {name!r}")
    return METHODS[name]


def known_methods() -> list[str]:
    """Every registered method's name, sorted."""
    _load_shipped()
    return sorted(METHODS)
