"""``dataset.json``'s schema (issue 34): every field required and typed, a listed name never a path, the checksum and,
under ``FERD_SIGNING_KEY``, the signature checked; a ``data_root`` whose keys could leave its prefix refused."""

from __future__ import annotations

import json

import pytest

from ferd.data.dataset_json import DatasetError, build, parse
from ferd.data.remote import dataset_root
from ferd.core.provenance import manifest_digest

SHA = "ab" * 32
GOOD = {"cifar10_test.npz": {"split": "test", "rows": 3, "bytes": 10, "sha256": SHA}}


def _raw(manifest) -> bytes:
    if isinstance(manifest, dict):
        body = {k: v for k, v in manifest.items() if k not in ("manifest_sha256", "signature")}
        manifest = {**body, "manifest_sha256": manifest_digest(body)}
    return json.dumps(manifest).encode()


def _with(**entry) -> dict:
    return {"dataset": "cifar10", "files": {"cifar10_test.npz": {**GOOD["cifar10_test.npz"], **entry}}}


@pytest.fixture(autouse=True)
def _no_key(monkeypatch):
    monkeypatch.delenv("FERD_SIGNING_KEY", raising=False)


def test_a_packed_manifest_reads_back():
    assert parse(json.dumps(build("cifar10", GOOD)).encode(), "d.json")["files"] == GOOD


@pytest.mark.parametrize("manifest, expected", [
    ([1, 2], "a JSON list, expected an object"),
    ("text", "a JSON str, expected an object"),
    ({"files": GOOD}, "dataset: expected one of"),
    ({"dataset": "tiny-imagenet", "files": GOOD}, "dataset: expected one of"),
    ({"dataset": "cifar10", "files": []}, "files: expected an object"),
    ({"dataset": "cifar10", "files": {}}, "files: expected an object"),
    (_with(sha256=None), "files.cifar10_test.npz.sha256: expected 64 hex digits"),
    (_with(sha256=SHA.upper()), "files.cifar10_test.npz.sha256: expected 64 hex digits"),
    (_with(rows=True), "files.cifar10_test.npz.rows: expected a count"),
    (_with(bytes=-1), "files.cifar10_test.npz.bytes: expected a size in bytes"),
    (_with(bytes="10"), "files.cifar10_test.npz.bytes: expected a size in bytes"),
    (_with(split="train"), "files: 'cifar10_test.npz' is not a file of this dataset"),
    ({"dataset": "cifar10", "files": {"sub/cifar10_test.npz": GOOD["cifar10_test.npz"]}}, "is not a file of this"),
    ({"dataset": "cifar10", "files": {"/abs.npz": GOOD["cifar10_test.npz"]}}, "is not a file of this"),
    ({"dataset": "cifar10", "files": {"cifar10_test.npz": "sha"}}, "is not a file of this"),
])
def test_a_malformed_manifest_is_refused_naming_its_field(manifest, expected):
    with pytest.raises(DatasetError, match=r"^d\.json: ") as exc:
        parse(_raw(manifest), "d.json")
    assert expected in str(exc.value) and "\n" not in str(exc.value)


def test_a_missing_field_is_named():
    manifest = _with()
    del manifest["files"]["cifar10_test.npz"]["sha256"]
    with pytest.raises(DatasetError, match=r"d\.json: files\.cifar10_test\.npz\.sha256: missing"):
        parse(_raw(manifest), "d.json")


def test_the_checksum_is_required_and_checked():
    with pytest.raises(DatasetError, match="manifest_sha256: missing"):
        parse(json.dumps(_with()).encode(), "d.json")
    sealed = json.loads(_raw(_with()))
    sealed["files"]["cifar10_test.npz"]["rows"] = 4
    with pytest.raises(DatasetError, match="checksum does not match"):
        parse(json.dumps(sealed).encode(), "d.json")


def test_not_json_and_oversized_are_refused():
    with pytest.raises(DatasetError, match="not a JSON dataset manifest"):
        parse(b"\xff{", "d.json")
    with pytest.raises(DatasetError, match="bytes, more than"):
        parse(b" " * ((1 << 20) + 1), "d.json")


@pytest.mark.parametrize("uri, expected", [
    ("s3://ferd/data/cifar10", ("ferd", ("data", "cifar10"))),
    ("s3://ferd/data/cifar10/", ("ferd", ("data", "cifar10"))),
    ("s3://ferd", ("ferd", ())),
])
def test_a_plain_root_is_split_into_bucket_and_parts(uri, expected):
    assert dataset_root(uri) == expected


@pytest.mark.parametrize("uri", ["s3://", "s3:///x", "s3://../x", "s3://b/../x", "s3://b/a/../../x", "s3://b/a//c",
                                 "s3://b/./x", "s3://b/a\\b", "s3://b/a\x00b", "s3://b..c/x", "file:///x",
                                 "s3://b/x?versionId=1", "s3://b/x#y"])
def test_a_root_whose_keys_could_leave_it_is_refused(uri):
    with pytest.raises(ValueError, match="^data_root: "):
        dataset_root(uri)
