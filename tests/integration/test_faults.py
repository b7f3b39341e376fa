"""The fault suite: kills, S3 outages, untrusted teachers, bad parameters, numerical blow-ups.

Every test records a row (fault, injected, survived, artifacts lost) in :mod:`faultlog`;
``conftest.py`` prints the table at the end of the run. A row says "survived" only when the
test's assertions passed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from support.faultlog import record
from ferd.core.checkpoint import save_state_dict, sha256_file
from ferd.cli import main
from ferd.core.kill_points import KILL_ENV
from ferd.plan.resolve import load_config, resolve
from ferd.algorithm.round_state import RunState, load_checkpoint
from ferd.stages.lineage import verify_run
from ferd.models import create_model
from ferd.compute.numerics import NonFiniteLoss
from ferd.stages import distillation, pool_store, synthesis, teacher_fetch
from support.tcpproxy import CuttableProxy

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "params" / "ci.yaml"
BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _hashes(d: Path) -> dict[str, str]:
    return {p.relative_to(d).as_posix(): sha256_file(p) for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != "manifest.json" and ".debug" not in p.parts}


def _killed_at(cmd: list[str], cwd: Path, point: str) -> bool:
    """Run ``cmd`` with ``FERD_KILL_AT=point`` (:mod:`ferd.core.kill_points`): True when the process died of
    its SIGKILL there, False when it finished without reaching the point."""
    proc = subprocess.run(cmd, cwd=cwd, env={**ENV, KILL_ENV: point}, capture_output=True, text=True)
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-3000:]
    return proc.returncode == -signal.SIGKILL


def _ran(cmd: list[str], cwd: Path) -> str:
    """Run ``cmd`` to the end; its log (stderr)."""
    proc = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


# ---- kill and resume -----------------------------------------------------------------------
RUN_SETS = ["-S", "epochs=4", "-S", "rounds=4", "-S", "synthesis.iterations=4", "-S", "distill.iterations=6"]
# each kill resumes from the checkpoint the one before left: the second swap between its renames, a student
# epoch half done, a checkpoint whole but not swapped in, a generator epoch half done; then the evaluation with
# two attacks kept (the second, PGD-20, from a seeded random start), and the evaluation written with its result not
# yet recorded (every attack kept)
RUN_KILLS = ("checkpoint.between-renames:2", "student.iteration:4", "checkpoint.written:1", "generator.iteration:3",
             "evaluation.attack:2", "evaluation.written:1")
KEPT = {"evaluation.attack": ["teacher.clean.npz", "teacher.pgd20.npz"],
        "evaluation.written": ["student.clean.npz", "student.pgd20.npz", "teacher.clean.npz", "teacher.pgd20.npz"]}


@pytest.mark.slow
def test_sigkill_ferd_run_resumes_bit_identical(tmp_path):
    ferd = str(BIN / "ferd")
    cmd = lambda out: [ferd, "run", "--params", str(CI), *RUN_SETS, "--threads", "1", "--no-progress",  # noqa: E731
                       "--out", str(out)]
    _ran(cmd(tmp_path / "ref"), tmp_path)
    out, lost, kills = tmp_path / "killed", 0, 0
    for point in RUN_KILLS:
        kills += _killed_at(cmd(out), tmp_path, point)
        if point.startswith("checkpoint.between-renames"):  # the state the swap's design is for
            assert (out / "checkpoint.old").is_dir() and not (out / "checkpoint").exists()
        if point.startswith("evaluation."):  # the finished attacks are kept for the resumed evaluation
            assert sorted(p.name for p in (out / "eval.partial").iterdir()) == KEPT[point.split(":")[0]]
        try:  # the last checkpoint must still load whole
            load_checkpoint(RunState.initial(resolve(load_config(CI, RUN_SETS[1::2]))), out)
        except Exception:  # noqa: BLE001
            lost += 1
    log = _ran(cmd(out), tmp_path)
    assert log.count("read back from") == 4 and not (out / "eval.partial").exists()
    same = sha256_file(out / "student.safetensors") == sha256_file(tmp_path / "ref" / "student.safetensors")
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (out, tmp_path / "ref")]
    record("SIGKILL `ferd run`", f"{kills} kills at named points ({', '.join(p.split(':')[0] for p in RUN_KILLS)})",
           same and kills == len(RUN_KILLS) and lost == 0, lost)
    assert kills == len(RUN_KILLS) and lost == 0
    assert same, "the resumed student differs from the uninterrupted one"
    assert {k: v for k, v in metrics[0].items() if k != "run.seconds"} == \
        {k: v for k, v in metrics[1].items() if k != "run.seconds"}
    # each round's grid of kept images, written as the round ends and by the evaluation: the same bytes
    grids = [{p.name: sha256_file(p) for p in (d / "samples").glob("*.png")} for d in (out, tmp_path / "ref")]
    assert grids[0] == grids[1] and sorted(grids[0]) == [f"round-{r:02d}.png" for r in range(4)]
    from ferd.evaluation.portable import inline_images

    inline_images((out / "eval" / "report.md").read_text(), out / "eval", root=out)  # every image link resolves


STAGE_SETS = ["-S", "synthesis.iterations=4", "-S", "distill.iterations=6"]


@pytest.mark.slow
def test_sigkill_synthesis_and_distillation_stages_rerun_bit_identical(tmp_path):
    ferd = [str(BIN / "ferd"), "stage"]
    common = ["--params", str(CI), *STAGE_SETS, "--threads", "1", "--no-progress"]
    run = tmp_path / "run"
    assert main(["stage", "teacher-fetch", *common, "--out", str(run / "teacher")]) == 0
    syn = lambda out: [*ferd, "synthesis", *common, "--round", "0", "--teacher", "run/teacher",  # noqa: E731
                       "--out", out]
    dist = lambda out: [*ferd, "distillation", *common, "--round", "0", "--teacher", "run/teacher",  # noqa: E731
                        "--synthesis", "run/syn-ref", "--pool", "run/pool", "--out", out]
    _ran(syn("run/syn-ref"), tmp_path)
    _ran([*ferd, "pool-store", *common, "--round", "0", "--synthesis", "run/syn-ref", "--out", "run/pool"], tmp_path)
    _ran(dist("run/dist-ref"), tmp_path)
    for name, cmd, points, ref in (
            ("synthesis", syn("run/syn-killed"), ("generator.iteration:3", "manifest.before-write:1"), "syn-ref"),
            ("distillation", dist("run/dist-killed"), ("student.iteration:4", "manifest.before-write:1"), "dist-ref")):
        killed_dir = run / ("syn-killed" if name == "synthesis" else "dist-killed")
        kills = 0
        for point in points:
            kills += _killed_at(cmd, tmp_path, point)
            assert not (killed_dir / "manifest.json").exists()  # a killed stage never looks finished
        report = verify_run(run)  # the finished artifacts are intact; the killed one has no manifest
        lost = sum(1 for p in report.problems if "killed" not in p)
        _ran(cmd, tmp_path)  # the same command again
        same = _hashes(killed_dir) == _hashes(run / ref)
        record(f"SIGKILL stage `{name}`", f"{kills} kills at named points ({', '.join(p.split(':')[0] for p in points)})",
               kills == len(points) and same and lost == 0, lost)
        assert kills == len(points) and lost == 0 and same
    assert verify_run(run).ok


# ---- S3 outage -------------------------------------------------------------------------------
@pytest.mark.slow
def test_s3_outage_mid_upload_fails_cleanly_then_rerun_completes(s3, tmp_path, monkeypatch, single_thread):
    monkeypatch.chdir(tmp_path)
    base = load_config(CI)
    run = Path("w")
    t = teacher_fetch(base, run / "teacher").dir
    syn0 = synthesis(base, run / "r0" / "synthesis", round_index=0, teacher=t).dir
    pool0 = pool_store(base, run / "r0" / "pool", round_index=0, synthesis=syn0).dir
    size = sum(p.stat().st_size for p in pool0.rglob("*") if p.is_file())
    proxy = CuttableProxy(s3.port, cut_after_bytes=size // 2)
    proxy.start()
    sets = ["-S", "storage.uri=s3://ferd/outage", "-S", f"storage.endpoint_url={proxy.endpoint}",
            "-S", "storage.retries.max_attempts=3", "-S", "storage.connect_timeout=1", "-S", "storage.read_timeout=3"]
    cmd = ["stage", "pool-store", "--params", str(CI), *sets, "--round", "0", "--synthesis", "w/r0/synthesis",
           "--out", "w/r0/pool-s3", "--no-progress"]
    rc = main(cmd)
    assert proxy.cuts == 1 and rc == 4  # a storage error, reported as such
    # bounded retries, counted: the upload the cut broke and then the listing of its multipart uploads,
    # each at most storage.retries.max_attempts tries in all (the first included)
    assert 1 <= proxy.attempts_while_down <= 2 * 3 - 1, f"retries not bounded: {proxy.attempts_while_down} tries"
    keys = s3.keys("ferd", "outage/")
    assert "outage/w/r0/pool-s3/manifest.json" not in keys  # incomplete artifact: no manifest
    local = Path("w/r0/pool-s3")
    partial = [k for k in keys if s3.client().get_object(Bucket="ferd", Key=k)["Body"].read()
               != (local / k.removeprefix("outage/w/r0/pool-s3/")).read_bytes()]
    assert partial == []  # no partial object under a final key
    proxy.restore()
    assert main(cmd) == 0  # rerun after the outage
    from ferd.data.pool import FaePool
    from ferd.core.storage import fetch_dir, s3_client

    fetched = fetch_dir("s3://ferd/outage/w/r0/pool-s3", tmp_path / "fetched", client=s3_client())
    pool = FaePool.load(fetched)
    ids = [(int(r), int(e), int(i)) for r, e, i in zip(*_pool_ids(fetched))]
    lost = len(verify_run(Path("w")).problems)
    ok = len(ids) == len(set(ids)) == len(pool) and lost == 0
    record("S3 outage mid-upload (pool-store)", f"endpoint cut after {size // 2} bytes; 3 attempts", ok, lost)
    assert ok


def _pool_ids(pool_dir: Path):
    import pyarrow.parquet as pq

    tables = [pq.read_table(p, columns=["round", "epoch", "index"]) for p in sorted(pool_dir.glob("round=*/*.parquet"))]
    cols = {c: [v for t in tables for v in t.column(c).to_pylist()] for c in ("round", "epoch", "index")}
    return cols["round"], cols["epoch"], cols["index"]


@pytest.mark.slow
def test_s3_outage_during_a_multipart_upload_leaves_no_object(s3, tmp_path):
    from ferd.core.storage import S3Settings, StorageError, abort_incomplete_uploads, s3_client, upload_file

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 * 1024 * 1024))  # > 8 MiB: a multipart upload
    proxy = CuttableProxy(s3.port, cut_after_bytes=9 * 1024 * 1024)
    proxy.start()
    client = s3_client(S3Settings(endpoint_url=proxy.endpoint, max_attempts=2, connect_timeout=1, read_timeout=3))
    with pytest.raises(StorageError, match="could not upload s3://ferd/mp/big.bin"):
        upload_file(client, big, "s3://ferd/mp/big.bin")
    assert s3.keys("ferd", "mp/") == []
    proxy.restore()
    abort_incomplete_uploads(client, "s3://ferd/mp")
    assert s3.client().list_multipart_uploads(Bucket="ferd", Prefix="mp/").get("Uploads", []) == []
    upload_file(client, big, "s3://ferd/mp/big.bin")
    body = s3.client().get_object(Bucket="ferd", Key="mp/big.bin")["Body"].read()
    ok = hashlib.sha256(body).hexdigest() == sha256_file(big)
    record("S3 outage mid multipart upload", "endpoint cut after 9 MiB of 12", ok, 0 if ok else 1)
    assert ok


# ---- untrusted teachers --------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def _teacher_cfg(source: str, *extra: str):
    return load_config(CI, [f"teacher.source={source}", "teacher.arch=cnn-8", *extra])


def _good_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return create_model("cnn-8", num_classes=10).state_dict()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_untrusted_teacher_checkpoints_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    cases = {}
    evil = tmp_path / "evil.pt"
    torch.save({**_good_state(), "payload": _Evil(marker)}, evil)
    cases["pickle that runs code"] = (evil, "refused", ())
    key = next(k for k, v in _good_state().items() if v.ndim == 4)
    wrong_shape = {**_good_state(), key: torch.zeros(3, 3, 3, 3)}
    save_state_dict(wrong_shape, tmp_path / "shape.safetensors")
    cases["wrong shapes"] = (tmp_path / "shape.safetensors", key, ())
    torch.manual_seed(0)
    save_state_dict(create_model("cnn-8", num_classes=100).state_dict(), tmp_path / "classes.safetensors")
    cases["wrong num_classes"] = (tmp_path / "classes.safetensors", "100 classes|num_classes|shape", ())
    for bad, name in ((float("nan"), "NaN"), (float("inf"), "Inf")):
        s = _good_state()
        s[key][0, 0, 0, 0] = bad
        save_state_dict(s, tmp_path / f"{name}.safetensors")
        cases[f"{name} weights"] = (tmp_path / f"{name}.safetensors", "NaN/Inf", ())
    good = tmp_path / "good.safetensors"
    save_state_dict(_good_state(), good)
    (tmp_path / "trunc.safetensors").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases["truncated file"] = (tmp_path / "trunc.safetensors", "corrupt", ())
    cases["sha256 mismatch"] = (good, "sha256 mismatch", ("teacher.sha256=" + "ab" * 32,))
    for fault, (path, match, extra) in cases.items():
        out = tmp_path / f"out-{fault.replace(' ', '_')}"
        with pytest.raises(ValueError, match=match) as exc:
            teacher_fetch(_teacher_cfg(str(path), *extra), out)
        ok = not marker.exists() and not (out / "manifest.json").exists()
        why = str(exc.value).replace(f"{tmp_path}/", "").replace("\n", " ")
        record(f"untrusted teacher: {fault}", f"{why[:70]}…", ok, 0)
        assert ok
    # and the good checkpoint is accepted, with the right sha256
    assert teacher_fetch(_teacher_cfg(str(good), f"teacher.sha256={sha256_file(good)}"), tmp_path / "ok").card


def test_https_teacher_without_sha256_is_refused_unless_allowed(tmp_path):
    good = tmp_path / "srv" / "t.safetensors"
    good.parent.mkdir()
    save_state_dict(_good_state(), good)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(good.parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/t.safetensors"
    try:
        with pytest.raises(ValueError, match="teacher.sha256: required for a URL source"):
            teacher_fetch(_teacher_cfg(url), tmp_path / "refused")
        refused = not (tmp_path / "refused" / "manifest.json").exists()
        a = teacher_fetch(_teacher_cfg(url, "teacher.allow_unverified_url=true"), tmp_path / "allowed")
        assert a.card["source_sha256"] == sha256_file(good)
        b = teacher_fetch(_teacher_cfg(url, f"teacher.sha256={sha256_file(good)}"), tmp_path / "pinned")
        assert b.card["sha256"] == a.card["sha256"]
    finally:
        server.shutdown()
    record("URL teacher without sha256", url.replace(str(server.server_port), "PORT"), refused, 0)
    assert refused


# ---- bad parameters ------------------------------------------------------------------------
BAD_PARAMS = [
    ("synthesis.lamda_uni=1", "synthesis.lamda_uni: unknown key"),
    ("epochs=many", "epochs: Input should be a valid integer"),
    ("distill.utae.gamma=-0.5", "distill.utae.gamma: Input should be greater than or equal to 0"),
    ("threat.eps=0", "threat.eps: Input should be greater than 0"),
    ("threat.eps=1.5", "threat.eps: Input should be less than or equal to 1"),
    ("synthesis.lambda_bn=-1", "synthesis.lambda_bn: Input should be greater than or equal to 0"),
    ("rounds=5", "rounds: expected at most epochs (2)"),
    ("synthesis.batch_size=0", "synthesis.batch_size: Input should be greater than or equal to 1"),
    ("student.arch=resnet-9000", "student.arch: unknown architecture 'resnet-9000'; expected one of"),
    ("dataset=imagenet-22k", "dataset: unknown dataset 'imagenet-22k'; expected one of"),
]


@pytest.mark.parametrize("override,message", BAD_PARAMS)
def test_bad_parameters_are_refused_before_any_work(override, message, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["stage", "synthesis", "--params", str(CI), "-S", override, "--round", "0",
               "--teacher", str(tmp_path / "no-teacher"), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    ok = rc == 2 and message in err and not out.exists()
    record("bad parameter", override, ok, 0)
    assert ok, err


# ---- numerics -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return teacher_fetch(load_config(CI), tmp_path_factory.mktemp("t") / "teacher").dir
    finally:
        torch.set_num_threads(before)


def test_nan_generator_loss_stops_with_terms_and_batch_saved(teacher_dir, tmp_path, monkeypatch, single_thread):
    import ferd.synthesis.ferd as synth_stage

    calls = {"n": 0}
    real = synth_stage.one_hot_loss

    def poisoned(logits, labels):
        calls["n"] += 1
        value = real(logits, labels)
        return value * float("nan") if calls["n"] == 2 else value

    monkeypatch.setattr(synth_stage, "one_hot_loss", poisoned)
    out = tmp_path / "syn"
    with pytest.raises(NonFiniteLoss, match=r"synthesis: the loss is not finite at epoch 0, iteration 1") as exc:
        synthesis(load_config(CI), out, round_index=0, teacher=teacher_dir)
    msg = str(exc.value)
    assert all(f"{t}=" in msg for t in ("adv", "bn", "oh", "uni", "total")) and "oh=nan" in msg
    saved = torch.load(exc.value.debug_path, weights_only=True)
    assert saved["iteration"] == 1 and saved["images"].shape[0] == 16 and "labels" in saved
    ok = str(exc.value.debug_path) in msg and not (out / "manifest.json").exists()
    record("NaN in L_gen (synthesis)", "L_oh × NaN at iteration 1", ok, 0)
    assert ok


def test_inf_student_loss_stops_with_terms_and_batch_saved(teacher_dir, tmp_path, monkeypatch, single_thread):
    import ferd.distill.side as dist_stage

    cfg = load_config(CI)
    syn = synthesis(cfg, tmp_path / "syn", round_index=0, teacher=teacher_dir).dir
    pool = pool_store(cfg, tmp_path / "pool", round_index=0, synthesis=syn).dir
    monkeypatch.setattr(dist_stage, "robust_distillation_loss", lambda *a, **k: torch.tensor(float("inf")))
    out = tmp_path / "dist"
    with pytest.raises(NonFiniteLoss, match="distillation: the loss is not finite at epoch 0, iteration 0") as exc:
        distillation(cfg, out, round_index=0, teacher=teacher_dir, synthesis=syn, pool=pool)
    saved = torch.load(exc.value.debug_path, weights_only=True)
    ok = {"fae", "utae", "teacher_logits"} <= set(saved) and "kl_adv=" in str(exc.value) and \
        not (out / "manifest.json").exists()
    record("Inf in L_stu (distillation)", "L_stu = Inf at iteration 0", ok, 0)
    assert ok


def test_generator_collapse_is_reported_in_logs_and_manifest(tmp_path, caplog, single_thread):
    torch.manual_seed(0)
    state = create_model("cnn-8", num_classes=10).state_dict()
    bias = next(k for k in reversed(list(state)) if k.endswith("bias"))
    state[bias] = torch.zeros_like(state[bias])
    state[bias][3] = 1e3  # the teacher answers "3" whatever it sees: the generator cannot escape
    path = tmp_path / "one-class.safetensors"
    save_state_dict(state, path)
    cfg = _teacher_cfg(str(path), "synthesis.iterations=6")
    t = teacher_fetch(cfg, tmp_path / "teacher").dir
    with caplog.at_level(logging.WARNING, logger="ferd"):
        out = synthesis(cfg, tmp_path / "syn", round_index=0, teacher=t).dir
    manifest = json.loads((out / "manifest.json").read_text())
    ok = bool(manifest["warnings"]) and "generator collapse" in manifest["warnings"][0] and \
        any("generator collapse" in r.getMessage() for r in caplog.records)
    record("generator collapse", "teacher predicts one class", ok, 0)
    assert ok
