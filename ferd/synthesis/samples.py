"""A round's kept synthetic images as one PNG: a row per class (its name printed on the left; at most
:data:`MAX_ROWS` classes, spread evenly over the indices, where a dataset has more), up to ``per_class`` images each — the first ones of that class in the round's shard (the FAEs the round kept),
pixel values as they are in [0, 1].

The PNG is deterministic: :func:`torchvision.utils.make_grid` then Pillow, with no metadata (no timestamp,
no software tag), so the same images give the same bytes and a resumed run rewrites a grid identically.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from ..core.checkpoint import atomic_write_bytes
from ..data.pool import Shard

PER_CLASS = 8
"""Images per class (row) in a grid."""
MAX_ROWS = 20
"""Classes (rows) a grid shows at most: CIFAR-100's 100 and Tiny-ImageNet's 200 would make a grid dozens of
screens high, so those show 20 classes spread evenly over the indices (:func:`shown_classes`)."""
MIN_SIDE = 32
"""Images smaller than this many pixels are enlarged by an integer factor (nearest neighbour): 8×8 digits
become 32×32 cells."""
SAMPLES_DIR = "samples"
"""``ferd run``'s folder of per-round grids (``round-NN.png``)."""
SAMPLES_FILE = "samples.png"
"""The grid in a synthesis stage's artifact."""
PAD, LABEL_CHARS, BACKGROUND = 2, 16, 255


def round_file(round_index: int) -> str:
    """The name of round ``round_index``'s grid in ``ferd run``'s :data:`SAMPLES_DIR`."""
    return f"round-{round_index:02d}.png"


def shown_classes(num_classes: int) -> list[int]:
    """The classes a grid shows, one row each: all of them, or :data:`MAX_ROWS` spread evenly over the indices."""
    if num_classes <= MAX_ROWS:
        return list(range(num_classes))
    return [i * num_classes // MAX_ROWS for i in range(MAX_ROWS)]


def class_grid(images: torch.Tensor, labels: torch.Tensor, num_classes: int, per_class: int = PER_CLASS
               ) -> torch.Tensor:
    """A 3×H×W image of ``images`` (N×C×h×w in [0, 1]): row k holds the first ``per_class`` images with label
    ``shown_classes(num_classes)[k]`` in order, the rest of the row blank (white)."""
    if images.ndim != 4 or labels.shape != images.shape[:1]:
        raise ValueError(f"images: expected N×C×H×W with N labels, got {tuple(images.shape)} and "
                         f"{tuple(labels.shape)} labels")
    from torchvision.utils import make_grid

    images = images.detach().float().cpu()
    labels = labels.detach().cpu()
    scale = max(1, math.ceil(MIN_SIDE / max(images.shape[-2:])))
    if scale > 1:
        images = images.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    classes = shown_classes(num_classes)
    cells = torch.ones(len(classes) * per_class, *images.shape[1:])
    for row, c in enumerate(classes):
        mine = images[labels == c][:per_class]
        cells[row * per_class:row * per_class + len(mine)] = mine
    return make_grid(cells, nrow=per_class, padding=PAD, pad_value=1.0)


def grid_png(images: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str],
             per_class: int = PER_CLASS) -> bytes:
    """The PNG bytes of :func:`class_grid` with each row's class name (or index) printed on its left."""
    from PIL import Image, ImageDraw

    grid = class_grid(images, labels, len(class_names), per_class)
    pixels = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    body = Image.fromarray(pixels)
    classes = shown_classes(len(class_names))
    labels_text = [(class_names[c] if class_names[c] == str(c) else f"{c} {class_names[c]}")[:LABEL_CHARS]
                   for c in classes]
    margin = 8 + math.ceil(max(ImageDraw.Draw(body).textlength(t) for t in labels_text))
    canvas = Image.new("RGB", (margin + body.width, body.height), (BACKGROUND,) * 3)
    canvas.paste(body, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    row = (body.height - PAD) // max(1, len(classes))
    for c, text in enumerate(labels_text):
        draw.text((4, PAD + c * row + row // 2), text, fill=(0, 0, 0), anchor="lm")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")  # Pillow writes no tIME/tEXt chunk unless asked: the same bytes every time
    return buf.getvalue()


def write_grid(path: str | os.PathLike[str], images: torch.Tensor, labels: torch.Tensor,
               class_names: Sequence[str], per_class: int = PER_CLASS) -> Path:
    """:func:`grid_png` written atomically to ``path``."""
    atomic_write_bytes(path, grid_png(images, labels, class_names, per_class))
    return Path(path)


def write_round_grids(shards: Iterable[Shard], directory: str | os.PathLike[str], class_names: Sequence[str]
                      ) -> list[tuple[int, Path]]:
    """Each shard's grid as ``directory/round-NN.png`` (:func:`round_file`); ``[(round, path), …]``."""
    return [(s.round, write_grid(Path(directory) / round_file(s.round), s.images, s.labels, class_names))
            for s in shards]
