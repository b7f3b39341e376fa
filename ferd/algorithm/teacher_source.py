"""Where a teacher comes from. ``teacher.source`` may be

* ``train:<dataset>`` — PGD adversarial training on the dataset (the embedded default:
  ``train:digits``, minutes on a CPU);
* a local path — a state_dict (safetensors, or ``torch.load(weights_only=True)``);
* ``https://…`` (or ``http://``) — downloaded, then checked against ``teacher.sha256``,
  which is **required** for URLs;
* ``s3://bucket/key`` — downloaded with the run's ``storage`` settings (``storage.endpoint_url``, else
  ``AWS_ENDPOINT_URL``; region, retries, time-outs; credentials from the environment, in Kubeflow from the
  ``use_secret_as_env`` secret), checked against ``teacher.sha256`` when given;
* ``robustbench:<model name>`` — a RobustBench model (``dataset``, L∞); needs the
  ``robustbench`` package and internet access, neither of which the image or CI has.

:func:`obtain_teacher` returns the model (eval mode, frozen) and a *model card*: arch, num_classes,
normalisation, the checkpoint's sha256, the source and the source file's sha256.
"""

from __future__ import annotations

import json
import logging
import shutil
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ..core import rng
from ..core.checkpoint import atomic_path, atomic_write_bytes, save_state_dict, sha256_file, verify_sha256
from ..core.storage import S3Settings, download_file, s3_client
from ..settings.config import FerdConfig
from ..plan.fingerprint import params_fingerprint
from ..plan.resolve import teacher_source_errors
from ..models import FerdModel, create_model
from .adversarial_training import train_robust_teacher
from ..models.loading import load_model

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "teacher.safetensors"
CARD_NAME = "model_card.json"
DOWNLOAD_DIR = ".download"  # hidden: not part of the teacher artifact's manifest


