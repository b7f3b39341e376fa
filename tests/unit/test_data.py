"""Datasets as [0, 1] tensors, and the data-free guard."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from ferd.data import (KNOWN_DATASETS, DataAccessError, dataset_info, load_split, no_data_access)
from ferd.core.dataset_catalog import CIFAR10_CLASSES
from ferd.data.datasets import digits_split_indices

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


def test_digits_shapes_range_and_split_sizes() -> None:
    for split, n in (("train", 1400), ("test", 397)):
        x, y = load_split("digits", split)
        assert x.shape == (n, 3, 32, 32) and x.dtype == torch.float32 and x.is_contiguous()
        assert y.shape == (n,) and y.dtype == torch.int64
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.max()) > 0.9
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
        counts = torch.bincount(y, minlength=10)
        assert int(counts.min()) >= (135 if split == "train" else 39)  # stratified


def test_digits_split_is_fixed_and_independent_of_global_rngs() -> None:
    torch.manual_seed(123)
    np.random.seed(123)
    x1, y1 = load_split("digits", "test")
    torch.manual_seed(7)
    np.random.seed(7)
    torch.rand(5)
    np.random.rand(5)
    x2, y2 = load_split("digits", "test")
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    train, test = digits_split_indices()
    assert len(set(train) | set(test)) == 1797 and not set(train) & set(test)


def test_digits_resize_is_bilinear_of_the_8x8_values() -> None:
    from sklearn.datasets import load_digits

    _, test = digits_split_indices()
    x, _ = load_split("digits", "test")
    raw = torch.from_numpy(load_digits().images[test[:1]].astype(np.float32) / 16)[:, None]
    ref = torch.nn.functional.interpolate(raw, size=32, mode="bilinear", align_corners=False)
    torch.testing.assert_close(x[:1, :1], ref)
    # block means of the upsampled image follow the 8×8 original
    assert torch.corrcoef(torch.stack([x[0, 0].reshape(8, 4, 8, 4).mean((1, 3)).flatten(),
                                       raw[0, 0].flatten()]))[0, 1] > 0.95


def test_dataset_info_and_unknown_names() -> None:
    assert set(KNOWN_DATASETS) == {"digits", "cifar10", "cifar100", "tiny-imagenet"}
    assert dataset_info("cifar10").class_names == CIFAR10_CLASSES
    assert dataset_info("cifar100").num_classes == len(dataset_info("cifar100").class_names) == 100
    ti = dataset_info("tiny-imagenet")
    assert (ti.num_classes, ti.image_size) == (200, 64)
    assert dataset_info("digits").class_names == tuple("0123456789")
    with pytest.raises(ValueError, match=r"dataset: unknown dataset 'mnist'.*cifar10"):
        load_split("mnist", "train")
    with pytest.raises(ValueError, match=r"split: unknown split 'valid'.*'train', 'test'"):
        load_split("digits", "valid")


def _fake_cifar_npz(path: Path, n: int = 6, classes: tuple[str, ...] = CIFAR10_CLASSES) -> np.ndarray:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    np.savez(path, images=images, labels=np.arange(n) % 10, classes=np.array(classes))
    return images


def test_cifar_from_a_local_npz_file_or_folder(tmp_path: Path) -> None:
    images = _fake_cifar_npz(tmp_path / "cifar10_test.npz")
    for root in (tmp_path / "cifar10_test.npz", tmp_path, str(tmp_path)):
        x, y = load_split("cifar10", "test", root=root)
        assert x.shape == (6, 3, 32, 32) and x.is_contiguous() and y.tolist() == [0, 1, 2, 3, 4, 5]
        assert float(x[2, 1, 5, 7]) == pytest.approx(images[2, 5, 7, 1] / 255.0)
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_split("cifar10", "train", root=tmp_path)  # no cifar10_train.npz, no torchvision copy


def test_malformed_npz_files_are_refused(tmp_path: Path) -> None:
    _fake_cifar_npz(tmp_path / "wrong_classes.npz", classes=tuple(f"c{i}" for i in range(10)))
    with pytest.raises(ValueError, match="classes"):
        load_split("cifar10", "test", root=tmp_path / "wrong_classes.npz")
    np.savez(tmp_path / "bad_shape.npz", images=np.zeros((2, 3, 32, 32), np.uint8), labels=np.zeros(2, int))
    with pytest.raises(ValueError, match=r"images must be uint8 N×32×32×3"):
        load_split("cifar10", "test", root=tmp_path / "bad_shape.npz")
    np.savez(tmp_path / "bad_labels.npz", images=np.zeros((2, 32, 32, 3), np.uint8), labels=np.array([0, 10]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        load_split("cifar10", "test", root=tmp_path / "bad_labels.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="garbage.npz"):
        load_split("cifar100", "test", root=tmp_path / "garbage.npz")


def test_tiny_imagenet_folder_layouts(tmp_path: Path) -> None:
    from PIL import Image

    wnids = [f"n{i:08d}" for i in range(200)]
    picked = {0: 10, 1: 20, 199: 30}  # class index -> pixel value of its one val image
    (tmp_path / "val" / "images").mkdir(parents=True)
    for i, w in enumerate(wnids):
        (tmp_path / "train" / w / "images").mkdir(parents=True)
        if i in picked:  # a few train images are enough: folders define the classes
            Image.fromarray(np.full((64, 64, 3), picked[i], np.uint8)).save(tmp_path / "train" / w / "images" / "a.png")
    lines = []
    for k, (i, value) in enumerate(picked.items()):
        Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(tmp_path / "val" / "images" / f"val_{k}.png")
        lines.append(f"val_{k}.png\t{wnids[i]}\t0\t0\t63\t63")
    (tmp_path / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    x, y = load_split("tiny-imagenet", "train", root=tmp_path)
    assert x.shape == (3, 3, 64, 64) and y.tolist() == [0, 1, 199]
    assert float(x[2].mean()) == pytest.approx(30 / 255)
    xv, yv = load_split("tiny-imagenet", "test", root=tmp_path)  # alias of val
    assert yv.tolist() == [0, 1, 199] and torch.equal(xv, x)
    with pytest.raises(ValueError, match="download"):
        load_split("tiny-imagenet", "train", root=tmp_path, download=True)


def test_guard_refuses_inside_and_allows_outside() -> None:
    load_split("digits", "test")
    with no_data_access("FAE synthesis (data-free)"):
        with pytest.raises(DataAccessError, match=r"FAE synthesis \(data-free\)"):
            load_split("digits", "test")
        with pytest.raises(RuntimeError):  # DataAccessError is a RuntimeError
            load_split("cifar10", "test", root="/nonexistent")
        with no_data_access("nested"):
            with pytest.raises(DataAccessError, match="nested"):
                load_split("digits", "train")
        with pytest.raises(DataAccessError):
            load_split("digits", "train")
    load_split("digits", "test")


def test_guard_is_released_on_error_and_seen_by_other_threads() -> None:
    with pytest.raises(KeyError), no_data_access("distillation"):
        raise KeyError("boom")
    load_split("digits", "test")  # released

    errors: list[BaseException] = []

    def worker() -> None:
        try:
            load_split("digits", "test")
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    with no_data_access("distillation"):
        t = threading.Thread(target=worker)
        t.start()
        t.join()
    assert len(errors) == 1 and isinstance(errors[0], DataAccessError)


@pytest.mark.shared
def test_shared_cifar10_test_npz() -> None:
    npz = SHARED / "data" / "cifar10_test.npz"
    if not npz.is_file():
        pytest.skip(f"{npz} is absent")
    x, y = load_split("cifar10", "test", root=npz)
    assert x.shape == (10000, 3, 32, 32) and x.is_contiguous()
    assert torch.bincount(y).tolist() == [1000] * 10
