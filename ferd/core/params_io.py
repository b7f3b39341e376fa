"""Reading parameters safely: YAML without aliases and of bounded size, and messages of bounded length.

Parameters arrive from files, ``-S KEY=VALUE`` overrides, comparison presets and the Kubeflow
``overrides`` parameter; each goes through :func:`load_yaml`. A refusal is a :class:`ConfigError`
(exit status 2) naming where the text came from and the line.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

MAX_YAML_BYTES = 1 << 20  # a parameter file or override; the presets are a few kB


class StrictModel(BaseModel):
    """A parameter group: unknown keys refused, and immutable once validated, so a resolved plan cannot be changed
    behind the resolver's back. ``model_copy(update=…)`` makes a changed copy WITHOUT validating it: only the resolver
    and ``ferd bench`` use it, for settings they derive from valid ones; user input goes through
    :func:`ferd.plan.resolve.parse_config`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # no .inf/.nan hyper-parameter


def dotted(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping (a dumped parameter file) as ``{"group.key": value}``, leaves in order."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(dotted(v, key) if isinstance(v, Mapping) else {key: v})
    return out


class ConfigError(ValueError):
    """A parameter was refused; the message names every offending key."""


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr`` of user input, bounded: a message never grows with what it quotes."""
    r = reprlib.Repr()
    r.maxstring, r.maxother, r.maxlist, r.maxdict, r.maxlevel = limit, limit, 6, 6, 2
    text = r.repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


MAX_YAML_DEPTH = 32  # parameter groups nest two or three levels; deeper is refused before Python's recursion limit
# Plain scalars that YAML 1.1 (PyYAML, which ferd reads with) and YAML 1.2 (DVC's reader) resolve differently: octal
# 050 (40 or 50), sexagesimal 1:30 (90 or a string), 1_000 and 0b101 (numbers or strings), yes/no/on/off (booleans
# or strings). DVC would then see no change where ferd sees one, or the reverse: refused, with the fix.
_AMBIGUOUS = re.compile(r"[-+]?0[0-9_]+(\.[0-9_]*)?|[-+]?0b[01_]+|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?"
                        r"|[-+]?[0-9]+_[0-9_]*(\.[0-9_]*)?|yes|Yes|YES|no|No|NO|on|On|ON|off|Off|OFF")


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: an alias bomb (``a: &a [x, x]``, ``b: &b [*a, *a]``, …) expands a few
    hundred bytes into gigabytes; parameters never need one. Nesting is capped (:data:`MAX_YAML_DEPTH`), a
    plain scalar YAML 1.1 and 1.2 read differently (:data:`_AMBIGUOUS`) is refused, and so is a key given twice."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.events.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in parameters",
                                              event.start_mark)
        if (isinstance(event, yaml.events.ScalarEvent) and event.style is None and event.implicit[0]
                and _AMBIGUOUS.fullmatch(event.value)):
            raise yaml.composer.ComposerError(
                None, None, f"{event.value[:20]!r}: YAML 1.1 (ferd) and 1.2 (DVC) read it differently; write 50, 90, "
                "1000, true/false, or quote it", event.start_mark)
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels",
                                                  event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """A key given twice is refused at its second line: YAML 1.1 (ferd) keeps the last silently, DVC refuses
        the file, and in a comparison preset the first arm of that name would vanish from the table."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` merges a mapping: its keys may repeat by design
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: the base class says so
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"{str(key)[:40]!r} given twice; expected each key "
                                                        "once", key_node.start_mark)
        return super().construct_mapping(node, deep)


def read_yaml_file(path: Path, what: str = "params file") -> Any:
    """Parse a parameter YAML file (:func:`load_yaml`) after checking it is a regular file of at most
    :data:`MAX_YAML_BYTES` (a pipe, a device or a huge file refused by its size, before reading it);
    ``FileNotFoundError`` when there is none."""
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if not path.is_file():
        raise ConfigError(f"{what} {path}: not a regular file (a directory, pipe or device); expected a YAML file")
    if (size := path.stat().st_size) > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: {size} bytes; parameters are at most {MAX_YAML_BYTES} bytes")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; expected a YAML mapping of parameter groups") from None
    return load_yaml(text, str(path))


def load_yaml(text: str, where: str) -> Any:
    """Parse parameter YAML (a file, an ``-S`` value, a preset), refusing aliases and texts over
    :data:`MAX_YAML_BYTES`; a :class:`ConfigError` naming ``where`` and the line otherwise."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{where}: {len(text)} characters; parameters are at most {MAX_YAML_BYTES} bytes")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{where}: not valid parameter YAML{at}: {str(problem)[:120]}") from None
