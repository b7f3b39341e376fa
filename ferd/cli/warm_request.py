"""The schema of a stage process's request to the ``ferd warm`` worker (:mod:`ferd.cli.warm_protocol`).

Only ``ferd stage …`` is served: the worker forks whatever argv it accepts, so a request for another
command (``run``, ``warm``, ``compare``) is refused like a malformed one.
"""

from __future__ import annotations

import json
import os

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


def _no_nul(text: str, what: str) -> str:
    if "\0" in text:
        raise ValueError(f"{what} contains a NUL character")
    return text


class Request(BaseModel):
    """``{"argv", "cwd", "env", "unset"}``: the stage's argv, its working directory, the variables it has
    otherwise than the worker, and the worker's variables it lacks."""

    model_config = ConfigDict(strict=True, extra="forbid")
    argv: list[str] = Field(min_length=1)
    cwd: str
    env: dict[str, str]
    unset: list[str]

    @field_validator("argv")
    @classmethod
    def _stage(cls, argv: list[str]) -> list[str]:
        if argv[0] != "stage":
            raise ValueError(f"only `ferd stage …` runs in the worker, not `ferd {argv[0][:40]} …`")
        for arg in argv:
            _no_nul(arg, "an argument")
        return argv

    @field_validator("cwd")
    @classmethod
    def _absolute(cls, cwd: str) -> str:
        if not os.path.isabs(_no_nul(cwd, "cwd")):
            raise ValueError(f"expected an absolute directory, got {cwd!r}")
        return cwd

    @field_validator("env")
    @classmethod
    def _variables(cls, env: dict[str, str]) -> dict[str, str]:
        for name, value in env.items():
            if not name or "=" in name:
                raise ValueError(f"{name!r} is not a variable name")
            _no_nul(name + value, f"variable {name}")
        return env


def parse_request(line: bytes) -> Request:
    """The request in ``line``; ValueError with one line naming the field otherwise."""
    try:
        return Request.model_validate(json.loads(line))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "request"
        if first["type"] == "value_error":  # our validators' own line says what was given
            raise ValueError(f"{where}: {first['ctx']['error']}") from None
        raise ValueError(f"{where}: {first['msg']} (got {str(first.get('input'))[:80]!r})") from None
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested past the parser's depth
        raise ValueError(f"not a JSON request: {exc}") from None
