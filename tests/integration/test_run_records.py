"""Issue 34, item 3 and the empty key of item 6: every record ``ferd run`` reads back is untrusted input.

A checkpoint names exactly the files it holds (an empty or partial ``files`` map is refused, signing or
not); with ``FERD_SIGNING_KEY`` set every file of a finished run is covered by its signed ``manifest.json``,
so one changed byte anywhere is refused by ``ferd lineage verify``, by a re-run of the command and by
``ferd compare``'s check that an arm is finished; an empty ``FERD_SIGNING_KEY=`` is an error. One signed
``ferd run`` of ``params/ci.yaml`` is made once; each case forges a copy of it. Rows of the fault suite table.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from support.faultlog import record
from ferd.core.checkpoint import atomic_write_json, load_state_dict, read_metadata, save_state_dict, sha256_file
from ferd.cli import main
from ferd.compare.config import Arm
from ferd.compare.runner import run_arm_dir
from ferd.plan.resolve import load_config
from ferd.core.provenance import SIGNATURE_KEY, seal

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "params" / "ci.yaml"
KEY = "issue-34 records key"
RUN = ["--params", str(CI), "--threads", "1", "--no-progress"]
# Every file a ferd run of params/ci.yaml leaves (test_every_file_of_the_run_is_a_case keeps this list whole)
FILES = sorted([
    "checkpoint/generator.pt", "checkpoint/history.json", "checkpoint/reweighting.pt", "checkpoint/round.json",
    "checkpoint/student.safetensors", "checkpoint/trainer.pt", "class_weights.json", "elapsed.json",
    "eval/attack_targets.csv", "eval/confusion_student_clean.csv", "eval/confusion_student_clean.png",
    "eval/confusion_student_pgd20.csv", "eval/confusion_student_pgd20.png", "eval/confusion_teacher_clean.csv",
    "eval/confusion_teacher_clean.png", "eval/confusion_teacher_pgd20.csv", "eval/confusion_teacher_pgd20.png",
    "eval/losses.png", "eval/metrics.json", "eval/per_class.csv", "eval/per_class.json", "eval/per_class.png",
    "eval/per_class_clean.png", "eval/per_class_pgd20.png", "eval/predictions.npz", "eval/report.md",
    "eval/retention.png", "eval/settings.json", "eval/synthesis.png", "history.json", "manifest.json",
    "metrics.json", "params.json", "pool/round=0/part-0.parquet", "pool/round=1/part-0.parquet", "result.json",
    "samples/round-00.png", "samples/round-01.png", "student.safetensors", "teacher/model_card.json",
    "teacher/teacher.safetensors",
    "live/metrics.json", "live/plots/metrics/student/loss.tsv"])
# the rest of the DVCLive curves (ferd.core.tracking): listed in the manifest like any file; two of them are cases above
LIVE_CURVES = sorted(f"live/plots/metrics/{name}.tsv" for name in (
    "generator/adv", "generator/bn", "generator/gen", "generator/oh", "generator/uni", "p/max", "p/min",
    "student/kl_adv", "student/kl_clean", "synthesis/nonrobust_fraction", "synthesis/teacher_accuracy",
    "synthesis/teacher_confidence", "synthesis/within_label_share"))

pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def signed(tmp_path_factory, one_thread_module) -> Path:
    """A finished ``ferd run`` of the CI preset made with ``FERD_SIGNING_KEY`` set."""
    out = tmp_path_factory.mktemp("signed") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FERD_SIGNING_KEY", KEY)
        assert main(["run", *RUN, "--out", str(out)]) == 0
    return out


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("FERD_SIGNING_KEY", KEY)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if ": error: " in line]


def _refused_by_run(out: Path, capsys) -> str:
    """``ferd run`` with the same --out: exit 2 with one error line (returned), no traceback."""
    capsys.readouterr()
    rc = main(["run", *RUN, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and len(_errors(err)) == 1 and "Traceback" not in err, err[-2000:]
    return _errors(err)[0]


def _refused_by_compare(out: Path) -> str:
    """``ferd compare``'s check that an arm is finished (:func:`ferd.compare.runner.run_arm_dir`) refuses it."""
    with pytest.raises(ValueError) as exc:
        run_arm_dir(load_config(CI), Arm("ferd", "cnn-8", 0), out)
    assert "\n" not in str(exc.value)
    return str(exc.value)


