"""ferd.core.tracking: the per-epoch numbers a run shows (log lines and DVCLive), checked by hand on small histories."""

from __future__ import annotations

import json

import pytest

from ferd.core import tracking
from ferd.core.tracking import DISTILLATION, GENERATION, LiveTracker, live_tracker

pytest.importorskip("dvclive")


def _epoch(e: int, distilled: bool = True) -> dict:
    h = {"epoch": e, "round": e // 2, "best_terms": {"gen": 10.0 + e, "adv": -0.5, "bn": float("nan")},
         "p": [0.2, 0.5, 0.3], "within_label_share": 0.75, "teacher_confidence": 0.5, "teacher_accuracy": 1.0,
         "nonrobust_fraction": None}
    if distilled:
        h["distill"] = {"loss": 1.0 / (e + 1), "kl_clean": 0.25 / (e + 1), "kl_adv": 0.75 / (e + 1)}
    return h


def test_epoch_metrics_by_hand_skip_what_is_absent_or_not_finite():
    assert tracking.generation_metrics(_epoch(1)) == {
        "generator/adv": -0.5, "generator/gen": 11.0, "p/max": 0.5, "p/min": 0.2,  # bn is NaN: left out
        "synthesis/within_label_share": 0.75, "synthesis/teacher_confidence": 0.5, "synthesis/teacher_accuracy": 1.0}
    assert tracking.distillation_metrics(_epoch(1)) == {"student/kl_adv": 0.375, "student/kl_clean": 0.125,
                                                        "student/loss": 0.5}
    assert tracking.distillation_metrics({"epoch": 0, "distill": {"warmup": 1.0}}) == {}
    assert tracking.distillation_metrics(_epoch(0, distilled=False)) == {}


def test_log_lines_name_the_epoch_of_the_run_and_each_term():
    assert tracking.generation_line(_epoch(2), 12) == (
        "epoch 3/12 (round 1) synthesis: L_gen 12 (adv -0.5); p max 0.500 min 0.200; within_label_share 0.75, "
        "teacher_confidence 0.5, teacher_accuracy 1")
    assert tracking.distillation_line(_epoch(1), 12) == ("epoch 2/12 (round 0) distillation: loss 0.5 "
                                                         "(kl_adv 0.375, kl_clean 0.125)")
    assert "warm-up" in tracking.distillation_line({"epoch": 0, "round": 0, "distill": {"warmup": 1.0}}, 3)


def _rows(live, name: str) -> list[tuple[int, float]]:
    lines = (live / "plots" / "metrics" / f"{name}.tsv").read_text().splitlines()
    assert lines[0] == f"step\t{name.split('/')[-1]}"
    return [(int(a), float(b)) for a, b in (line.split("\t") for line in lines[1:])]


def test_live_replays_the_kept_history_then_each_epoch_once(tmp_path):
    live = tmp_path / "live"
    history = [_epoch(0), _epoch(1), _epoch(2, distilled=False)]  # a distillation stage of round 1 starting
    tracker = LiveTracker(live, history)
    assert _rows(live, "student/loss") == [(0, 1.0), (1, 0.5)]
    assert [s for s, _ in _rows(live, "generator/gen")] == [0, 1, 2]
    history[2]["distill"] = {"loss": 0.25}
    tracker(DISTILLATION, history[2])
    assert _rows(live, "student/loss") == [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert [s for s, _ in _rows(live, "generator/gen")] == [0, 1, 2]  # the generation side is not logged again
    summary = json.loads((live / "metrics.json").read_text())
    assert summary["step"] == 2 and summary["student"]["loss"] == 0.25
    # a process opening it again (a rerun stage, a resumed run) rebuilds it from what the run kept: no step twice
    LiveTracker(live, history[:1])(GENERATION, _epoch(1, distilled=False))
    assert _rows(live, "student/loss") == [(0, 1.0)]
    assert [s for s, _ in _rows(live, "generator/gen")] == [0, 1]


def test_the_same_history_gives_the_same_bytes(tmp_path):
    """Replayed at once (a resumed run's past epochs) or logged epoch by epoch as a run goes: the same files."""
    history = [_epoch(e) for e in range(3)]
    LiveTracker(tmp_path / "a", history)
    live = LiveTracker(tmp_path / "b", [])
    for h in history:
        live(GENERATION, h)
        live(DISTILLATION, h)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_no_directory_no_tracker_and_a_requested_one_needs_dvclive(tmp_path, monkeypatch, caplog):
    assert live_tracker(None, []) is None
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)  # DVCLive not installed
    with pytest.raises(ValueError, match=r"^--live: needs DVCLive \(pip install 'ferd\[dvc\]'\)$"):
        live_tracker(tmp_path / "live", [])
    with caplog.at_level("INFO"):
        assert live_tracker(tmp_path / "live", [], required=False) is None
    assert "DVCLive is not installed" in caplog.text and not (tmp_path / "live").exists()


def test_live_writes_its_files_only_even_in_a_git_checkout_without_dvc_or_commits(tmp_path, monkeypatch):
    import shutil
    import subprocess

    if shutil.which("git") is None:
        pytest.skip("no git here")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)  # a Git repository with no commit, no DVC
    monkeypatch.chdir(tmp_path)
    LiveTracker("live", [_epoch(0)])(GENERATION, _epoch(1, distilled=False))
    assert _rows(tmp_path / "live", "generator/gen") == [(0, 10.0), (1, 11.0)]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".git", "live"]  # DVCLive created no .dvc/ here


def test_live_in_a_project_folder_removes_only_its_own_files(tmp_path):
    """``--live .``: DVCLive's own cleanup would delete the project's params.yaml and dvc.yaml."""
    own = {"params.yaml": "seed: 0\n", "dvc.yaml": "stages: {}\n", "report.md": "notes\n",
           "plots/images/a.png": "png"}
    for rel, text in own.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    LiveTracker(tmp_path, [_epoch(0)])
    LiveTracker(tmp_path, [_epoch(0), _epoch(1)])  # opened again: its own files rebuilt
    assert {rel: (tmp_path / rel).read_text() for rel in own} == own
    assert _rows(tmp_path, "student/loss") == [(0, 1.0), (1, 0.5)]
