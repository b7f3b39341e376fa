"""Packed datasets held to the artifacts' standard (issue 34, item 5): ``dataset.json`` read with a schema, sealed
and, with ``FERD_SIGNING_KEY``, signed by ``ferd data pack``; every remote key confined to the cache; every byte
verified before it is used. The reproductions of the finding, every byte of every packed file, and hostile cases."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from ferd.core.checkpoint import save_state_dict
from ferd.cli import main
from ferd.data import load_split, require_split
from ferd.core.dataset_catalog import CIFAR10_CLASSES
from ferd.models import create_model
from ferd.core.provenance import manifest_digest
from support.faultlog import record

URI = "s3://ferd/data/cifar10"
PREFIX = "data/cifar10"


def _npz(path: Path, n: int, seed: int = 0, zeros: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 32, 32, 3), np.uint8) if zeros else rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    np.savez(path, images=images, labels=np.arange(n, dtype=np.int64) % 10, classes=np.array(CIFAR10_CLASSES))
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("FERD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FERD_SIGNING_KEY", raising=False)
    return tmp_path


def _pack(source: Path, dest: str, split: str | None = "test") -> None:
    assert main(["data", "pack", "--dataset", "cifar10", "--from", str(source), *(["--split", split] if split else []),
                 "--to", dest]) == 0


def _get(s3, key: str) -> bytes:
    return s3.client().get_object(Bucket="ferd", Key=key)["Body"].read()


def _put(s3, key: str, body: bytes) -> None:
    s3.client().put_object(Bucket="ferd", Key=key, Body=body)


def _resealed(manifest: dict) -> bytes:
    """``manifest`` with its checksum recomputed by whoever can write the bucket (no key)."""
    body = {k: v for k, v in manifest.items() if k not in ("manifest_sha256", "signature")}
    return json.dumps({**body, "manifest_sha256": manifest_digest(body)}).encode()


def _evaluate(tmp_path: Path, data_root: str) -> int:
    teacher = tmp_path / "t.safetensors"
    if not teacher.exists():
        save_state_dict(create_model("cnn-4", num_classes=10).state_dict(), teacher)
    return main(["evaluate", "--teacher", str(teacher), "--teacher-arch", "cnn-4", "--dataset", "cifar10",
                 "--data-root", data_root, "--attacks", "clean", "--out", str(tmp_path / "ev"), "--no-progress"])


# --------------------------------------------------------------------------- the finding's three reproductions
def test_an_entry_without_sha256_is_refused_not_used(s3, env, capsys):
    """Finding 1: a dataset.json entry without sha256 made `ferd evaluate` download and score a forged test set."""
    _pack(_npz(env / "real.npz", 20), URI)
    forged = _npz(env / "forged.npz", 20, zeros=True).read_bytes()
    _put(s3, f"{PREFIX}/cifar10_test.npz", forged)
    manifest = json.loads(_get(s3, f"{PREFIX}/dataset.json"))
    entry = manifest["files"]["cifar10_test.npz"]
    del entry["sha256"]
    entry["bytes"] = len(forged)
    _put(s3, f"{PREFIX}/dataset.json", _resealed(manifest))
    capsys.readouterr()
    code = _evaluate(env, URI)
    err = capsys.readouterr().err
    assert code == 2 and "dataset.json" in err and "files.cifar10_test.npz.sha256" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not list((env / "cache").rglob("*.npz"))  # nothing downloaded
    record("dataset.json entry without sha256", "forged all-zero test set, sha256 field removed", code == 2, 0)


def test_a_forged_npz_with_a_consistent_dataset_json_is_refused_under_the_key(s3, env, monkeypatch, capsys):
    """Finding 2: with FERD_SIGNING_KEY set, a forged npz whose dataset.json was rewritten (and resealed) to match it
    was accepted; now the packed dataset.json is signed and a resealed or unsigned one is refused."""
    monkeypatch.setenv("FERD_SIGNING_KEY", "k" * 32)
    _pack(_npz(env / "real.npz", 20), URI)
    (env / "staged.npz").write_bytes(_get(s3, f"{PREFIX}/cifar10_test.npz"))
    signed = json.loads(_get(s3, f"{PREFIX}/dataset.json"))
    forged = _npz(env / "forged.npz", 20, zeros=True).read_bytes()
    _put(s3, f"{PREFIX}/cifar10_test.npz", forged)
    manifest = json.loads(_get(s3, f"{PREFIX}/dataset.json"))
    manifest["files"]["cifar10_test.npz"].update(sha256=hashlib.sha256(forged).hexdigest(), bytes=len(forged))
    outcomes = []
    for how, body in (("signature dropped", _resealed(manifest)),
                      ("old signature kept", json.dumps({**json.loads(_resealed(manifest)),
                                                         "signature": signed.get("signature")}).encode())):
        _put(s3, f"{PREFIX}/dataset.json", body)
        capsys.readouterr()
        code = _evaluate(env, URI)
        err = capsys.readouterr().err
        outcomes.append(code == 2 and "dataset.json" in err and ("unsigned" in err or "signature" in err))
        assert outcomes[-1], (how, code, err)
    record("forged npz, dataset.json rewritten to match", "FERD_SIGNING_KEY set; signature dropped / old one kept",
           all(outcomes), 0)
    _put(s3, f"{PREFIX}/dataset.json", json.dumps(signed).encode())
    _put(s3, f"{PREFIX}/cifar10_test.npz", (env / "staged.npz").read_bytes())
    assert str(signed.get("signature")).startswith("hmac-sha256:")  # pack signs under the key
    load_split("cifar10", "test", root=URI)  # and the genuine dataset is accepted


def test_a_data_root_escaping_the_cache_is_refused_before_any_download(s3, env, capsys):
    """Finding 3: data_root s3://bucket/../../../x with objects under ../ keys wrote files outside $FERD_CACHE/data."""
    staged = env / "staged"
    _pack(_npz(env / "real.npz", 20), str(staged))
    for f in staged.iterdir():
        _put(s3, f"../../../x/{f.name}", f.read_bytes())
    root = "s3://ferd/../../../x"
    capsys.readouterr()
    code = _evaluate(env, root)
    err = capsys.readouterr().err
    written = [p for p in env.rglob("*") if p.is_file() and p.name in ("dataset.json", "cifar10_test.npz")
               and staged not in p.parents]
    assert written == [] and code == 2 and "data_root" in err, (code, err, written)
    with pytest.raises(ValueError, match=r"data_root: .*\.\."):
        load_split("cifar10", "test", root=root)
    with pytest.raises(ValueError, match=r"data_root: .*\.\."):
        require_split("cifar10", "test", root)
    record("data_root with ../ (s3://bucket/../../../x)", "objects under ../ keys", not written and code == 2, 0)


