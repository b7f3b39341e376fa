"""Presets and ``params.yaml``: a preset name → its file, and the resolved parameters rendered as the
project's ``params.yaml`` (every key with its value and description, grouped as the stages read them).
``ferd params`` (:mod:`ferd.cli.params`) writes it; DVC reads it; every stage validates it again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from .config import FerdConfig

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
          "# Validated by every stage before any work. Rounds changed? run `ferd params dvc-yaml`.\n")


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
    from .config import parse_config
    from .params_io import load_yaml

    return parse_config(load_yaml(text, "params.yaml"))


def preset_path(name: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        return p
    candidate = Path("params") / f"{name}.yaml"
    if name.startswith("compare-"):
        raise ValueError(f"params use: {name!r} is a comparison preset; run it with `ferd compare --preset {name}`")
    if not candidate.is_file():
        known = sorted(q.stem for q in Path("params").glob("*.yaml") if not q.stem.startswith("compare-"))
        raise FileNotFoundError(f"params use: no preset {name!r}; expected one of {known} (in ./params) "
                                "or a path to a .yaml file")
    return candidate
