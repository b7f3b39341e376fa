"""What an entry point checks before any work: the device, the teacher source and the data a run will
read, each refused in one line naming the field (issue 18: a missing test set was found only at the
evaluation, after all training)."""

from __future__ import annotations

from pathlib import Path

from ..compute.switches import require_device
from ..core.storage import S3Settings
from ..settings.config import FerdConfig
from ..data import require_split


def require_teacher_source(cfg: FerdConfig) -> None:
    """A local ``teacher.source`` must be a file; ``train:<dataset>`` needs that dataset's train split."""
    source = cfg.teacher.source
    if source.startswith("train:"):
        require_split(source.split(":", 1)[1], "train", cfg.data_root, storage=S3Settings.from_config(cfg.storage))
    elif cfg.teacher.local_file is not None and not Path(source).is_file():
        raise FileNotFoundError(f"teacher.source: no checkpoint file at {source}")


def preflight(cfg: FerdConfig, *, teacher: bool = True, evaluation: bool = True) -> None:
    """The device, then (``teacher``) the teacher source, then (``evaluation``) the test split."""
    require_device(cfg.device)
    if teacher:
        require_teacher_source(cfg)
    if evaluation and cfg.evaluation.attacks:
        require_split(cfg.dataset, "test", cfg.data_root, storage=S3Settings.from_config(cfg.storage))
