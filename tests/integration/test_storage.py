"""``storage.uri: s3://…`` against a moto server on 127.0.0.1: the same artifacts as a local run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ferd.cli import main
from ferd.core.params_io import ConfigError
from ferd.plan.resolve import load_config
from ferd.stages.lineage import verify_run
from ferd.stages import run_stages
from ferd.stages.io import StageIO
from ferd.stages.pool_store import load_pool
from ferd.core.storage import StorageError, fetch_dir, join_uri, publish_dir, s3_client, split_s3

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "params" / "ci.yaml"
# fields that legitimately differ between two runs of the same stage
VOLATILE = {"started_at", "finished_at", "uri", "manifest_sha256", "environment", "code"}
TIMED = {"evaluation/eval/settings.json", "evaluation/eval/report.md"}  # record the attacks' wall time


def _same(a: dict[str, str], b: dict[str, str]) -> None:
    assert set(a) == set(b)
    assert {k: v for k, v in a.items() if k not in TIMED} == {k: v for k, v in b.items() if k not in TIMED}


def _files(run: Path) -> dict[str, str]:
    from ferd.core.checkpoint import sha256_file

    return {p.relative_to(run).as_posix(): sha256_file(p) for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def _stable(manifest: dict) -> dict:
    m = {k: v for k, v in manifest.items() if k not in VOLATILE}
    m["outputs"] = {rel: {"sha256": o["sha256"], "bytes": o["bytes"]} for rel, o in m["outputs"].items()
                    if f"evaluation/{rel}" not in TIMED}
    m["inputs"] = {name: {k: v for k, v in rec.items() if k in ("stage", "relpath")}
                   for name, rec in m["inputs"].items()}
    return m


def test_storage_uri_is_validated():
    with pytest.raises(ConfigError, match="storage.uri"):
        load_config(CI, ["storage.uri=gs://bucket/x"])
    with pytest.raises(ConfigError, match="storage.retries.max_attempts"):
        load_config(CI, ["storage.retries.max_attempts=0"])
    assert load_config(CI, ["storage.uri=s3://ferd/runs/a/"]).storage.uri == "s3://ferd/runs/a"


def test_s3_run_leaves_the_same_files_and_manifests_as_a_local_run(s3, tmp_path, monkeypatch, single_thread):
    monkeypatch.chdir(tmp_path)
    local = run_stages(load_config(CI), "local")["evaluation"].parent
    cfg = load_config(CI, ["storage.uri=s3://ferd/runs/one", f"storage.endpoint_url={s3.endpoint}"])
    remote_run = run_stages(cfg, "remote")["evaluation"].parent
    _same(_files(local), _files(remote_run))
    keys = s3.keys("ferd", "runs/one/remote/")
    assert sorted(k.removeprefix("runs/one/remote/") for k in keys) == sorted(
        [*_files(remote_run), *(p.relative_to(remote_run).as_posix() for p in remote_run.rglob("manifest.json"))])
    # fetch the whole run back from the bucket into an empty directory: identical and verified
    fresh = tmp_path / "fetched"
    for m in remote_run.rglob("manifest.json"):
        rel = m.parent.relative_to(remote_run).as_posix()
        fetch_dir(f"s3://ferd/runs/one/remote/{rel}", fresh / rel, client=s3_client())
    assert _files(fresh) == _files(remote_run)
    assert verify_run(fresh).ok
    for m in local.rglob("manifest.json"):
        rel = m.relative_to(local)
        ml, mr = json.loads(m.read_text()), json.loads((remote_run / rel).read_text())
        assert _stable(ml) == _stable(mr), rel
        assert mr["uri"].startswith("s3://ferd/runs/one/remote/")
        for out in mr["outputs"].values():
            assert out["uri"].startswith("s3://") and out["etag"]
    # the last round's pool artifact holds only its own shard; read elsewhere, the earlier shards it pins
    # are fetched from the bucket, by URI (a fresh cache) or by storage.uri (a relative path)
    ref = load_pool(cfg, remote_run / "round-1" / "pool").tensors()
    assert [p.parent.name for p in (remote_run / "round-1" / "pool").glob("round=*/*.parquet")] == ["round=1"]
    monkeypatch.setenv("FERD_CACHE", str(tmp_path / "cache"))
    by_uri = StageIO(cfg).input("s3://ferd/runs/one/remote/round-1/pool")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    by_path = StageIO(cfg).input("remote/round-1/pool")
    for pool_dir in (by_uri, by_path):
        assert not (pool_dir.parent.parent / "round-0").exists()
        got = load_pool(cfg, pool_dir)
        assert got.rounds == [0, 1] and all(torch.equal(a, b) for a, b in zip(got.tensors(), ref))
        assert (pool_dir.parent.parent / "round-0" / "pool" / "round=0" / "part-0.parquet").is_file()


def test_stage_cli_fetches_inputs_from_the_bucket(s3, tmp_path, monkeypatch, single_thread, capsys):
    """``ferd stage`` with storage.uri: an input missing locally is fetched (and verified), the output is
    published, and the manifest names the S3 input with its ETag."""
    monkeypatch.chdir(tmp_path)
    sets = ["-S", "storage.uri=s3://ferd/r", "-S", f"storage.endpoint_url={s3.endpoint}"]
    common = ["--params", str(CI), "--no-progress", *sets]
    assert main(["stage", "teacher-fetch", *common, "--out", "teacher"]) == 0
    assert main(["stage", "synthesis", *common, "--round", "0", "--teacher", "teacher", "--out", "syn0"]) == 0
    capsys.readouterr()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # nothing local: the pool stage reads round 0's synthesis from S3
    assert main(["stage", "pool-store", *common, "--round", "0", "--synthesis", "syn0", "--out", "pool0"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["uri"] == "s3://ferd/r/pool0" and summary["rows"] > 0
    m = json.loads((elsewhere / "pool0" / "manifest.json").read_text())
    rec = m["inputs"]["synthesis"]
    assert rec["uri"] == "s3://ferd/r/syn0" and rec["etag"]
    assert (elsewhere / "syn0" / "manifest.json").is_file()
    assert "r/pool0/manifest.json" in s3.keys("ferd", "r/pool0/")


def test_a_corrupt_object_is_refused_on_fetch(s3, tmp_path):
    art = tmp_path / "a"
    art.mkdir()
    (art / "x.bin").write_bytes(b"payload")
    from ferd.stages.artifacts import write_manifest

    write_manifest(art, "teacher", load_config(CI))
    client = s3_client()
    publish_dir(art, "s3://ferd/a", client=client)
    client.put_object(Bucket="ferd", Key="a/x.bin", Body=b"tampered")
    with pytest.raises(StorageError, match="x.bin: sha256 does not match"):
        fetch_dir("s3://ferd/a", tmp_path / "b", client=client)
    assert not (tmp_path / "b" / "x.bin").exists() and not (tmp_path / "b" / "manifest.json").exists()


def test_uri_helpers():
    assert split_s3("s3://b/p/q") == ("b", "p/q")
    assert join_uri("s3://b/p", "round-0/pool") == "s3://b/p/round-0/pool"
    with pytest.raises(ValueError, match="relative path"):
        join_uri("s3://b/p", "../x")
    with pytest.raises(ValueError, match="s3://bucket/key"):
        split_s3("http://b/k")


def test_local_storage_uri_places_relative_paths_under_it(tmp_path, monkeypatch, single_thread, capsys):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    assert main(["stage", "teacher-fetch", "--params", str(CI), "-S", f"storage.uri={store}", "--no-progress",
                 "--out", "teacher"]) == 0
    assert (store / "teacher" / "manifest.json").is_file() and not (tmp_path / "teacher").exists()
    assert json.loads(capsys.readouterr().out)["uri"] == str(store / "teacher")
    assert verify_run(store).ok
