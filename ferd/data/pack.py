"""``ferd data pack``: a dataset's splits as ``<dataset>_<split>.npz`` files with their ``dataset.json`` (sealed, and
signed when ``$FERD_SIGNING_KEY`` is set: :mod:`ferd.data.dataset_json`), in a folder or a bucket, in the layout
:mod:`ferd.data.remote` reads back."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..core.checkpoint import atomic_write_json, copy_file, sha256_file
from ..core.dataset_catalog import dataset_info
from ..core.storage import is_s3, join_uri, s3_client, upload_file
from .datasets import load_split
from .dataset_json import DATASET_MANIFEST, PACKABLE, build, file_name


def pack(dataset: str, source: str | os.PathLike[str], dest: str, split: str | None = None) -> list[str]:
    """Write ``dataset``'s splits found at ``source`` (a folder the loader reads, or one ``.npz`` holding
    ``split``) to ``dest`` (a folder or ``s3://…``) with their ``dataset.json``; returns the files written."""
    if dataset not in PACKABLE:
        raise ValueError(f"--dataset: expected one of {list(PACKABLE)} (tiny-imagenet is an image folder: mount "
                         f"it as a volume), got {dataset!r}")
    info = dataset_info(dataset)
    src = Path(source)
    if src.is_file() and split is None:
        raise ValueError("--split: required when --from is one .npz file (which split it holds: train or test)")
    splits = [split] if split else [s for s in info.splits]
    files: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        staging = Path(tmp)
        for s in splits:
            try:
                x, y = load_split(dataset, s, root=src)
            except FileNotFoundError:
                if split:
                    raise
                continue
            name = file_name(dataset, s)
            images = x.permute(0, 2, 3, 1).mul(255).round().clamp(0, 255).to(torch.uint8).numpy()
            np.savez(staging / name, images=images, labels=y.numpy().astype(np.int64),
                     classes=np.array(info.class_names))
            files[name] = {"split": s, "rows": int(len(y)), "bytes": (staging / name).stat().st_size,
                           "sha256": sha256_file(staging / name)}
        if not files:
            raise FileNotFoundError(f"--from: no {dataset} split found at {src}")
        atomic_write_json(staging / DATASET_MANIFEST, build(dataset, files))  # sealed; signed under the key
        names = [*sorted(files), DATASET_MANIFEST]  # the manifest last: a listed file is complete
        if is_s3(dest):
            client = s3_client()
            for n in names:
                upload_file(client, staging / n, join_uri(dest, n))
        else:
            out = Path(dest)
            out.mkdir(parents=True, exist_ok=True)
            for n in names:
                copy_file(staging / n, out / n)
        return [join_uri(dest, n) if is_s3(dest) else str(Path(dest) / n) for n in names]