# --------------------------------------------------------------------------- every byte of every packed file
@pytest.fixture
def packed_folder(env, monkeypatch):
    """A dataset packed under the key into a folder: both splits of one image each (small: every byte is edited)."""
    monkeypatch.setenv("FERD_SIGNING_KEY", "k" * 32)
    src = env / "src"
    src.mkdir()
    _npz(src / "cifar10_train.npz", 1, seed=1)
    _npz(src / "cifar10_test.npz", 1, seed=2)
    out = env / "packed"
    _pack(src, str(out), split=None)
    assert sorted(p.name for p in out.iterdir()) == ["cifar10_test.npz", "cifar10_train.npz", "dataset.json"]
    return out


def _loads_of_every_split(root) -> None:
    for split in ("train", "test"):
        load_split("cifar10", split, root=root)


def test_a_flipped_byte_of_any_file_of_a_packed_folder_is_refused(packed_folder):
    """Bytes of each file flipped in turn: the split that file holds (dataset.json: the test split) is refused by
    the loader, and ``dataset_problems`` (what ``ferd lineage verify`` reports) names a problem. Every byte of
    dataset.json; of each npz every byte of its first and last 256 (the zip headers and central directory) and every
    97th between (the array data, covered by the sha256 like any other byte)."""
    from ferd.data import dataset_problems

    _loads_of_every_split(packed_folder)
    assert dataset_problems(packed_folder) == []
    accepted = []
    for f in sorted(packed_folder.iterdir()):
        split = "train" if f.name == "cifar10_train.npz" else "test"
        original = f.read_bytes()
        n = len(original)
        positions = range(n) if f.suffix == ".json" else sorted({*range(256), *range(256, n - 256, 97),
                                                                 *range(n - 256, n)})
        for i in positions:
            edited = bytearray(original)
            edited[i] ^= 0x01
            f.write_bytes(bytes(edited))
            try:
                load_split("cifar10", split, root=packed_folder)
                accepted.append((f.name, i))
            except ValueError:
                pass
            if not dataset_problems(packed_folder):
                accepted.append((f.name, i, "lineage"))
        f.write_bytes(original)
    assert accepted == []
    _loads_of_every_split(packed_folder)
    record("one byte of a packed dataset edited (folder)", "each byte of dataset.json, npz headers + stride; key set",
           accepted == [], 0)


