"""The ferd source a stage runs, as DVC ``deps`` of ``dvc.yaml``'s stages (:mod:`ferd.stages.dvc_yaml`) and of
``ferd compare``'s (:mod:`ferd.compare.dvc`): the import closure of its command, read from the sources with
:mod:`ast` (nothing imported), so an edit to a module a stage runs reruns that stage and ``dvc status`` names it."""

from __future__ import annotations

import ast
import functools
import os
from pathlib import Path

from ..settings.config import FerdConfig
from ..plan.fingerprint import SCOPES
from ..plan.graph import STAGES, BY_NAME
from ..plan.methods import SHIPPED, method_class
from ..core.provenance import PACKAGE, package_sources

ROOT = __package__.partition(".")[0]  # its name: ferd
ENTRY_MODULES = (f"{ROOT}.cli", f"{ROOT}.cli.stage")  # the `ferd` script and `ferd stage`
DISPATCHER = f"{ROOT}.stages"  # imports every stage's module; runs only the one asked for
# `ferd stage` imports the pipeline files' module only to check the graph digest: it lets a stage run or refuses, and changes no artifact
GRAPH_CHECK = (ENTRY_MODULES[1], f"{ROOT}.stages.dvc_yaml")


@functools.cache
def _modules() -> dict[str, Path]:
    """Every module of the ferd package, by dotted name → its source file."""
    found = {}
    for f in package_sources():
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return found


def _absolute(module: str, level: int, package: str) -> str:
    """The module ``from <level dots><module> import …`` names, inside ``package``."""
    if not level:
        return module
    parts = package.split(".")
    return ".".join([*parts[:len(parts) - level + 1], *([module] if module else [])])


@functools.cache
def _imports(name: str) -> frozenset[str]:
    """The ferd modules ``name`` imports anywhere in its source (function bodies included: ferd imports
    lazily), with the packages each import runs; read with :mod:`ast`, nothing imported."""
    modules, path = _modules(), _modules()[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, package)
            targets = [base, *(f"{base}.{a.name}" for a in node.names)]  # `from pkg import module`
        else:
            continue
        for target in targets:
            parts = target.split(".")
            found.update(m for m in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if m in modules)
    return frozenset(found - {name})


LOADER = method_class.__module__  # ferd.plan.methods: loads the shipped methods by name


@functools.cache
def code_modules(stage: str) -> frozenset[str]:
    """The ferd modules ``ferd stage <stage>`` runs: the import closure of the command line and of the
    stage's module (``ferd.stages.<component>``). The dispatcher (``ferd.stages``) imports every stage's
    module but runs only this one, so its imports of the other stages' modules are not followed (a stage
    module that imports another's, as distillation imports pool-store's loader, still brings it in).
    The methods register when :mod:`ferd.plan.methods` imports :data:`ferd.plan.methods.SHIPPED` on the first
    lookup by name (and ``ferd.baselines`` each of its modules: no import statement to read), so a stage whose
    artifact depends on the method (``method`` in its fingerprint scope: every stage but the teacher's) runs their
    closure, and no other stage follows that import. ``stage`` may also name a command that is no graph
    stage (``compare``: ``ferd compare``'s DVC stages,
    :mod:`ferd.compare.dvc`): the closure of the ``ferd`` script and ``ferd.cli.<stage>``, followed whole."""
    modules = _modules()
    if stage in BY_NAME:
        own = f"{DISPATCHER}.{BY_NAME[stage].component}"
        entries, others = (*ENTRY_MODULES, own), {f"{DISPATCHER}.{s.component}" for s in STAGES} - {own}
    elif (own := f"{ROOT}.cli.{stage}") in modules:
        entries, others = (ENTRY_MODULES[0], own), set()
    else:
        raise ValueError(f"stage: expected a graph stage {sorted(BY_NAME)} or a ferd command, got {stage!r}")
    shipped = {m for m in modules if any(m == s or m.startswith(f"{s}.") for s in SHIPPED)}
    loaded = shipped | {".".join(s.split(".")[:i]) for s in SHIPPED for i in range(2, s.count(".") + 1)}
    if stage not in BY_NAME or "method" in SCOPES[BY_NAME[stage].scope]:  # the method's code, loaded by name
        entries = (*entries, *sorted(shipped))
    seen: set[str] = set()
    todo = [m for m in entries if m in modules]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += [m for m in _imports(name) if not (name == DISPATCHER and m in others)
                 and not (name == LOADER and m in loaded) and (name, m) != GRAPH_CHECK]
    return frozenset(seen)


@functools.cache
def code_paths(stage: str) -> tuple[str, ...]:
    """:func:`code_modules` as sorted paths relative to the package's parent directory (``ferd/settings/config.py``),
    a package whose every module is used collapsed to its directory (``ferd/attacks``)."""
    used = {_modules()[m] for m in code_modules(stage)}
    everything = set(_modules().values())
    whole = {d for d in {f.parent for f in everything}
             if d != PACKAGE and all(f in used for f in everything if d in f.parents)}
    kept = {d for d in whole if not any(p in whole for p in d.parents)}
    files = {f for f in used if not any(d in f.parents for d in kept)}
    return tuple(sorted(p.relative_to(PACKAGE.parent).as_posix() for p in kept | files))


def source_checkout(root: Path) -> bool:
    """Whether the ferd package is part of the project at ``root`` (a checkout, the README's layout) rather
    than installed elsewhere (a site-packages)."""
    try:
        rel = PACKAGE.relative_to(root.resolve())
    except ValueError:
        return False
    return not {"site-packages", "dist-packages"} & set(rel.parts)


def code_deps(stage: str, cfg: FerdConfig, root: str | Path) -> list[str]:
    """The ferd source a stage runs, as DVC ``deps`` relative to ``root`` (the ``dvc.yaml``'s directory):
    when ferd is part of that project, so a change reruns the stages that run it and ``dvc status`` names
    them. Empty when ferd is installed elsewhere (the stage's command then pins the version, :func:`_cmd`)
    or when the stage runs in a container image (the image in the command pins the code)."""
    root = Path(root)
    if cfg.container is not None or not source_checkout(root):
        return []
    return [Path(os.path.relpath(PACKAGE.parent / p, root.resolve())).as_posix() for p in code_paths(stage)]
