"""A tiny comparison preset for tests: the CI parameters, cnn-8, FERD against CMI, one seed unless changed."""

from __future__ import annotations

from pathlib import Path

import yaml


def tiny_preset(tmp_path: Path, **changes) -> Path:
    """``tmp_path/p.yaml``: ``base: ci``, student cnn-8, seed 0, arms ``ferd`` and ``cmi``, with ``changes`` on top."""
    data = {"base": "ci", "students": ["cnn-8"], "seeds": [0], "methods": {"ferd": [], "cmi": ["method=cmi"]}}
    data.update(changes)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
