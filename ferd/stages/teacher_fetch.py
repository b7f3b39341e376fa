"""Stage 1, teacher fetch: a verified teacher checkpoint plus its model card.

``teacher.source`` may be

* ``train:<dataset>`` — PGD adversarial training on the dataset (the embedded default:
  ``train:digits``, minutes on a CPU);
* a local path — a state_dict (safetensors, or ``torch.load(weights_only=True)``);
* ``https://…`` (or ``http://``) — downloaded, then checked against ``teacher.sha256``,
  which is **required** for URLs;
* ``s3://bucket/key`` — downloaded with boto3 (credentials and ``AWS_ENDPOINT_URL`` from the
  environment; in Kubeflow from the ``use_secret_as_env`` secret), checked against
  ``teacher.sha256`` when given;
* ``robustbench:<model name>`` — a RobustBench model (``dataset``, L∞); needs the
  ``robustbench`` package and internet access, neither of which the image or CI has.

Output directory: ``teacher.safetensors`` (the state_dict, normalised and checked against
``teacher.arch`` / ``num_classes``, NaN/Inf refused), ``model_card.json`` (arch,
num_classes, mean, std, sha256 of ``teacher.safetensors``, source, and the source file's
sha256), ``manifest.json``.
"""

from __future__ import annotations

import logging
import os
import shutil
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import atomic_path, sha256_file, verify_sha256
from ..config import FerdConfig
from ..provenance import utc_now
from ..models import FerdModel
from ..teacher import load_model
from ..fingerprint import params_fingerprint
from ..teacher_source import CARD_NAME, CHECKPOINT_NAME, obtain_teacher
from .artifacts import ArtifactError, read_json, read_manifest, write_json, write_manifest

log = logging.getLogger(__name__)

STAGE = "teacher"
DOWNLOAD_DIR = ".download"  # hidden: not part of the artifact's manifest


@dataclass(frozen=True)
class TeacherArtifact:
    dir: Path
    checkpoint: Path
    model_card: Path
    card: dict


def _download_url(url: str, dest: Path, timeout: float = 120.0) -> Path:
    with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_path(dest) as tmp:  # noqa: S310 (checked scheme)
        with open(tmp, "wb") as f:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
    return dest


def _download_s3(uri: str, dest: Path) -> Path:
    import boto3

    parsed = urllib.parse.urlparse(uri)
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not bucket or not key:
        raise ValueError(f"teacher.source: expected s3://bucket/key, got {uri!r}")
    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    with atomic_path(dest) as tmp:
        client.download_file(bucket, key, str(tmp))
    return dest


def _robustbench(name: str, cfg: FerdConfig, dest_dir: Path) -> Path:
    try:
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
        from robustbench.utils import load_model as rb_load
    except ImportError as exc:
        raise ValueError(f"teacher.source: robustbench:{name} needs the robustbench package and internet "
                         "access (pip install robustbench); neither is in the image or CI. Download the "
                         "checkpoint once and give its path, s3:// or https:// URI instead.") from exc
    ds = {"cifar10": BenchmarkDataset.cifar_10, "cifar100": BenchmarkDataset.cifar_100}.get(cfg.dataset)
    if ds is None:
        raise ValueError(f"teacher.source: RobustBench has no {cfg.dataset!r} models")
    rb_load(name, model_dir=str(dest_dir), dataset=ds, threat_model=ThreatModel.Linf)
    path = dest_dir / ds.value / ThreatModel.Linf.value / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"teacher.source: RobustBench did not leave a checkpoint at {path}")
    return path


def resolve_source(cfg: FerdConfig, out_dir: Path) -> tuple[Path | None, str]:
    """A local file for the source (downloading it if needed), or None for ``train:``; and the source string."""
    source = cfg.teacher.source
    if source.startswith("train:"):
        return None, source
    scheme = urllib.parse.urlparse(source).scheme
    downloads = out_dir / DOWNLOAD_DIR
    name = Path(urllib.parse.urlparse(source).path).name or "teacher.ckpt"
    if scheme in ("http", "https"):
        if cfg.teacher.sha256 is None and not cfg.teacher.allow_unverified_url:
            raise ValueError(f"teacher.sha256: required for a URL source ({source}); give the checkpoint's sha256 "
                             "(or set teacher.allow_unverified_url: true to accept any bytes)")
        path = _download_url(source, downloads / name)
    elif scheme == "s3":
        path = _download_s3(source, downloads / name)
    elif source.startswith("robustbench:"):
        path = _robustbench(source.split(":", 1)[1], cfg, downloads)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"teacher.source: checkpoint not found: {path}")
    if cfg.teacher.sha256 is not None:
        verify_sha256(path, cfg.teacher.sha256)
    return path, source


def teacher_fetch(cfg: FerdConfig, out_dir: str | os.PathLike[str], *, progress: bool = False) -> TeacherArtifact:
    """Fetch (or train) the teacher named by ``cfg.teacher.source`` into ``out_dir``."""
    started = utc_now()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    local, source = resolve_source(cfg, out)
    if local is None:
        _, card = obtain_teacher(cfg, out, progress=progress)
    else:
        local_cfg = cfg.model_copy(deep=True)
        local_cfg.teacher.source = str(local)
        local_cfg.teacher.sha256 = None  # verified above (URL, S3 and local alike)
        # never reuse a card made from another source
        for stale in (out / CARD_NAME, out / CHECKPOINT_NAME):
            stale.unlink(missing_ok=True)
        _, card = obtain_teacher(local_cfg, out, progress=progress)
        # the card names the real source and the real parameters (not the local copy's)
        card.update({"source": source, "source_sha256": sha256_file(local), "params_sha256": params_fingerprint(cfg, "teacher")})
        write_json(out / CARD_NAME, card)
        if local.is_relative_to(out / DOWNLOAD_DIR):
            shutil.rmtree(out / DOWNLOAD_DIR, ignore_errors=True)
    write_manifest(out, STAGE, cfg, started=started, extra={"source": source, "sha256": card["sha256"]})
    return TeacherArtifact(out, out / CHECKPOINT_NAME, out / CARD_NAME, card)


def load_teacher(cfg: FerdConfig, teacher_dir: str | os.PathLike[str]) -> tuple[FerdModel, dict]:
    """The teacher of a teacher artifact on ``cfg.device``: checked, eval mode, frozen."""
    read_manifest(teacher_dir, STAGE, cfg, what="teacher")
    d = Path(teacher_dir)
    card = read_json(d / CARD_NAME)
    if card.get("arch") != cfg.teacher.arch or card.get("num_classes") != cfg.num_classes:
        raise ArtifactError(f"teacher: {d} holds a {card.get('arch')} with {card.get('num_classes')} classes, "
                            f"expected {cfg.teacher.arch} with {cfg.num_classes}")
    model = load_model(d / card.get("checkpoint", CHECKPOINT_NAME), card["arch"], card["num_classes"],
                       card.get("mean"), card.get("std"), sha256=card["sha256"])
    return model.to(cfg.device).eval().requires_grad_(False), card


def describe(artifact: TeacherArtifact) -> dict:
    return {"dir": str(artifact.dir), "checkpoint": str(artifact.checkpoint), "sha256": artifact.card["sha256"],
            "source": artifact.card["source"], "arch": artifact.card["arch"]}


__all__ = ["TeacherArtifact", "describe", "load_teacher", "resolve_source", "teacher_fetch"]
