"""What comes back from the object store is untrusted, and what goes to it stays whole: manifests checked before
any copy, keys taken literally, a republish never leaves a manifest over replaced files, fetches into one folder
agree, and lineage names the manifest version a stage read. Against a moto server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import ferd.core.storage as storage
from ferd.cli import main
from ferd.core.provenance import authenticity_problem, seal
from ferd.core.storage import StorageError, fetch_dir, publish_dir, s3_client, split_s3
from ferd.plan.resolve import load_config
from ferd.stages.artifacts import write_manifest

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "params" / "ci.yaml"


def _artifact(where: Path, **files: bytes) -> Path:
    where.mkdir(parents=True)
    for name, data in files.items():
        (where / name).write_bytes(data)
    write_manifest(where, "teacher", load_config(CI))
    return where


def _put_manifest(s3, key: str, manifest: object) -> None:
    s3.client().put_object(Bucket="ferd", Key=key, Body=json.dumps(manifest).encode())


@pytest.mark.parametrize("outputs, field", [
    ([], "'outputs' object"),
    ({"a.bin": "x"}, "outputs['a.bin'] must hold a sha256"),
    ({"a.bin": {"bytes": 3}}, "outputs['a.bin'] must hold a sha256"),
    ({"a.bin": {"sha256": "0" * 63, "bytes": 3}}, "outputs['a.bin'] must hold a sha256"),
    ({"a.bin": {"sha256": "0" * 64, "bytes": "3"}}, "outputs['a.bin'] must hold a sha256"),
])
def test_a_malformed_manifest_in_the_bucket_is_one_line_naming_the_field(s3, tmp_path, outputs, field):
    _put_manifest(s3, "bad/manifest.json", {"stage": "teacher", "outputs": outputs})
    with pytest.raises(ValueError, match=f"s3://ferd/bad/manifest.json: .*{field.replace('[', '.').replace(']', '.')}"):
        fetch_dir("s3://ferd/bad", tmp_path / "copy", client=s3_client())
    assert not (tmp_path / "copy").exists()  # nothing copied


def test_an_oversized_manifest_is_refused_before_its_body_is_read(s3, tmp_path, monkeypatch):
    _put_manifest(s3, "big/manifest.json", {"outputs": {}, "pad": "x" * 200})
    monkeypatch.setattr(storage, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(ValueError, match=r"big/manifest.json: \d+ bytes, more than a manifest's 100"):
        fetch_dir("s3://ferd/big", tmp_path / "copy", client=s3_client())


def test_a_local_artifact_is_copied_only_when_each_file_matches_its_manifest(tmp_path):
    src = _artifact(tmp_path / "src", **{"a.bin": b"payload"})
    (src / "a.bin").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="a.bin: sha256 does not match its manifest"):
        fetch_dir(str(src), tmp_path / "copy")
    assert not (tmp_path / "copy" / "a.bin").exists() and not (tmp_path / "copy" / "manifest.json").exists()


@pytest.mark.parametrize("uri", ["s3://b/runs#1", "s3://b/runs?v=1", "s3://b/a/../x", "s3://b/a//x", "s3://b/./x",
                                 "s3://b/a\\x", "s3://b/a\nx", "s3://", "s3:///x"])
def test_a_key_is_taken_literally_and_names_one_folder_or_object(uri):
    with pytest.raises(ValueError, match="expected s3://bucket/key"):
        split_s3(uri)


def test_keys_split_as_written():
    assert split_s3("s3://b") == ("b", "")
    assert split_s3("s3://b/a/c.json") == ("b", "a/c.json")
    assert split_s3("s3://b/a/") == ("b", "a")


def test_storage_uri_with_a_fragment_or_dot_dot_is_refused(tmp_path, capsys):
    for uri in ("s3://ferd/runs#1", "s3://ferd/a/../b"):
        rc = main(["stage", "teacher-fetch", "--params", str(CI), "-S", f"storage.uri={uri}",
                   "--out", str(tmp_path / "t"), "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "storage.uri" in err[0], err
    assert not (tmp_path / "t").exists()


def test_an_s3_input_path_cannot_leave_the_cache(tmp_path, monkeypatch):
    from ferd.stages.io import StageIO

    monkeypatch.setenv("FERD_CACHE", str(tmp_path / "cache"))
    io = StageIO(load_config(CI))
    assert io.locate("s3://ferd/a/b")[0] == tmp_path / "cache" / "s3" / "ferd" / "a" / "b"
    with pytest.raises(ValueError, match="expected s3://bucket/key"):
        io.locate("s3://ferd/../../../escaped/art")


def test_a_republish_cut_midway_leaves_no_manifest_over_mixed_files(s3, tmp_path, monkeypatch):
    client = s3_client()
    publish_dir(_artifact(tmp_path / "v1", **{"a.bin": b"v1-a", "b.bin": b"v1-b"}), "s3://ferd/art", client=client)
    v2 = _artifact(tmp_path / "v2", **{"a.bin": b"v2-a", "b.bin": b"v2-b"})
    real, calls = storage.upload_file, []

    def failing_second(client, path, uri):
        calls.append(uri)
        if len(calls) == 2:
            raise StorageError(f"storage: could not upload {uri} (outage)")
        return real(client, path, uri)

    monkeypatch.setattr(storage, "upload_file", failing_second)
    with pytest.raises(StorageError, match="outage"):
        publish_dir(v2, "s3://ferd/art", client=client)
    assert "art/manifest.json" not in s3.keys("ferd", "art/")  # no artifact looks whole; a rerun publishes again
    monkeypatch.setattr(storage, "upload_file", real)
    publish_dir(v2, "s3://ferd/art", client=client)
    fetch_dir("s3://ferd/art", tmp_path / "copy", client=client)
    assert (tmp_path / "copy" / "a.bin").read_bytes() == b"v2-a" and (tmp_path / "copy" / "b.bin").read_bytes() == b"v2-b"


def test_a_fetch_into_a_folder_another_fetch_completes_meanwhile_succeeds(s3, tmp_path, monkeypatch):
    """Ranks of a data-parallel stage fetch one s3:// input into one cache folder at once: here a whole second
    fetch runs while the first is between its downloads; both end with the artifact whole."""
    client = s3_client()
    publish_dir(_artifact(tmp_path / "src", **{"a.bin": b"a", "b.bin": b"b"}), "s3://ferd/art", client=client)
    real, nested = storage.download_file, []

    def download_then_let_another_fetch_run(client, uri, dest, sha256=None):
        out = real(client, uri, dest, sha256=sha256)
        if not nested:
            nested.append(fetch_dir("s3://ferd/art", tmp_path / "copy", client=client))
        return out

    monkeypatch.setattr(storage, "download_file", download_then_let_another_fetch_run)
    fetch_dir("s3://ferd/art", tmp_path / "copy", client=client)
    assert nested and (tmp_path / "copy" / "manifest.json").read_bytes() == (tmp_path / "src" / "manifest.json").read_bytes()
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == ["a.bin", "b.bin", "manifest.json"]


def test_lineage_names_the_manifest_version_the_stage_read(s3, tmp_path, monkeypatch):
    from ferd.stages.io import StageIO

    monkeypatch.setenv("FERD_CACHE", str(tmp_path / "cache"))
    client = s3_client()
    publish_dir(_artifact(tmp_path / "v1", **{"a.bin": b"v1"}), "s3://ferd/in", client=client)
    cfg = load_config(CI)
    io = StageIO(cfg)
    local_in = io.input("s3://ferd/in")
    read = (local_in / "manifest.json").read_bytes()

    def output_reading(name: str) -> Path:
        out = io.output(tmp_path / name)
        out.mkdir()
        (out / "o.bin").write_bytes(b"o")
        write_manifest(out, "teacher", cfg, inputs={"teacher": local_in})
        return out

    etag = client.head_object(Bucket="ferd", Key="in/manifest.json")["ETag"].strip('"')
    rec = json.loads(Path(io.publish(output_reading("same"))).joinpath("manifest.json").read_text())["inputs"]["teacher"]
    assert rec["uri"] == "s3://ferd/in" and rec["etag"] == etag
    assert rec["manifest_sha256"] == hashlib.sha256(read).hexdigest()
    publish_dir(_artifact(tmp_path / "v2", **{"a.bin": b"v2"}), "s3://ferd/in", client=client)  # republished
    rec = json.loads(Path(io.publish(output_reading("later"))).joinpath("manifest.json").read_text())["inputs"]["teacher"]
    assert rec["uri"] == "s3://ferd/in" and rec["etag"] is None and rec["version_id"] is None  # not v2's tags
    assert rec["manifest_sha256"] == hashlib.sha256(read).hexdigest()


def test_an_s3_teacher_uses_the_storage_settings_and_fails_in_one_line(s3, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only storage.endpoint_url names the store
    s3.client().put_object(Bucket="ferd", Key="t/teacher.bin", Body=b"not a checkpoint")
    common = ["stage", "teacher-fetch", "--params", str(CI), "-S", f"storage.endpoint_url={s3.endpoint}",
              "-S", "storage.retries.max_attempts=1", "--no-progress"]
    rc = main([*common, "-S", "teacher.source=s3://ferd/t/absent.safetensors", "--out", str(tmp_path / "a")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 4 and len(err) == 1 and "could not download s3://ferd/t/absent.safetensors" in err[0], err
    rc = main([*common, "-S", "teacher.source=s3://ferd/t/teacher.bin", "-S", f"teacher.sha256={'0' * 64}",
               "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "sha256" in err[0], err  # downloaded from the storage endpoint, then checked


def test_a_signature_with_any_characters_is_a_verdict_not_a_crash(monkeypatch):
    monkeypatch.setenv("FERD_SIGNING_KEY", "k")
    manifest = {**seal({"stage": "teacher", "outputs": {}}), "signature": "hmac-sha256:é"}
    assert "signature does not match" in authenticity_problem(manifest)


def test_a_malformed_pool_index_is_one_line(tmp_path):
    from ferd.stages.artifacts import ArtifactError
    from ferd.stages.pool_store import pool_index

    for index, field in (({"shards": [{"round": 0}]}, r"shards\[0\]"), ({"shards": {}}, "shards: expected a list"),
                         ([], "'shards' list")):
        (tmp_path / "pool.json").write_text(json.dumps(index))
        with pytest.raises(ArtifactError, match=field):
            pool_index(tmp_path)


def test_a_first_publish_needs_no_delete_permission(s3, tmp_path):
    from botocore.exceptions import ClientError

    class NoDelete:  # a write-once bucket policy: Put and Get, no Delete
        def __init__(self, client):
            self._client = client

        def __getattr__(self, name):
            return getattr(self._client, name)

        def delete_object(self, **kw):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "DeleteObject")

    client = NoDelete(s3_client())
    publish_dir(_artifact(tmp_path / "v1", **{"a.bin": b"v1"}), "s3://ferd/once", client=client)
    assert "once/manifest.json" in s3.keys("ferd", "once/")
    with pytest.raises(StorageError, match="could not delete s3://ferd/once/manifest.json"):  # a republish needs it
        publish_dir(_artifact(tmp_path / "v2", **{"a.bin": b"v2"}), "s3://ferd/once", client=client)