def test_a_changed_byte_of_any_file_in_the_bucket_is_refused(s3, packed_folder, env):
    for f in packed_folder.iterdir():
        _put(s3, f"{PREFIX}/{f.name}", f.read_bytes())
    _loads_of_every_split(URI)
    accepted = []
    for f in sorted(packed_folder.iterdir()):
        original = f.read_bytes()
        for i in sorted({0, len(original) // 2, len(original) - 1}):
            edited = bytearray(original)
            edited[i] ^= 0x01
            _put(s3, f"{PREFIX}/{f.name}", bytes(edited))
            for cached in (env / "cache").rglob("*.npz"):
                cached.unlink()  # the consumer must fetch the edited object, not reuse its verified copy
            try:
                _loads_of_every_split(URI)
                accepted.append((f.name, i))
            except (ValueError, RuntimeError):  # DatasetError, or StorageError from the checked download
                pass
        _put(s3, f"{PREFIX}/{f.name}", original)
    assert accepted == []
    record("one byte of a packed dataset edited (bucket)", "first, middle, last byte of each file, key set",
           accepted == [], 0)


# --------------------------------------------------------------------------- hostile and careless cases
def test_a_dataset_json_that_is_a_list_is_refused_in_one_line(s3, env, capsys):
    _put(s3, f"{PREFIX}/dataset.json", b"[1, 2, 3]")
    capsys.readouterr()
    code = _evaluate(env, URI)
    err = capsys.readouterr().err
    assert code == 2 and "dataset.json: a JSON list, expected an object" in err and err.count("\n") == 1, err
    record("dataset.json that is a JSON list", "[1, 2, 3] in the bucket", code == 2, 0)


def test_a_huge_dataset_json_is_refused_before_it_is_read(s3, env):
    from ferd.data.dataset_json import MAX_MANIFEST_BYTES

    _put(s3, f"{PREFIX}/dataset.json", b" " * (MAX_MANIFEST_BYTES + 1))
    with pytest.raises(ValueError, match=r"dataset.json: .* bytes, more than"):
        require_split("cifar10", "test", URI)
    record("huge dataset.json", f"{MAX_MANIFEST_BYTES + 1} bytes in the bucket", True, 0)


def test_a_listed_name_that_is_a_path_is_refused(s3, env):
    staged = env / "staged"
    _pack(_npz(env / "real.npz", 5), str(staged))
    manifest = json.loads((staged / "dataset.json").read_text())
    manifest["files"]["../../evil.npz"] = manifest["files"]["cifar10_test.npz"]
    _put(s3, f"{PREFIX}/dataset.json", _resealed(manifest))
    with pytest.raises(ValueError, match=r"files: '\.\./\.\./evil\.npz' is not a file of this dataset"):
        load_split("cifar10", "test", root=URI)
    record("dataset.json listing '../../evil.npz'", "resealed dataset.json in the bucket", True, 0)


def test_a_cached_file_truncated_after_download_is_fetched_again_never_used(s3, env):
    _pack(_npz(env / "real.npz", 20), URI)
    x, _ = load_split("cifar10", "test", root=URI)
    cached = next((env / "cache").rglob("cifar10_test.npz"))
    good = cached.read_bytes()
    cached.write_bytes(good[: len(good) // 2])
    x2, _ = load_split("cifar10", "test", root=URI)  # fetched again, verified
    assert cached.read_bytes() == good and (x2 == x).all()
    cached.write_bytes(good[: len(good) // 2])
    _put(s3, f"{PREFIX}/cifar10_test.npz", good[: len(good) // 2])  # the bucket's copy is bad too: refused
    with pytest.raises((ValueError, RuntimeError), match="cifar10_test.npz"):
        load_split("cifar10", "test", root=URI)
    record("cached dataset file truncated after download", "half the cached npz; then the bucket's too", True, 0)


def test_an_object_larger_than_listed_is_refused_before_download(s3, env):
    _pack(_npz(env / "real.npz", 5), URI)
    big = _get(s3, f"{PREFIX}/cifar10_test.npz") + b"\0" * (1 << 20)
    _put(s3, f"{PREFIX}/cifar10_test.npz", big)
    with pytest.raises(ValueError, match=r"cifar10_test.npz: .* bytes, dataset.json lists"):
        load_split("cifar10", "test", root=URI)
    assert not list((env / "cache").rglob("*cifar10_test.npz*"))
    record("dataset object larger than dataset.json lists", "1 MiB appended in the bucket", True, 0)


def test_a_symlink_planted_in_the_cache_is_not_followed(s3, env):
    _pack(_npz(env / "real.npz", 5), URI)
    outside = env / "outside"
    outside.mkdir()
    (env / "cache" / "data" / "ferd").mkdir(parents=True)
    (env / "cache" / "data" / "ferd" / "data").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="outside the cache"):
        load_split("cifar10", "test", root=URI)
    assert list(outside.rglob("*")) == []
    record("symlink planted in the dataset cache", "cache/data/ferd/data -> a folder outside", True, 0)


@pytest.mark.parametrize("root", ["s3://", "s3:///data", "s3://ferd/a//b", "s3://ferd/./x", "s3://ferd/a\\..\\b",
                                  "s3://../x"])
def test_a_malformed_s3_data_root_is_refused_in_one_line(root, env, capsys):
    with pytest.raises(ValueError, match="data_root: "):
        load_split("cifar10", "test", root=root)
    capsys.readouterr()
    assert _evaluate(env, root) == 2
    err = capsys.readouterr().err
    assert "data_root" in err and err.count("\n") == 1, err


def test_a_packed_folder_with_a_missing_sha256_is_refused(env):
    _pack(_npz(env / "real.npz", 5), str(env / "packed"))
    manifest = json.loads((env / "packed" / "dataset.json").read_text())
    del manifest["files"]["cifar10_test.npz"]["sha256"]
    (env / "packed" / "dataset.json").write_bytes(_resealed(manifest))
    with pytest.raises(ValueError, match=r"dataset.json: files.cifar10_test.npz.sha256: missing"):
        load_split("cifar10", "test", root=env / "packed")
    with pytest.raises(ValueError, match=r"dataset.json: files.cifar10_test.npz.sha256: missing"):
        require_split("cifar10", "test", env / "packed")  # the entry points' preflight, before any training


def test_unsigned_datasets_are_refused_once_the_consumer_has_a_key(s3, env, monkeypatch):
    _pack(_npz(env / "real.npz", 5), URI)  # packed without a key
    load_split("cifar10", "test", root=URI)
    monkeypatch.setenv("FERD_SIGNING_KEY", "k" * 32)
    with pytest.raises(ValueError, match="unsigned, and FERD_SIGNING_KEY is set"):
        require_split("cifar10", "test", URI)
    monkeypatch.setenv("FERD_SIGNING_KEY", "another key")
    _pack(_npz(env / "real.npz", 5), URI)
    monkeypatch.setenv("FERD_SIGNING_KEY", "k" * 32)
    with pytest.raises(ValueError, match="signature does not match"):
        load_split("cifar10", "test", root=URI)


def test_the_bytes_used_are_the_bytes_verified(s3, env):
    """The split is read once into memory, hashed, and parsed from those bytes: no window between check and use."""
    from ferd.data import remote

    _pack(_npz(env / "real.npz", 5), URI)
    data, where = remote.read_split(URI, "cifar10", "test")
    manifest = remote.read_manifest(URI)
    assert hashlib.sha256(data).hexdigest() == manifest["files"]["cifar10_test.npz"]["sha256"]
    with np.load(io.BytesIO(data)) as z:
        assert z["images"].shape == (5, 32, 32, 3)
    assert where.endswith("cifar10_test.npz")


def test_lineage_verify_reports_a_changed_packed_dataset(packed_folder, capsys):
    """``ferd lineage verify`` over a folder holding a packed dataset checks it as a consumer would."""
    assert main(["lineage", "verify", str(packed_folder)]) == 0
    npz = packed_folder / "cifar10_test.npz"
    data = bytearray(npz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    npz.write_bytes(bytes(data))
    assert main(["lineage", "verify", str(packed_folder)]) != 0
    captured = capsys.readouterr()
    assert "cifar10_test.npz: sha256 does not match dataset.json" in captured.out + captured.err
