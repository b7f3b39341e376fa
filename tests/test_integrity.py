"""Integrity (issue 19): no stale result reported as new, no foreign run adopted, resume checks what it
loads, concurrent writers cannot mix their bytes, bad input is one line. Rows of the fault suite table."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import threading
from pathlib import Path

import pytest
import torch
import yaml

from faultlog import record
from ferd.checkpoint import sha256_file
from ferd.cli import main
from ferd.pool import read_shard, shard_table, write_shard

ROOT = Path(__file__).resolve().parent.parent
TINY = ["epochs=2", "rounds=2", "teacher.arch=cnn-4", "teacher.train.epochs=1", "teacher.train.pgd_steps=1",
        "student.arch=cnn-4", "synthesis.iterations=2", "synthesis.batch_size=16", "synthesis.generator.ngf=4",
        "synthesis.generator.nz=8", "synthesis.bottleneck.iterations=2", "synthesis.reweighting.pgd_steps=2",
        "distill.iterations=2", "distill.batch_size=16", "distill.utae.steps=1", "evaluation.n_examples=40",
        "evaluation.attacks=[clean,pgd20]"]

pytestmark = pytest.mark.usefixtures("single_thread")


def _args(out: Path, *extra: str) -> list[str]:
    args = ["run", "--params", str(ROOT / "params" / "embedded.yaml"), "--out", str(out), "--no-progress"]
    for s in (*TINY, *extra):
        args += ["-S", s]
    return args


def _errors(stderr: str) -> list[str]:
    """The error lines of a command (log records aside)."""
    return [ln for ln in stderr.splitlines() if ln.startswith("ferd ")]


def tree(d: Path) -> dict[str, str]:
    """sha256 of every file under ``d`` (what a refused command must leave untouched)."""
    return {str(p.relative_to(d)): sha256_file(p) for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(_args(out)) == 0
    return out


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# ---- 1, 2: nothing written before the run is known to be the same run; one owner per directory --------
def test_another_runs_directory_is_refused_before_anything_is_written(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path / "run")
    before = tree(out)
    assert main(_args(out, "seed=1")) == 2
    err = capsys.readouterr().err
    assert "holds a run made with other parameters" in err and len(_errors(err)) == 1
    ok = tree(out) == before
    record("`ferd run` on another run's --out", "same --out, seed 0 then seed 1", ok, 0 if ok else 1)
    assert ok


def test_foreign_files_and_a_second_process_are_refused(tmp_path, capsys):
    from ferd.run_dir import owned

    foreign = tmp_path / "foreign"
    (foreign / "pool" / "round=0").mkdir(parents=True)
    (foreign / "pool" / "round=0" / "part-0.parquet").write_bytes(b"someone else's shard")
    before = tree(foreign)
    assert main(_args(foreign)) == 2
    assert "holds files but no ferd run" in capsys.readouterr().err
    busy = tmp_path / "busy"
    with owned(busy):
        assert main(_args(busy)) == 2
    assert "in use by another ferd process" in capsys.readouterr().err
    ok = tree(foreign) == before and not busy.exists()
    record("leftover pool / a second process on --out", "foreign pool/ without params.json; lock held", ok, 0)
    assert ok


# ---- 3: resume validates what it loads ----------------------------------------------------------------
def _reseal(out: Path, name: str) -> None:
    """Forge consistently: update the checkpoint's record of ``name`` (a file, or ``pool/round=R``)."""
    rec_path = out / "checkpoint" / "round.json"
    rec = json.loads(rec_path.read_text())
    if name.startswith("pool/"):
        r = name.split("=")[1]
        rec["pool"][r] = sha256_file(out / name / "part-0.parquet")
    else:
        rec["files"][name] = sha256_file(out / "checkpoint" / name)
    rec_path.write_text(json.dumps(rec))


def _rewrite_pool(out: Path, r: int, **change) -> None:
    import pyarrow.parquet as pq

    path = out / "pool" / f"round={r}" / "part-0.parquet"
    shard = read_shard(path)
    for k, v in change.items():
        setattr(shard, k, v(shard))
    pq.write_table(shard_table(shard), path)


