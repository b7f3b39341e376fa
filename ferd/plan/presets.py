"""Presets and ``params.yaml``: a preset name → its file, and the resolved parameters rendered as the
project's ``params.yaml`` (every key with its value and description, grouped as the stages read them).
``ferd params`` (:mod:`ferd.cli.params`) writes it; DVC reads it; every stage validates it again."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from ..settings.config import FerdConfig

GROUP_NOTES = {
    "seed": "run: read by every stage",
    "threat": "threat model: teacher training, reweighting PGD, UTAEs, evaluation",
    "teacher": "stage teacher-fetch",
    "student": "the student of stages synthesis-r* (L_adv) and distillation-r*",
    "synthesis": "stages synthesis-r* (generator, Eq. 1-9 and reweighting)",
    "distill": "stages distillation-r* (UTAE, Eq. 10-11)",
    "evaluation": "stage evaluation",
    "compute": "numerics of stages synthesis-r* and distillation-r* (evaluation always fp32)",
    "storage": "where artifacts go besides the local copy (every stage; no result depends on it)",
}
HEADER = ("# FERD parameters: every hyper-parameter, resolved. Written by `ferd params use <preset>` from\n"
          "# params/<preset>.yaml (this file: {source}); edit freely or `dvc exp run -S key=value`.\n"
          "# Validated by every stage before any work. Changed rounds, method, teacher.source, a local\n"
          "# data_root, evaluation.attacks or container? run `ferd params dvc-yaml`.\n")


def _scalar(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text.removesuffix("...").strip()


def _emit(model: BaseModel, indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if indent == 0 and name in GROUP_NOTES:
            lines.append(f"\n# ---- {GROUP_NOTES[name]} ----")
        if isinstance(value, BaseModel):
            lines.append(f"{pad}{name}:")
            _emit(value, indent + 2, lines)
            continue
        text = f"{pad}{name}: {_scalar(value)}"
        if info.description:
            text += f"  # {info.description}"
        lines.append(text)


def render_params(cfg: FerdConfig, source: str) -> str:
    lines: list[str] = []
    _emit(cfg, 0, lines)
    text = HEADER.format(source=source) + "\n".join(lines) + "\n"
    if load_config_text(text) != cfg:  # the file must read back to exactly this configuration
        raise AssertionError("params.yaml does not round-trip")
    return text


def load_config_text(text: str) -> FerdConfig:
    from .resolve import parse_config
    from ..core.params_io import load_yaml

    return parse_config(load_yaml(text, "params.yaml"))


PRESETS = Path(__file__).resolve().parents[1] / "params"  # the presets shipped with ferd (package data)


def find_preset(name: str) -> Path | None:
    """A preset's file by name: ``./params/<name>.yaml`` of the working directory (a project's own
    presets win), else the one shipped in ``ferd/params/``; None when neither exists."""
    for folder in (Path("params"), PRESETS):
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return None


def params_file(text: str) -> Path:
    """``--params``: the file named, else, when there is none, the preset it names (``params/<name>.yaml`` or
    ``<name>``, :func:`find_preset`), so the commands the docs print work outside a checkout too."""
    path = Path(text)
    if path.exists():
        return path
    name = (path.stem if path.suffix in (".yaml", ".yml") and path.parent == Path("params")
            else text if path.suffix == "" and len(path.parts) == 1 else None)
    found = find_preset(name) if name else None
    if found is None:
        return path
    print(f"ferd: --params {text}: using the preset shipped with ferd ({found}; no such file here)", file=sys.stderr)
    return found


def known_presets(prefix: str = "", exclude: str | None = None) -> list[str]:
    """The names :func:`find_preset` resolves, starting with ``prefix`` (and not with ``exclude``)."""
    names = {q.stem for folder in (Path("params"), PRESETS) if folder.is_dir() for q in folder.glob("*.yaml")}
    return sorted(n for n in names if n.startswith(prefix) and not (exclude and n.startswith(exclude)))


def preset_label(path: Path) -> str:
    """How ``params.yaml``'s header names the preset it was written from: a preset found among those shipped with
    ferd (:data:`PRESETS`, not ``./params/``) by its name and ferd's version (outside a checkout its path is a
    site-packages folder, which differs per machine); any other file, ``./params/<name>.yaml`` included, by the
    path given."""
    from .. import __version__

    if path.is_absolute() and path.resolve().parent == PRESETS:
        return f"params/{path.name} shipped with ferd {__version__}"
    return path.as_posix()


def preset_path(name: str) -> Path:
    """``ferd params use NAME``: a path to a .yaml file, or a preset's name (:func:`find_preset`)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    if name.startswith("compare-"):
        raise ValueError(f"params use: {name!r} is a comparison preset; run it with `ferd compare --preset {name}`")
    found = find_preset(name)
    if found is None:
        raise FileNotFoundError(f"params use: no preset {name!r}; expected one of "
                                f"{known_presets(exclude='compare-')} or a path to a .yaml file")
    return found
