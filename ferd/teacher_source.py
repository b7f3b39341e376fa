"""Where a teacher comes from: a local checkpoint, or ``train:<dataset>`` (PGD adversarial training).

Returns the model (eval mode, frozen) and a *model card*: arch, num_classes, normalisation,
the checkpoint's sha256 and how it was obtained.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from . import rng
from .checkpoint import atomic_write_bytes, save_state_dict, sha256_file
from .config import FerdConfig
from .fingerprint import params_fingerprint
from .models import FerdModel, create_model
from .teacher import load_model, train_robust_teacher

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "teacher.safetensors"
CARD_NAME = "model_card.json"


def _card(cfg: FerdConfig, path: Path, source: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    t = cfg.teacher
    return {"arch": t.arch, "num_classes": cfg.num_classes, "mean": t.mean, "std": t.std,
            "sha256": sha256_file(path), "checkpoint": path.name, "source": source,
            "params_sha256": params_fingerprint(cfg, "teacher"), **(extra or {})}


def train_teacher(cfg: FerdConfig, dataset: str, out_dir: Path, progress: bool = True) -> tuple[FerdModel, dict]:
    """Train ``teacher.arch`` on ``dataset``'s train split with PGD-AT; write checkpoint and card."""
    from .data import load_split

    t, tr = cfg.teacher, cfg.teacher.train
    x, y = load_split(dataset, "train", root=cfg.data_root)
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
    """Load or train the teacher named by ``cfg.teacher.source`` into ``out_dir``.

    A teacher already in ``out_dir`` is reused (after its sha256 is verified) only when its
    card was made from the same teacher parameters, dataset, ε and seed.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    card_path, ckpt = out_dir / CARD_NAME, out_dir / CHECKPOINT_NAME
    source = cfg.teacher.source
    if card_path.is_file() and ckpt.is_file():
        card = json.loads(card_path.read_text())
        if card.get("params_sha256") == params_fingerprint(cfg, "teacher"):
            log.info("reusing teacher %s (sha256 %s)", ckpt, card["sha256"])
            return load_model(ckpt, cfg.teacher.arch, cfg.num_classes, cfg.teacher.mean, cfg.teacher.std,
                              sha256=card["sha256"]), card
    if source.startswith("train:"):
        dataset = source.split(":", 1)[1]
        if dataset != cfg.dataset:
            raise ValueError(f"teacher.source: train:{dataset} does not match dataset {cfg.dataset!r}")
        model, card = train_teacher(cfg, dataset, out_dir, progress)
    else:
        src = Path(source)
        if not src.is_file():
            raise FileNotFoundError(f"teacher.source: checkpoint not found: {src}")
        model = load_model(src, cfg.teacher.arch, cfg.num_classes, cfg.teacher.mean, cfg.teacher.std,
                           sha256=cfg.teacher.sha256)
        save_state_dict(model.state_dict(), ckpt, metadata={"arch": cfg.teacher.arch,
                                                            "num_classes": str(cfg.num_classes)})
        card = _card(cfg, ckpt, source, {"source_sha256": sha256_file(src)})
    atomic_write_bytes(card_path, json.dumps(card, indent=2).encode())
    return model, card