def _refused_by_lineage(out: Path, capsys) -> str:
    capsys.readouterr()
    rc = main(["lineage", "verify", str(out)])
    captured = capsys.readouterr()
    assert rc == 1 and "signatures checked" in captured.out, captured
    return captured.err


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _relist(out: Path, *names: str) -> None:
    """Update the run manifest's entries of ``names`` and reseal it without the key (the old signature kept):
    what anyone who can write the directory can do."""
    path = out / "manifest.json"
    manifest = json.loads(path.read_text())
    for name in names:
        data = (out / name).read_bytes()
        manifest["outputs"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    key = os.environ.pop("FERD_SIGNING_KEY", None)
    try:
        forged = {**seal(manifest), SIGNATURE_KEY: manifest.get(SIGNATURE_KEY)}
    finally:
        if key is not None:
            os.environ["FERD_SIGNING_KEY"] = key
    _write_json(path, forged)


# ---- every file of a finished run ----------------------------------------------------------------------------
def test_every_file_of_the_run_is_a_case(signed):
    """The parametrized cases below cover every file the run wrote: nothing is skipped silently."""
    assert sorted(p.relative_to(signed).as_posix() for p in signed.rglob("*") if p.is_file()) == sorted(
        FILES + LIVE_CURVES)


@pytest.mark.parametrize("rel", FILES)
def test_one_flipped_byte_in_any_file_of_a_signed_run_is_refused(signed, tmp_path, capsys, key, rel):
    out = _copy(signed, tmp_path / "run")
    data = bytearray((out / rel).read_bytes())
    data[len(data) // 2] ^= 0x01
    (out / rel).write_bytes(bytes(data))
    lineage = _refused_by_lineage(out, capsys)
    compare = _refused_by_compare(out)
    rerun = _refused_by_run(out, capsys)
    ok = all(rel in text for text in (lineage, compare, rerun))
    record(f"one byte flipped in a signed ferd run: {rel}", "FERD_SIGNING_KEY set; lineage verify, compare, re-run",
           ok, 0)
    assert ok, (lineage, compare, rerun)


# ---- the findings ------------------------------------------------------------------------------------------------
def _zero_student(ckpt: Path) -> None:
    path = ckpt / "student.safetensors"
    save_state_dict({k: torch.zeros_like(v) for k, v in load_state_dict(path).items()}, path,
                    metadata=read_metadata(path))


@pytest.mark.parametrize("files", ["empty", "partial"])
@pytest.mark.parametrize("signing", [False, True])
def test_a_checkpoint_listing_no_or_some_files_is_refused(signed, tmp_path, capsys, monkeypatch, files, signing):
    """A killed run's checkpoint (no manifest yet) whose ``round.json`` lists no file, or not the student,
    with a zeroed student: refused in one line, signing or not (it was resumed, exit 0, from the zero student)."""
    if signing:
        monkeypatch.setenv("FERD_SIGNING_KEY", KEY)
    else:
        monkeypatch.delenv("FERD_SIGNING_KEY", raising=False)
    out = _copy(signed, tmp_path / "run")
    (out / "manifest.json").unlink(missing_ok=True)  # killed before it finished
    _zero_student(out / "checkpoint")
    path = out / "checkpoint" / "round.json"
    rec = {k: v for k, v in json.loads(path.read_text()).items() if k != SIGNATURE_KEY}
    rec["files"] = {} if files == "empty" else {k: v for k, v in rec["files"].items() if k != "student.safetensors"}
    key = os.environ.pop("FERD_SIGNING_KEY", None)
    try:
        _write_json(path, seal(rec))  # resealed without the key: all a forger can do
    finally:
        if key is not None:
            os.environ["FERD_SIGNING_KEY"] = key
    line = _refused_by_run(out, capsys)
    ok = "round.json" in line and ("files must name exactly" in line if not signing else "unsigned" in line)
    record("checkpoint whose round.json lists no / not every file", f"files {files}, student zeroed, "
           f"signing {'on' if signing else 'off'}", ok, 0)
    assert ok, line


@pytest.mark.parametrize("manifest", ["kept", "resealed"])
def test_forged_metrics_with_their_sha256_updated_are_no_finished_arm(signed, tmp_path, capsys, key, manifest):
    """metrics.json edited and result.json's metrics_sha256 updated (and the run manifest relisted and resealed
    without the key): ferd compare's arm check and ferd lineage verify refuse it; it counted as finished."""
    out = _copy(signed, tmp_path / "run")
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["student.pgd20.worst"] = 0.99
    atomic_write_json(out / "metrics.json", metrics)
    result = json.loads((out / "result.json").read_text())
    result["metrics_sha256"] = sha256_file(out / "metrics.json")
    atomic_write_json(out / "result.json", result)
    if manifest == "resealed" and (out / "manifest.json").is_file():
        _relist(out, "metrics.json", "result.json")
    compare = _refused_by_compare(out)
    lineage = _refused_by_lineage(out, capsys)
    named = "metrics.json" if manifest == "kept" else "signature does not match"
    ok = named in compare and named in lineage
    record("forged metrics.json, result.json sha256 updated", f"FERD_SIGNING_KEY set; run manifest {manifest}", ok, 0)
    assert ok, (compare, lineage)


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_signing_key_is_refused_before_any_work(tmp_path, value):
    out = tmp_path / "never"
    env = {**os.environ, "FERD_SIGNING_KEY": value, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(Path(sys.executable).parent / "ferd"), "run", *RUN, "--out", str(out)],
                          env=env, capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    ok = (proc.returncode == 2 and len(lines) == 1 and "FERD_SIGNING_KEY" in lines[0] and "empty" in lines[0]
          and not out.exists())
    record("FERD_SIGNING_KEY set but empty", repr(value), ok, 0)
    assert ok, proc.stderr[-2000:]


# ---- red team: beyond the findings ----------------------------------------------------------------------------
def test_a_forged_teacher_in_a_killed_signed_run_is_refused_on_resume(signed, tmp_path, capsys, key):
    """Other teacher weights with the model card's sha256 updated, in a run killed before it finished: the
    checkpoint pins the teacher, so the resume refuses it (the card alone decided before)."""
    out = _copy(signed, tmp_path / "run")
    (out / "manifest.json").unlink()
    teacher = out / "teacher" / "teacher.safetensors"
    save_state_dict({k: v + 0.01 for k, v in load_state_dict(teacher).items()}, teacher,
                    metadata=read_metadata(teacher))
    card = json.loads((out / "teacher" / "model_card.json").read_text())
    card["sha256"] = sha256_file(teacher)
    (out / "teacher" / "model_card.json").write_text(json.dumps(card, indent=2))
    line = _refused_by_run(out, capsys)
    ok = "teacher.safetensors" in line and "pinned" in line
    record("forged teacher in a killed ferd run", "weights and card's sha256 swapped; FERD_SIGNING_KEY set", ok, 0)
    assert ok, line


def test_a_run_signed_under_another_key_or_none_is_refused(signed, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FERD_SIGNING_KEY", "another key")
    other = "signature does not match" in _refused_by_compare(signed)
    other = other and "signature does not match" in _refused_by_lineage(signed, capsys)
    monkeypatch.delenv("FERD_SIGNING_KEY")
    unsigned = _copy(signed, tmp_path / "unsigned")
    _relist(unsigned)  # the signature dropped: resealed without the key
    manifest = json.loads((unsigned / "manifest.json").read_text())
    _write_json(unsigned / "manifest.json", {k: v for k, v in manifest.items() if k != SIGNATURE_KEY})
    monkeypatch.setenv("FERD_SIGNING_KEY", KEY)
    none = "unsigned" in _refused_by_compare(unsigned)
    record("ferd run consumed under another key / unsigned", "FERD_SIGNING_KEY differs; signature removed",
           other and none, 0)
    assert other and none


@pytest.mark.parametrize("added", ["eval/notes.csv", "checkpoint.old/round.json"])
def test_a_file_added_to_a_finished_run_is_refused(signed, tmp_path, capsys, key, added):
    out = _copy(signed, tmp_path / "run")
    (out / added).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "checkpoint" / "round.json" if added.endswith(".json") else out / "eval" / "per_class.csv",
                out / added)
    texts = (_refused_by_lineage(out, capsys), _refused_by_compare(out), _refused_by_run(out, capsys))
    ok = all(added in t and "not listed" in t for t in texts)
    record("file added to a finished ferd run", added, ok, 0)
    assert ok, texts


def test_a_run_manifest_listing_a_path_outside_the_run_is_refused(signed, tmp_path, capsys, key):
    out = _copy(signed, tmp_path / "run")
    (tmp_path / "outside.txt").write_text("not the run's")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["outputs"]["../outside.txt"] = {"sha256": sha256_file(tmp_path / "outside.txt"), "bytes": 13}
    _write_json(out / "manifest.json", manifest)
    lineage, compare = _refused_by_lineage(out, capsys), _refused_by_compare(out)
    ok = all("not a path inside the artifact" in t for t in (lineage, compare)) and "Traceback" not in lineage
    record("run manifest listing ../outside.txt", "lineage verify and compare", ok, 0)
    assert ok, (lineage, compare)