@pytest.mark.parametrize("fault, forge, message", [
    ("next round 99", lambda o: _edit_record(o, next_round=99), "next_round must be an integer in [1, 2]"),
    ("next round -2", lambda o: _edit_record(o, next_round=-2), "next_round must be an integer in [1, 2]"),
    ("p of length 5", lambda o: _edit_p(o), "p must be float64 of shape (10,)"),
    ("pool images ×255", lambda o: (_rewrite_pool(o, 1, images=lambda s: s.images * 255), _reseal(o, "pool/round=1")),
     "images outside [0, 1]"),
    ("pool round column lies", lambda o: (_rewrite_pool(o, 1, round=lambda s: 0), _reseal(o, "pool/round=1")),
     "holds round 0 in partition round=1"),
    ("pool shard changed, not resealed", lambda o: _rewrite_pool(o, 0, labels=lambda s: (s.labels + 1) % 10),
     "changed since the checkpoint"),
])
def test_resume_refuses_a_checkpoint_that_does_not_fit(finished, tmp_path, capsys, fault, forge, message):
    out = _copy(finished, tmp_path / "run")
    forge(out)
    assert main(_args(out)) == 2
    err = capsys.readouterr().err
    ok = message in err and len(_errors(err)) == 1 and "Traceback" not in err
    record("resume from a forged checkpoint", fault, ok, 0)
    assert ok, err


def _edit_record(out: Path, **change) -> None:
    path = out / "checkpoint" / "round.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))


def _edit_p(out: Path) -> None:
    path = out / "checkpoint" / "reweighting.pt"
    rw = torch.load(path, weights_only=True)
    rw["p"] = torch.full((5,), 0.2, dtype=torch.float64)
    buf = io.BytesIO()
    torch.save(rw, buf)
    path.write_bytes(buf.getvalue())
    _reseal(out, "reweighting.pt")


# ---- 1: a comparison never reports a stale arm, and re-evaluates a changed teacher ---------------------
def test_a_changed_preset_reruns_its_arms_and_keeps_the_old_ones_aside(tmp_path, capsys):
    preset = {"base": "ci", "students": ["cnn-8"], "seeds": [0], "methods": {"ferd": []}, "set": []}
    path = tmp_path / "p.yaml"
    out = tmp_path / "cmp"
    arm = out / "runs" / "ferd" / "cnn-8" / "seed=0"

    def compare(**changes) -> dict:
        path.write_text(yaml.safe_dump({**preset, **changes}))
        assert main(["compare", "--preset", str(path), "--out", str(out), "--no-progress"]) == 0
        return json.loads((arm / "metrics.json").read_text())

    first = compare()
    card = json.loads((out / "teacher" / "model_card.json").read_text())
    second = compare(set=["synthesis.lambda_uni=2"])
    mtime = (arm / "metrics.json").stat().st_mtime_ns
    third = compare(set=["synthesis.lambda_uni=2"])  # finished: not run again
    stale = arm.parent / ".stale" / "seed=0-0"
    kept = json.loads((stale / "metrics.json").read_text()) == first
    params = json.loads((arm / "params.json").read_text())
    fresh = params["synthesis"]["lambda_uni"] == 2 and second == third and second != first
    fresh = fresh and (arm / "metrics.json").stat().st_mtime_ns == mtime
    compare(set=["synthesis.lambda_uni=2"], teacher_seed=1)  # another teacher: trained and evaluated anew
    new_card = json.loads((out / "teacher" / "model_card.json").read_text())
    result = json.loads((out / "teacher" / "eval" / "result.json").read_text())
    teacher_ok = new_card["sha256"] != card["sha256"] and result["model_sha256"] == new_card["sha256"]
    ok = kept and fresh and teacher_ok
    record("`ferd compare` after its preset changed", "λ_uni 5 → 2, then teacher seed 0 → 1", ok, 0 if kept else 1)
    assert kept and fresh and teacher_ok


# ---- 7: pool writers ---------------------------------------------------------------------------------
def test_concurrent_writers_of_one_shard_leave_one_whole_shard(tmp_path):
    from ferd.pool import Shard

    def shard(value: float) -> Shard:
        n = 64
        return Shard(round=3, images=torch.full((n, 3, 8, 8), value), labels=torch.zeros(n, dtype=torch.int64),
                     teacher_logits=torch.zeros(n, 10), class_weight=torch.full((n,), 0.1, dtype=torch.float64),
                     epochs=torch.zeros(n, dtype=torch.int32))

    dead = tmp_path / "round=3" / ".part-0.parquet.tmp-999999999-deadbeef"
    dead.parent.mkdir(parents=True)
    dead.write_bytes(b"left by a writer that was killed")
    errors: list[BaseException] = []

    def write(v: float) -> None:
        try:
            for _ in range(5):
                write_shard(shard(v), tmp_path)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(v,)) for v in (0.25, 0.75)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = read_shard(tmp_path / "round=3" / "part-0.parquet").images
    ok = not errors and float(got.min()) == float(got.max()) in (0.25, 0.75) and not dead.exists()
    ok = ok and not list((tmp_path / "round=3").glob(".part-0.parquet.tmp-*"))
    record("two writers of one pool shard", "2 threads × 5 writes; a dead writer's temporary", ok, 0 if ok else 1)
    assert ok, errors


