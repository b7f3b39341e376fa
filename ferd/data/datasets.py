"""The datasets of the paper (CIFAR-10, CIFAR-100, Tiny-ImageNet, FERD §5.1) and the embedded
``digits`` task, all returned as ``(images, labels)``: float32 N×3×H×W in [0, 1] (contiguous,
NCHW) and int64 labels. Normalisation is the model's job (inside it), never the loader's.

Sources, by dataset:

* ``digits``: scikit-learn's bundled ``load_digits`` (no download): 1,797 8×8 images with
  values 0-16 → /16, bilinearly resized to 32×32 (``F.interpolate``, ``align_corners=False``)
  and repeated to 3 channels; a fixed stratified 1,400 / 397 train/test split
  (``train_test_split(random_state=0)``, independent of any global RNG), each split in
  dataset order.
* ``cifar10`` / ``cifar100``: a local ``.npz`` (keys ``images`` uint8 N×32×32×3, ``labels``,
  optional ``classes``) when ``root`` is such a file or a directory holding
  ``<name>_<split>.npz``; otherwise torchvision's copy under ``root`` (downloaded there when
  ``download=True``).
* ``tiny-imagenet``: an ImageFolder layout ``root/{train,val}/<wnid>/**/*.JPEG`` (64×64);
  the raw download's ``val/images`` + ``val/val_annotations.txt`` is read too. Class index =
  position of the wnid in the sorted ``train`` folder names. ``test`` is accepted as an alias
  of ``val`` (the official test split has no labels). No automatic download.

``root=None`` means ``$FERD_DATA_ROOT`` or ``~/.cache/ferd/data``; ``root="s3://bucket/prefix"`` a
dataset packed there by ``ferd data pack`` (:mod:`ferd.data.remote`). A folder packed by ``ferd data pack`` (it
holds a ``dataset.json``) is checked like a bucket: its ``dataset.json`` read with its schema, checksum and signature
(:mod:`ferd.data.dataset_json`), and the split's bytes verified before they are parsed. Every call first checks
the data-free guard (:func:`ferd.data.no_data_access`).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.dataset_catalog import dataset_info
from ..core.storage import S3Settings
from .dataset_json import DATASET_MANIFEST, entry, file_name, folder_manifest, folder_split, is_packed
from .guard import check_data_access

DIGITS_TEST_SIZE = 397
DIGITS_SPLIT_SEED = 0
_IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


def default_root() -> Path:
    """``$FERD_DATA_ROOT`` or ``~/.cache/ferd/data``."""
    return Path(os.environ.get("FERD_DATA_ROOT", "~/.cache/ferd/data")).expanduser()


def load_split(name: str, split: str, root: str | os.PathLike[str] | None = None,
               download: bool = False, storage: S3Settings | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images, labels)`` of ``split`` of dataset ``name`` (see the module docstring); an ``s3://`` root is read
    with ``storage`` (the run's endpoint, region, retries; None: the environment's).

    Raises :class:`ferd.data.DataAccessError` inside :func:`ferd.data.no_data_access`,
    ``ValueError`` for an unknown name/split or malformed files, ``FileNotFoundError`` when
    the data is not at ``root``.
    """
    info = dataset_info(name)
    if split not in info.splits:
        raise ValueError(f"split: unknown split {split!r} for dataset {name!r}; expected one of "
                         f"{list(info.splits)}")
    check_data_access(f"load_split({name!r}, {split!r})")
    if isinstance(root, str) and root.startswith("s3://"):  # a packed dataset in a bucket (ferd.data.remote)
        from .remote import read_split

        data, where = read_split(root, name, split, storage)
        x, y = _load_npz(io.BytesIO(data), name, where)
    elif name == "digits":
        x, y = _load_digits(split)
    elif name in ("cifar10", "cifar100"):
        x, y = _load_cifar(name, split, Path(root).expanduser() if root is not None else default_root(),
                           download)
    else:
        if download:
            raise ValueError("download: tiny-imagenet cannot be downloaded automatically; unpack "
                             "tiny-imagenet-200 and pass its folder as root")
        x, y = _load_tiny_imagenet(Path(root).expanduser() if root is not None
                                   else default_root() / "tiny-imagenet-200", "val" if split == "test" else split)
    _check_labels(y, info.num_classes, f"{name}/{split}")
    return x, y


def require_split(name: str, split: str, root: str | os.PathLike[str] | None = None,
                  what: str = "data_root", storage: S3Settings | None = None) -> None:
    """Refuse (FileNotFoundError naming ``what`` and the files expected) when ``split`` of ``name`` is not
    where :func:`load_split` will look, without reading it: what an entry point checks before any
    training, so a missing test set is not discovered after hours of it."""
    if name == "digits":
        return  # scikit-learn's bundled copy
    if isinstance(root, str) and root.startswith("s3://"):  # the bucket's dataset.json (checked) must list the split
        from .remote import read_manifest

        entry(read_manifest(root, storage=storage), name, split, root, what)
        return
    base = Path(root).expanduser() if root is not None else default_root()
    if name in ("cifar10", "cifar100") and base.is_dir() and is_packed(base):  # its dataset.json, checked
        entry(folder_manifest(base), name, split, str(base / DATASET_MANIFEST), what)
        return
    if name in ("cifar10", "cifar100"):
        torchvision_folder = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
        if base.is_file() or (base / f"{name}_{split}.npz").is_file() or (base / torchvision_folder).is_dir():
            return
        raise FileNotFoundError(f"{what}: {name}/{split} not found at {base} (expected a .npz file, or a folder "
                                f"holding {name}_{split}.npz or {torchvision_folder}/)")
    folder = base if root is not None else base / "tiny-imagenet-200"
    if not (folder / ("val" if split == "test" else split)).is_dir():
        raise FileNotFoundError(f"{what}: tiny-imagenet/{split} not found at {folder} (expected "
                                f"{folder}/{{train,val}}/<wnid>/…)")


