"""Integrity (issue 19), findings 4 and 5: an artifact lists, publishes and fetches only what its stage wrote,
and with a signing key a forged one is refused. Rows of the fault suite table."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from support.faultlog import record
from ferd.core.checkpoint import sha256_file
from ferd.cli import main

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "params" / "ci.yaml"

pytestmark = pytest.mark.usefixtures("single_thread")




def _forge_teacher(s3, prefix: str) -> None:
    """Replace the teacher in the bucket consistently: other weights, an edited card, a resealed manifest
    (what anyone who can write the bucket can do; no key)."""
    import os

    from ferd.core.provenance import seal
    from ferd.core.storage import s3_client

    client = s3_client()
    get = lambda key: client.get_object(Bucket="ferd", Key=f"{prefix}/{key}")["Body"].read()  # noqa: E731
    manifest, card = json.loads(get("manifest.json")), json.loads(get("model_card.json"))
    weights = bytearray(get("teacher.safetensors"))
    weights[-4:] = b"\x00\x00\x80\x3f"  # one weight changed
    digest = hashlib.sha256(bytes(weights)).hexdigest()
    card["sha256"] = digest
    card_bytes = (json.dumps(card, indent=2, sort_keys=True) + "\n").encode()
    manifest["outputs"]["teacher.safetensors"].update(sha256=digest, bytes=len(weights))
    manifest["outputs"]["model_card.json"].update(sha256=hashlib.sha256(card_bytes).hexdigest(),
                                                  bytes=len(card_bytes))
    key = os.environ.pop("FERD_SIGNING_KEY", None)
    try:
        forged = {**seal(manifest), "signature": manifest["signature"]}  # resealed, the old signature kept
    finally:
        if key is not None:
            os.environ["FERD_SIGNING_KEY"] = key
    for name, body in (("teacher.safetensors", bytes(weights)), ("model_card.json", card_bytes),
                       ("manifest.json", json.dumps(forged).encode())):
        client.put_object(Bucket="ferd", Key=f"{prefix}/{name}", Body=body)


def test_a_forged_artifact_in_the_bucket_is_refused_with_a_signing_key(s3, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FERD_SIGNING_KEY", "correct horse battery staple")
    monkeypatch.setenv("FERD_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    sets = ["-S", "storage.uri=s3://ferd/signed", "-S", f"storage.endpoint_url={s3.endpoint}"]
    common = ["--params", str(CI), "--no-progress", "--threads", "1", *sets]
    assert main(["stage", "teacher-fetch", *common, "--out", "teacher"]) == 0
    signed = json.loads((tmp_path / "teacher" / "manifest.json").read_text())
    assert signed["signature"].startswith("hmac-sha256:")
    _forge_teacher(s3, "signed/teacher")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # nothing local: the next stage reads the (forged) teacher from the bucket
    capsys.readouterr()
    rc = main(["stage", "synthesis", *common, "--round", "0", "--teacher", "teacher", "--out", "syn0"])
    err = capsys.readouterr().err
    refused = rc == 2 and "signature does not match" in err and not (elsewhere / "syn0" / "manifest.json").exists()
    assert main(["lineage", "verify", str(elsewhere / "teacher")]) == 1
    out = capsys.readouterr()
    verify = "signature does not match" in out.err and "signatures checked" in out.out
    monkeypatch.delenv("FERD_SIGNING_KEY")
    assert main(["lineage", "verify", str(elsewhere / "teacher")]) == 0  # integrity alone: the forgery passes
    plain = "authenticity NOT checked" in capsys.readouterr().out
    ok = refused and verify and plain
    record("forged teacher in the bucket (resealed manifest)", "FERD_SIGNING_KEY set; weights, card, manifest",
           ok, 0)
    assert ok, err


def test_a_symlink_or_a_path_outside_is_never_published_or_followed(s3, tmp_path):
    from ferd.plan.resolve import load_config
    from ferd.stages.artifacts import ArtifactError, write_manifest
    from ferd.core.storage import abort_incomplete_uploads, fetch_dir, s3_client

    secret = tmp_path / "secret.txt"
    secret.write_text("not for the bucket")
    art = tmp_path / "art"
    art.mkdir()
    (art / "x.bin").write_bytes(b"payload")
    (art / "link.txt").symlink_to(secret)
    with pytest.raises(ArtifactError, match="symbolic link"):
        write_manifest(art, "teacher", load_config(CI))
    client = s3_client()
    client.put_object(Bucket="ferd", Key="evil/manifest.json",
                      Body=json.dumps({"outputs": {"../../escape.txt": {"sha256": "0" * 64}}}).encode())
    with pytest.raises(ValueError, match="not a path inside the artifact"):
        fetch_dir("s3://ferd/evil", tmp_path / "fetched", client=client)
    escaped = not (tmp_path / "escape.txt").exists()
    # multipart clean-up of s3://ferd/run/a leaves the sibling s3://ferd/run/ab alone
    up = client.create_multipart_upload(Bucket="ferd", Key="run/ab/big.bin")
    client.create_multipart_upload(Bucket="ferd", Key="run/a/big.bin")
    assert abort_incomplete_uploads(client, "s3://ferd/run/a") == 1
    left = [u["Key"] for u in client.list_multipart_uploads(Bucket="ferd").get("Uploads", [])]
    ok = escaped and left == ["run/ab/big.bin"]
    client.abort_multipart_upload(Bucket="ferd", Key="run/ab/big.bin", UploadId=up["UploadId"])
    record("foreign files in an artifact", "a symlink; a manifest naming ../..; a sibling's multipart", ok, 0)
    assert ok, left


def test_a_pinned_teacher_is_checked_against_its_source_bytes_not_its_card(tmp_path):
    from ferd.core.checkpoint import save_state_dict
    from ferd.plan.resolve import load_config
    from ferd.models import create_model
    from ferd.algorithm.teacher_source import obtain_teacher

    src = tmp_path / "teacher.safetensors"
    torch.manual_seed(0)
    save_state_dict(create_model("cnn-4", num_classes=10).state_dict(), src)
    cfg = load_config(CI, [f"teacher.source={src}", "teacher.arch=cnn-4", f"teacher.sha256={sha256_file(src)}"])
    out = tmp_path / "run" / "teacher"
    _, card = obtain_teacher(cfg, out, progress=False)
    good = sha256_file(out / "teacher.safetensors")
    torch.manual_seed(1)  # the copy swapped and its card edited to match
    save_state_dict(create_model("cnn-4", num_classes=10).state_dict(), out / "teacher.safetensors")
    card["sha256"] = sha256_file(out / "teacher.safetensors")
    (out / "model_card.json").write_text(json.dumps(card))
    model, card2 = obtain_teacher(cfg, out, progress=False)
    restored = sha256_file(out / "teacher.safetensors") == good == card2["sha256"]
    src.write_bytes(src.read_bytes()[:-8] + b"\x00" * 8)  # the source itself changed: refused
    with pytest.raises(ValueError, match="sha256 mismatch"):
        obtain_teacher(cfg, out, progress=False)
    record("pinned teacher swapped in the run directory", "other weights + edited card", restored, 0)
    assert restored


def test_stage_out_may_be_an_s3_uri(s3, tmp_path, monkeypatch, capsys):
    """``ferd stage … --out s3://…`` publishes to the bucket (it was once read as a local path ``s3:/…``)."""
    monkeypatch.setenv("FERD_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert main(["stage", "teacher-fetch", "--params", str(CI), "--no-progress", "--threads", "1",
                 "-S", f"storage.endpoint_url={s3.endpoint}", "--out", "s3://ferd/direct/teacher"]) == 0
    summary = json.loads(capsys.readouterr().out)
    keys = s3.keys("ferd", "direct/teacher/")
    ok = summary["uri"] == "s3://ferd/direct/teacher" and "direct/teacher/manifest.json" in keys
    ok = ok and not (tmp_path / "s3:").exists()
    record("`ferd stage --out s3://…`", "teacher-fetch straight to the bucket", ok, 0)
    assert ok, (summary, keys)
