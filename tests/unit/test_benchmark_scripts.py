"""The scripts that keep and plot long comparisons (``benchmarks/keep_comparison.py``,
``benchmarks/budget_curve.py``) on a hand-made comparison folder."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _comparison(out: Path, epochs: int, runs: dict[tuple[str, int], float]) -> Path:
    """A comparison folder as ``ferd compare`` leaves it, with clean accuracy ``runs[(method, seed)]``."""
    (out / "teacher").mkdir(parents=True)
    (out / "teacher" / "model_card.json").write_text("{}")
    (out / "teacher" / "teacher.safetensors").write_bytes(b"weights")
    (out / "comparison.md").write_text("# report\n")
    for (method, seed), clean in runs.items():
        run = out / "runs" / method / "cnn-32" / f"seed={seed}"
        (run / "checkpoint").mkdir(parents=True)
        (run / "checkpoint" / "history.json").write_text("[]")
        (run / "teacher").mkdir()
        (run / "teacher" / "model_card.json").write_text("{}")
        (run / "student.safetensors").write_bytes(b"weights")
        (run / "arm.json").write_text(json.dumps({"method": method, "seed": seed, "student": "cnn-32"}))
        (run / "params.json").write_text(json.dumps({"epochs": epochs, "distill": {"iterations": 120}}))
        (run / "history.json").write_text("[]")
        (run / "metrics.json").write_text(json.dumps({
            "student.clean.avg": clean, "student.pgd20.avg": clean / 2, "student.pgd20.worst": 0.01,
            "student.pgd20.nsd": 0.5, "run.seconds": 600.0}))
    return out


def test_keep_comparison_keeps_finished_runs_records_and_metrics_but_no_weights_checkpoints_or_teacher_copies(tmp_path):
    keep = _script("keep_comparison")
    out = _comparison(tmp_path / "out", 32, {("ferd", 0): 0.44, ("fast", 0): 0.47})
    (out / "runs" / "fast" / "cnn-32" / "seed=0" / "metrics.json").unlink()  # unfinished: nothing of it is kept
    assert keep.main([str(out), str(tmp_path / "kept")]) == 0
    kept = sorted(str(p.relative_to(tmp_path / "kept")) for p in (tmp_path / "kept").rglob("*") if p.is_file())
    run = "runs/ferd/cnn-32/seed=0"
    assert kept == sorted(["comparison.md", "teacher/model_card.json", f"{run}/arm.json", f"{run}/history.json",
                           f"{run}/metrics.json", f"{run}/params.json"])
    assert keep.main([str(tmp_path / "nothing"), str(tmp_path / "kept")]) == 2
    import shutil  # a run set aside as stale is not kept; a run kept again replaces its folder whole

    shutil.copytree(out / run, out / "runs/ferd/cnn-32/.stale/seed=0-0")
    (tmp_path / "kept" / run / "old.json").write_text("{}")
    assert keep.main([str(out), str(tmp_path / "kept")]) == 0
    again = sorted(str(p.relative_to(tmp_path / "kept")) for p in (tmp_path / "kept").rglob("*") if p.is_file())
    assert again == kept


def test_budget_curve_has_one_row_per_run_with_its_student_iterations_and_draws_the_figure(tmp_path, capsys):
    curve = _script("budget_curve")
    x4 = _comparison(tmp_path / "x4", 32, {("ferd", 0): 0.44, ("ferd", 1): 0.45, ("fast", 0): 0.47})
    x6 = _comparison(tmp_path / "x6", 48, {("ferd", 0): 0.46})
    assert curve.main([str(x4), str(x6), "--out", str(tmp_path / "curve")]) == 0
    with open(tmp_path / "curve" / "budget.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["comparison"], r["method"], r["seed"], r["student_iterations"], r["student.clean.avg"]) for r in rows] == [
        ("x4", "fast", "0", "3840", "0.47"), ("x4", "ferd", "0", "3840", "0.44"), ("x4", "ferd", "1", "3840", "0.45"),
        ("x6", "ferd", "0", "5760", "0.46")]
    assert (tmp_path / "curve" / "budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("make", ["missing", "unfinished"])
def test_budget_curve_refuses_a_folder_without_finished_runs_with_exit_2(tmp_path, capsys, make):
    curve = _script("budget_curve")
    folder = tmp_path / "c"
    if make == "unfinished":
        (folder / "runs" / "ferd" / "cnn-32" / "seed=0").mkdir(parents=True)
    assert curve.main([str(folder), "--out", str(tmp_path / "curve")]) == 2
    assert capsys.readouterr().err.startswith("comparisons: ")
    assert not (tmp_path / "curve").exists()