def _card(cfg: FerdConfig, path: Path, source: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    t = cfg.teacher
    return {"arch": t.arch, "num_classes": cfg.num_classes, "mean": t.mean, "std": t.std,
            "sha256": sha256_file(path), "checkpoint": path.name, "source": source,
            "params_sha256": params_fingerprint(cfg, "teacher"), **(extra or {})}


def train_teacher(cfg: FerdConfig, dataset: str, out_dir: Path, progress: bool = True) -> tuple[FerdModel, dict]:
    """Train ``teacher.arch`` on ``dataset``'s train split with PGD-AT; write checkpoint and card."""
    from ..data import load_split

    t, tr = cfg.teacher, cfg.teacher.train
    x, y = load_split(dataset, "train", root=cfg.data_root, storage=S3Settings.from_config(cfg.storage))
    with rng.seeded(cfg.seed, "teacher-init"):
        model = create_model(t.arch, num_classes=cfg.num_classes, mean=t.mean, std=t.std).to(cfg.device)
    alpha = 2.5 * cfg.threat.eps / tr.pgd_steps
    train_robust_teacher(model, x.to(cfg.device), y.to(cfg.device), eps=cfg.threat.eps, alpha=alpha,
                         steps=tr.pgd_steps, epochs=tr.epochs, batch_size=tr.batch_size, lr=tr.lr,
                         weight_decay=tr.weight_decay, seed=rng.derive_seed(cfg.seed, "teacher-train") % (2**31),
                         augment=tr.augment, progress=progress)
    path = out_dir / CHECKPOINT_NAME
    save_state_dict(model.state_dict(), path, metadata={"arch": t.arch, "num_classes": str(cfg.num_classes)})
    card = _card(cfg, path, f"train:{dataset}", {"training": {**tr.model_dump(), "eps": cfg.threat.eps,
                                                               "alpha": alpha, "seed": cfg.seed}})
    return model.eval().requires_grad_(False), card


def obtain_teacher(cfg: FerdConfig, out_dir: str | Path, progress: bool = True) -> tuple[FerdModel, dict]:
    """Load, download or train the teacher named by ``cfg.teacher.source`` into ``out_dir``: every kind of
    source, behind every entry point (``ferd run``, ``ferd compare``, the teacher-fetch stage).

    A teacher already in ``out_dir`` is reused (after its sha256 is verified) only when its card was made
    from the same teacher parameters (``teacher`` fingerprint: the source, the teacher group, the dataset,
    ε and the seed) and ``teacher.sha256`` pins nothing. A pinned teacher is checked against the source's
    bytes every time it is used, never against a card: the source (a download kept under ``.download/``
    once verified) is re-hashed against the pin and converted again, so a swapped copy with an edited
    card is replaced, not used.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    card_path, ckpt = out_dir / CARD_NAME, out_dir / CHECKPOINT_NAME
    source = cfg.teacher.source
    if card_path.is_file() and ckpt.is_file() and cfg.teacher.sha256 is None:
        card = json.loads(card_path.read_text())
        if card.get("params_sha256") == params_fingerprint(cfg, "teacher"):
            log.info("reusing teacher %s (sha256 %s)", ckpt, card["sha256"])
            return load_model(ckpt, cfg.teacher.arch, cfg.num_classes, cfg.teacher.mean, cfg.teacher.std,
                              sha256=card["sha256"]), card
        log.warning("%s: a teacher made with other teacher parameters (sha256 %s); replaced by this run's",
                    out_dir, str(card.get("sha256"))[:12])
    local = resolve_source(cfg, out_dir)
    if local is None:
        dataset = source.split(":", 1)[1]
        if dataset != cfg.dataset:
            raise ValueError(f"teacher.source: train:{dataset} does not match dataset {cfg.dataset!r}")
        model, card = train_teacher(cfg, dataset, out_dir, progress)
    else:
        model = load_model(local, cfg.teacher.arch, cfg.num_classes, cfg.teacher.mean, cfg.teacher.std)
        save_state_dict(model.state_dict(), ckpt, metadata={"arch": cfg.teacher.arch,
                                                            "num_classes": str(cfg.num_classes)})
        card = _card(cfg, ckpt, source, {"source_sha256": sha256_file(local)})
        if cfg.teacher.sha256 is None:  # a pinned download is kept: the next use re-hashes it, not the network
            shutil.rmtree(out_dir / DOWNLOAD_DIR, ignore_errors=True)
    atomic_write_bytes(card_path, json.dumps(card, indent=2).encode())
    return model, card


def _download_url(url: str, dest: Path, timeout: float = 120.0) -> Path:
    with urllib.request.urlopen(url, timeout=timeout) as resp, atomic_path(dest) as tmp:  # noqa: S310 (checked scheme)
        with open(tmp, "wb") as f:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
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


def resolve_source(cfg: FerdConfig, out_dir: Path) -> Path | None:
    """A local, verified file for ``teacher.source`` (downloaded into ``out_dir/.download`` if needed), or None
    for ``train:``."""
    source = cfg.teacher.source
    if problems := teacher_source_errors(cfg):  # again here: a copied configuration is not validated, and this
        raise ValueError(problems[0])           # rule keeps unverified bytes out (ferd.plan.resolve)
    if source.startswith("train:"):
        return None
    scheme = urllib.parse.urlparse(source).scheme
    downloads = out_dir / DOWNLOAD_DIR
    name = Path(urllib.parse.urlparse(source).path).name or "teacher.ckpt"
    cached = downloads / name
    pin = cfg.teacher.sha256
    if scheme in ("http", "https", "s3") and pin is not None and cached.is_file() and sha256_file(cached) == pin:
        path = cached  # verified against the pin just now
    elif scheme in ("http", "https"):  # a pin or allow_unverified_url: checked when the parameters are read
        path = _download_url(source, downloads / name)
    elif scheme == "s3":
        path = download_file(s3_client(S3Settings.from_config(cfg.storage)), source, downloads / name)  # exit 4
    elif source.startswith("robustbench:"):
        path = _robustbench(source.split(":", 1)[1], cfg, downloads)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"teacher.source: checkpoint not found: {path}")
    if cfg.teacher.sha256 is not None:
        verify_sha256(path, cfg.teacher.sha256)
    return path
