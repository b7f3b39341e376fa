"""Lineage: manifests record where every artifact came from; ``ferd lineage verify`` catches any changed byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ferd.cli import main
from ferd.plan.resolve import load_config
from ferd.stages.lineage import chain, verify_run
from ferd.core.provenance import manifest_digest
from ferd.stages import run_stages

ROOT = Path(__file__).resolve().parents[2]
CI = ROOT / "params" / "ci.yaml"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path_factory.mktemp("lineage") / "run"
        run_stages(load_config(CI), out)
    finally:
        torch.set_num_threads(before)
    return out


# one file of every kind a run writes (path relative to the run directory)
ARTIFACT_KINDS = {
    "teacher checkpoint": "teacher/teacher.safetensors",
    "teacher model card": "teacher/model_card.json",
    "synthetic shard (Parquet)": "round-1/synthesis/shard/round=1/part-0.parquet",
    "generator state": "round-1/synthesis/generator.pt",
    "reweighting state": "round-1/synthesis/reweighting.pt",
    "class weights": "round-1/synthesis/class_weights.json",
    "pool partition (Parquet)": "round-1/pool/round=1/part-0.parquet",
    "pool index": "round-1/pool/pool.json",
    "student": "round-1/distillation/student.safetensors",
    "trainer state": "round-1/distillation/trainer.pt",
    "rng note": "round-1/distillation/rng.json",
    "history": "round-0/distillation/history.json",
    "metrics": "evaluation/metrics.json",
    "per-class table": "evaluation/eval/per_class.csv",
    "figure": "evaluation/eval/per_class.png",
    "report": "evaluation/eval/report.md",
    "dvc plot data": "evaluation/plots/class_weights.csv",
    "manifest": "round-0/pool/manifest.json",
}


def test_verify_passes_on_a_finished_run(run_dir, capsys):
    report = verify_run(run_dir)
    assert report.ok, report.problems
    assert report.checked_artifacts == 8  # teacher, 2 × (synthesis, pool, distillation), evaluation
    assert main(["lineage", "verify", str(run_dir)]) == 0
    assert "OK" in capsys.readouterr().out


@pytest.mark.parametrize("kind", sorted(ARTIFACT_KINDS))
def test_one_flipped_byte_fails_verify_and_names_the_file(run_dir, kind, capsys):
    path = run_dir / ARTIFACT_KINDS[kind]
    assert path.is_file(), f"{kind}: {path} missing from the run"
    data = bytearray(path.read_bytes())
    pos = len(data) // 2
    data[pos] ^= 0x01
    original = path.read_bytes()
    path.write_bytes(bytes(data))
    try:
        report = verify_run(run_dir)
        assert not report.ok
        assert any(str(path) in line for line in report.problems), report.problems
        assert main(["lineage", "verify", str(run_dir)]) == 1
        assert str(path) in capsys.readouterr().err
    finally:
        path.write_bytes(original)
    assert verify_run(run_dir).ok


def test_added_and_removed_files_are_reported(run_dir):
    extra = run_dir / "round-0" / "synthesis" / "stray.txt"
    extra.write_text("not made by the stage")
    try:
        assert any("stray.txt" in p for p in verify_run(run_dir).problems)
    finally:
        extra.unlink()
    rng = run_dir / "round-0" / "distillation" / "rng.json"
    saved = rng.read_bytes()
    rng.unlink()
    try:
        assert any("rng.json: missing" in p for p in verify_run(run_dir).problems)
    finally:
        rng.write_bytes(saved)


def test_manifest_records_lineage(run_dir):
    m = json.loads((run_dir / "round-1" / "distillation" / "manifest.json").read_text())
    assert m["manifest_sha256"] == manifest_digest(m)
    assert m["params"]["distill"]["iterations"] == 3 and "evaluation" not in m["params"]
    assert set(m["inputs"]) == {"teacher", "synthesis", "pool", "previous"}
    teacher_manifest = run_dir / "teacher" / "manifest.json"
    from ferd.core.checkpoint import sha256_file

    assert m["inputs"]["teacher"]["manifest_sha256"] == sha256_file(teacher_manifest)
    assert m["inputs"]["teacher"]["relpath"] == "../../teacher"
    assert m["outputs"]["student.safetensors"]["sha256"] == sha256_file(
        run_dir / "round-1" / "distillation" / "student.safetensors")
    assert m["code"]["ferd_version"] and m["environment"]["torch"] == torch.__version__
    assert m["environment"]["device"] == "cpu" and "cuda" in m["environment"]
    assert m["started_at"] <= m["finished_at"]


def test_show_walks_from_metrics_back_to_the_teacher(run_dir, capsys):
    nodes = chain(run_dir / "evaluation" / "metrics.json")
    stages = [n["manifest"]["stage"] for n in nodes if "manifest" in n]
    assert stages[0] == "evaluation" and "teacher" in stages
    assert sorted(stages) == sorted(["evaluation", "teacher", *["synthesis", "pool", "distillation"] * 2])
    assert main(["lineage", "show", str(run_dir / "round-1" / "distillation" / "student.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "distillation round 1" in out and "source train:digits" in out


def test_show_and_verify_report_a_missing_input(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    shutil.rmtree(copy / "teacher")
    assert any("input 'teacher'" in p for p in verify_run(copy).problems)
    assert main(["lineage", "show", str(copy / "evaluation")]) == 1