# ---- 6: bad input, one line, before any work -----------------------------------------------------------
BOMB = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" if i else "l0: &l0 [x, x, x, x, x, x, x, x, x]\n"
               for i in range(9))


@pytest.mark.parametrize("name, params_text, extra, message", [
    ("YAML alias bomb in a params file", BOMB, [], "aliases (*name) are not allowed in parameters"),
    ("YAML alias bomb in -S", None, ["seed=&a [1, *a]"], "override seed: not valid parameter YAML"),
    ("empty params file", "", [], "empty; expected a mapping of parameter groups"),
    ("epochs = 2 200 000", None, ["epochs=2200000"], "epochs: Input should be less than or equal to 10000"),
    ("device cuda:abc", None, ["device=cuda:abc"], "device: not a torch device: 'cuda:abc'"),
    ("an override 10 000 characters long", None, ["seed=" + "x" * 10_000], "seed: Input should be a valid integer"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, name, params_text, extra, message):
    import resource

    params = ROOT / "params" / "embedded.yaml"
    if params_text is not None:
        params = tmp_path / "p.yaml"
        params.write_text(params_text)
    out = tmp_path / "out"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rc = main(["run", "--params", str(params), "--out", str(out), *[a for s in extra for a in ("-S", s)]])
    err = capsys.readouterr().err
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    ok = rc == 2 and message in err and "Traceback" not in err and len(err) < 1000 and not out.exists()
    ok = ok and grown_mib < 512 and len(_errors(err)) == 1
    record(f"bad input: {name}", f"`ferd run` ({len(err)} characters of error)", ok, 0)
    assert ok, (rc, err, grown_mib)


def test_verbose_logging_never_carries_credentials(tmp_path, capsys):
    """boto's DEBUG records carry signed headers (access key id, session token): -v never enables them."""
    names = ("botocore", "boto3", "s3transfer", "urllib3")
    for name in names:
        logging.getLogger(name).setLevel(logging.NOTSET)
    logging.getLogger().setLevel(logging.DEBUG)  # what -v asks for
    assert main(["-v", "run", "--params", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")]) == 2
    capsys.readouterr()
    for name in names:
        assert logging.getLogger(name).getEffectiveLevel() >= logging.INFO, name


def test_pool_sha_is_what_a_checkpoint_records(finished):
    rec = json.loads((finished / "checkpoint" / "round.json").read_text())
    for r, digest in rec["pool"].items():
        assert hashlib.sha256((finished / "pool" / f"round={r}" / "part-0.parquet").read_bytes()).hexdigest() == digest


# ---- 4, 5: publish only what the stage wrote; authenticity with a signing key ---------------------------
CI = ROOT / "params" / "ci.yaml"


def _forge_teacher(s3, prefix: str) -> None:
    """Replace the teacher in the bucket consistently: other weights, an edited card, a resealed manifest
    (what anyone who can write the bucket can do; no key)."""
    import os

    from ferd.provenance import seal
    from ferd.storage import s3_client

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
    from ferd.config import load_config
    from ferd.stages.artifacts import ArtifactError, write_manifest
    from ferd.storage import abort_incomplete_uploads, fetch_dir, s3_client

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
    from ferd.checkpoint import save_state_dict
    from ferd.config import load_config
    from ferd.models import create_model
    from ferd.teacher_source import obtain_teacher

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


def test_a_stage_refuses_an_output_directory_holding_another_runs_files(tmp_path, capsys):
    """``ferd stage … --out D``: D may be empty, or hold this very task's artifact (rerun in place); another
    run's artifact or foreign files are refused before the stage writes anything (issue 19)."""
    common = ["--params", str(CI), "--no-progress", "--threads", "1"]
    a = tmp_path / "teacher"
    assert main(["stage", "teacher-fetch", *common, "--out", str(a)]) == 0
    assert not (a / ".ferd-task.json").exists()
    assert main(["stage", "teacher-fetch", *common, "--out", str(a)]) == 0  # the same task: in place
    before = tree(a)
    capsys.readouterr()
    assert main(["stage", "teacher-fetch", *common, "-S", "seed=1", "--out", str(a)]) == 2
    other = "holds a teacher artifact (round None) made with other parameters" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("someone's notes")
    assert main(["stage", "teacher-fetch", *common, "--out", str(foreign)]) == 2
    files = "holds files that are no ferd artifact" in capsys.readouterr().err
    ok = other and files and tree(a) == before and tree(foreign) == {"notes.txt": sha256_file(foreign / "notes.txt")}
    record("`ferd stage` into another run's directory", "another seed's teacher; a foreign file", ok, 0)
    assert ok
