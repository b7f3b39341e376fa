"""A dataset in a bucket (issue 18): ``ferd data pack`` writes it, ``data_root: s3://…`` reads it, verified."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ferd.core.checkpoint import save_state_dict
from ferd.cli import main
from ferd.data import load_split, require_split
from ferd.core.dataset_catalog import CIFAR10_CLASSES
from ferd.models import create_model


@pytest.fixture
def small_cifar(tmp_path):
    """A CIFAR-10-format test split of 30 images (uint8 N×32×32×3)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "small.npz"
    np.savez(path, images=rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8),
             labels=np.arange(30, dtype=np.int64) % 10, classes=np.array(CIFAR10_CLASSES))
    return path


def test_pack_to_a_bucket_then_evaluate_from_it(s3, small_cifar, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FERD_CACHE", str(tmp_path / "cache"))
    uri = "s3://ferd/data/cifar10"
    assert main(["data", "pack", "--dataset", "cifar10", "--from", str(small_cifar), "--split", "test",
                 "--to", uri]) == 0
    assert set(s3.keys("ferd", "data/cifar10/")) == {"data/cifar10/cifar10_test.npz", "data/cifar10/dataset.json"}
    x, y = load_split("cifar10", "test", root=uri)
    ref_x, ref_y = load_split("cifar10", "test", root=small_cifar)
    assert torch.equal(x, ref_x) and torch.equal(y, ref_y)  # exact: uint8 in, uint8 out
    require_split("cifar10", "test", uri)
    with pytest.raises(FileNotFoundError, match="not cifar10_train.npz"):
        require_split("cifar10", "train", uri)
    teacher = tmp_path / "t.safetensors"
    save_state_dict(create_model("cnn-4", num_classes=10).state_dict(), teacher)
    capsys.readouterr()
    assert main(["evaluate", "--teacher", str(teacher), "--teacher-arch", "cnn-4", "--dataset", "cifar10",
                 "--data-root", uri, "--attacks", "clean", "--out", str(tmp_path / "ev"), "--no-progress"]) == 0
    assert json.loads((tmp_path / "ev" / "settings.json").read_text())["n_examples"] == 30
    # a tampered object in the bucket is refused before it is used, and the cached copy is not trusted
    size = s3.client().head_object(Bucket="ferd", Key="data/cifar10/cifar10_test.npz")["ContentLength"]
    s3.client().put_object(Bucket="ferd", Key="data/cifar10/cifar10_test.npz", Body=b"t" * size)  # same size
    (next((tmp_path / "cache").rglob("cifar10_test.npz"))).write_bytes(b"also tampered")
    from ferd.core.storage import StorageError

    with pytest.raises(StorageError, match="sha256"):
        load_split("cifar10", "test", root=uri)


def test_pack_refuses_what_it_cannot_lay_out(small_cifar, tmp_path, capsys):
    assert main(["data", "pack", "--dataset", "tiny-imagenet", "--from", str(tmp_path),
                 "--to", str(tmp_path / "o")]) == 2
    assert "--dataset: expected one of ['cifar10', 'cifar100']" in capsys.readouterr().err
    assert main(["data", "pack", "--dataset", "cifar10", "--from", str(small_cifar),
                 "--to", str(tmp_path / "o")]) == 2
    assert "--split: required" in capsys.readouterr().err


def test_a_dataset_in_a_bucket_is_read_with_the_runs_storage_settings(s3, small_cifar, tmp_path, monkeypatch):
    from ferd.core.storage import S3Settings

    monkeypatch.setenv("FERD_CACHE", str(tmp_path / "cache"))
    uri = "s3://ferd/data/own-endpoint"
    assert main(["data", "pack", "--dataset", "cifar10", "--from", str(small_cifar), "--split", "test",
                 "--to", uri]) == 0
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the run's storage.endpoint_url names the store
    storage = S3Settings(endpoint_url=s3.endpoint, max_attempts=1)
    require_split("cifar10", "test", uri, storage=storage)
    x, _ = load_split("cifar10", "test", root=uri, storage=storage)
    assert torch.equal(x, load_split("cifar10", "test", root=small_cifar)[0])