def _check_labels(y: torch.Tensor, num_classes: int, where: str) -> None:
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{where}: labels must lie in [0, {num_classes - 1}], found "
                         f"[{int(y.min())}, {int(y.max())}]")


def _uint8_hwc_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 N×H×W×3 → float32 N×3×H×W in [0, 1], contiguous."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0).contiguous()


# --------------------------------------------------------------------------- digits
def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """The fixed stratified 1,400 / 397 split of scikit-learn's digits (sorted indices)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    train, test = train_test_split(np.arange(len(target)), test_size=DIGITS_TEST_SIZE,
                                   random_state=DIGITS_SPLIT_SEED, stratify=target)
    return np.sort(train), np.sort(test)


def _load_digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    train, test = digits_split_indices()
    idx = train if split == "train" else test
    x = torch.from_numpy(digits.images[idx].astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    return x.repeat(1, 3, 1, 1).contiguous(), torch.from_numpy(digits.target[idx].astype(np.int64))


# --------------------------------------------------------------------------- CIFAR
def _load_cifar(name: str, split: str, root: Path, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if root.is_file():
        return _load_npz(root, name, str(root))
    npz = root / file_name(name, split)
    if is_packed(root):  # laid out by `ferd data pack`: its dataset.json is checked, the bytes parsed are verified
        return _load_npz(io.BytesIO(folder_split(root, name, split)), name, str(npz))
    if npz.is_file():
        return _load_npz(npz, name, str(npz))
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        ds = cls(str(root), train=split == "train", download=download)
    except RuntimeError as exc:
        raise FileNotFoundError(
            f"{name}/{split}: not found under {root} (no {npz.name} and no torchvision copy); give the folder "
            f"holding {npz.name} or the .npz file itself (data_root, --data-root), or allow the download "
            "(download=True in Python)") from exc
    return _uint8_hwc_to_tensor(ds.data), torch.tensor(ds.targets, dtype=torch.int64)


def _load_npz(source: Path | io.BytesIO, name: str, path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A CIFAR split stored as ``.npz`` (``images`` uint8 N×32×32×3, ``labels``, ``classes``), read from ``source``
    (a file, or bytes already verified) and named ``path`` in errors."""
    try:
        with np.load(source, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # zipfile/OSError/ValueError on a corrupt file
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc
    for key in ("images", "labels"):
        if key not in arrays:
            raise ValueError(f"{path}: missing key {key!r}; expected keys images, labels, classes")
    images, labels = arrays["images"], arrays["labels"]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise ValueError(f"{path}: images must be uint8 N×32×32×3, got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: labels must be {len(images)} integers, got {labels.dtype} {labels.shape}")
    expected = dataset_info(name).class_names
    if "classes" in arrays and tuple(str(c) for c in arrays["classes"]) != expected:
        raise ValueError(f"{path}: classes {list(arrays['classes'])[:5]}... do not match {name}'s "
                         f"{list(expected)[:5]}...")
    return _uint8_hwc_to_tensor(images), torch.from_numpy(labels.astype(np.int64))


# --------------------------------------------------------------------------- Tiny-ImageNet
def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in _IMAGE_EXTENSIONS and p.is_file())


def _load_tiny_imagenet(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image

    class_root = root / "train" if (root / "train").is_dir() else root / split
    if not class_root.is_dir():
        raise FileNotFoundError(f"tiny-imagenet/{split}: no folder {root / split}; expected "
                                "root/{train,val}/<wnid>/*.JPEG")
    wnids = sorted(p.name for p in class_root.iterdir() if p.is_dir())
    if len(wnids) != 200:
        raise ValueError(f"tiny-imagenet: expected 200 class folders in {class_root}, found {len(wnids)}")
    index = {w: i for i, w in enumerate(wnids)}
    folder = root / split
    samples: list[tuple[Path, int]] = []
    annotations = folder / "val_annotations.txt"
    if annotations.is_file() and (folder / "images").is_dir():  # the raw download's val layout
        for line in annotations.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                if parts[1] not in index:
                    raise ValueError(f"{annotations}: unknown wnid {parts[1]!r}")
                samples.append((folder / "images" / parts[0], index[parts[1]]))
    elif folder.is_dir():
        for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
            if sub.name not in index:
                raise ValueError(f"{folder}: class folder {sub.name!r} is not a train class")
            samples += [(f, index[sub.name]) for f in _image_files(sub)]
    else:
        raise FileNotFoundError(f"tiny-imagenet/{split}: no folder {folder}")
    if not samples:
        raise FileNotFoundError(f"tiny-imagenet/{split}: no images under {folder}")
    images = np.empty((len(samples), 64, 64, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(samples):
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
        if arr.shape != (64, 64, 3):
            raise ValueError(f"{path}: expected a 64×64 image, got {arr.shape[1]}×{arr.shape[0]}")
        images[i] = arr
    labels = torch.tensor([c for _, c in samples], dtype=torch.int64)
    return _uint8_hwc_to_tensor(images), labels
