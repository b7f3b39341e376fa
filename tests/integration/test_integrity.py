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

from support.faultlog import record
from ferd.core.checkpoint import sha256_file
from ferd.cli import main
from ferd.core.provenance import seal
from ferd.data.pool import read_shard, shard_table, write_shard
from support.inputs import BOMB, TINY

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "params" / "ci.yaml"

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
    from ferd.algorithm.run_dir import owned

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
    rec_path.write_text(json.dumps(seal(rec)))  # resealed: integrity alone, no key


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
    (out / "manifest.json").unlink()  # a run killed before it finished: its checkpoint alone decides
    forge(out)
    assert main(_args(out)) == 2
    err = capsys.readouterr().err
    ok = message in err and len(_errors(err)) == 1 and "Traceback" not in err
    record("resume from a forged checkpoint", fault, ok, 0)
    assert ok, err


def _edit_record(out: Path, **change) -> None:
    path = out / "checkpoint" / "round.json"
    path.write_text(json.dumps(seal({**json.loads(path.read_text()), **change})))


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
    second = compare(set=["distill.lr=0.05"])
    mtime = (arm / "metrics.json").stat().st_mtime_ns
    third = compare(set=["distill.lr=0.05"])  # finished: not run again
    stale = arm.parent / ".stale" / "seed=0-0"
    kept = json.loads((stale / "metrics.json").read_text()) == first
    params = json.loads((arm / "params.json").read_text())
    # rerun with the new parameters: another student (the metrics alone need not differ: the CI preset's
    # one-epoch teacher is at chance, and two runs' wall times can round to the same tenth of a second)
    retrained = sha256_file(stale / "student.safetensors") != sha256_file(arm / "student.safetensors")
    fresh = params["distill"]["lr"] == 0.05 and second == third and retrained
    fresh = fresh and (arm / "metrics.json").stat().st_mtime_ns == mtime
    compare(set=["distill.lr=0.05"], teacher_seed=1)  # another teacher: trained and evaluated anew
    new_card = json.loads((out / "teacher" / "model_card.json").read_text())
    result = json.loads((out / "teacher" / "eval" / "result.json").read_text())
    teacher_ok = new_card["sha256"] != card["sha256"] and result["model_sha256"] == new_card["sha256"]
    ok = kept and fresh and teacher_ok
    record("`ferd compare` after its preset changed", "distill.lr 0.1 → 0.05, then teacher seed 0 → 1", ok, 0 if kept else 1)
    assert kept and fresh and teacher_ok


# ---- 7: pool writers ---------------------------------------------------------------------------------
def test_concurrent_writers_of_one_shard_leave_one_whole_shard(tmp_path):
    from ferd.data.pool import Shard

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
