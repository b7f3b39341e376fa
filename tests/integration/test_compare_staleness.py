"""Issue 34 (4): one decision of an arm's staleness for ``ferd compare`` and its report.

``--report-only`` and ``--report-only --partial`` report only arms whose result carries the preset's current
parameters and shared teacher (:func:`ferd.compare.config.arm_status`, which ``ferd compare`` also skips and
sets aside arms by); a pinned teacher's fingerprint is its sha256, so a moved comparison reuses every arm.
One finished comparison (a tiny preset extending compare-smoke: ferd and cmi, 2 seeds) is copied per case.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import yaml

from ferd.core.checkpoint import sha256_file
from ferd.cli import main
from ferd.compare.config import arms, load_compare, run_config
from ferd.plan.fingerprint import params_fingerprint
from ferd.plan.resolve import load_config
from support.faultlog import record

pytestmark = pytest.mark.usefixtures("one_thread_module")
ARMS = ["runs/ferd/cnn-8/seed=0", "runs/ferd/cnn-8/seed=1", "runs/cmi/cnn-8/seed=0", "runs/cmi/cnn-8/seed=1"]


def _presets(folder: Path, parent_set: list[str] | None = None, child: dict | None = None) -> Path:
    """parent.yaml (extends compare-smoke: ferd and cmi, its 2 seeds) and child.yaml (extends parent.yaml)."""
    (folder / "parent.yaml").write_text(yaml.safe_dump({"extends": "compare-smoke", "methods": ["ferd", "cmi"],
                                                        "set": parent_set or []}))
    path = folder / "child.yaml"
    path.write_text(yaml.safe_dump({"extends": str(folder / "parent.yaml"), **(child or {})}))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """(the presets' folder, a finished comparison of child.yaml)."""
    folder = tmp_path_factory.mktemp("stale")
    out = folder / "finished"
    assert main(["compare", "--preset", str(_presets(folder)), "--out", str(out), "--threads", "1",
                 "--no-progress"]) == 0
    return folder, out


def _copy(finished: tuple[Path, Path], tmp_path: Path, name: str = "cmp") -> Path:
    out = tmp_path / name
    shutil.copytree(finished[1], out, symlinks=True)
    (out / "comparison.md").unlink()
    return out


def _report(preset: Path, out: Path, *extra: str) -> int:
    return main(["compare", "--preset", str(preset), "--out", str(out), "--report-only", *extra])


def _status(preset: Path, out: Path, relpath: str) -> str:
    """:func:`~ferd.compare.config.arm_status` of one arm against the shared teacher under ``out``."""
    from ferd.compare.config import arm_status, current_teacher  # new in issue 34: a test of main fails, not errs

    cc = load_compare(preset)
    arm = next(a for a in arms(cc) if a.relpath == relpath)
    return arm_status(out / relpath, run_config(cc, arm, current_teacher(cc, out)))


def _left_out(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().endswith("left out")]


# ---- the finding: a changed shared override, directly and through `extends` --------------------------------
def test_a_changed_shared_override_leaves_the_old_arms_out_of_the_report(finished, tmp_path, caplog, capsys):
    """``baseline.cmi.lr`` in the child's ``set`` is read by cmi only: --report-only refuses (exit 2) and
    --partial reports ferd's arms alone (exit 0), one warning line and a comparison.md line naming cmi's."""
    out = _copy(finished, tmp_path)
    preset = _presets(tmp_path, child={"set": ["baseline.cmi.lr=0.01"]})
    assert _report(preset, out) == 2
    err = capsys.readouterr().err
    refused = (err.count("\n") == 1 and "2 of 4 runs" in err and "runs/cmi/cnn-8/seed=0 (made with other parameters)"
               in err and not (out / "comparison.md").exists())
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _report(preset, out, "--partial") == 0
    lines = _left_out(caplog)
    md = (out / "comparison.md").read_text()
    flat = json.loads((out / "comparison.json").read_text())
    named = lines == [f"arm cmi student cnn-8 seed {s} (runs/cmi/cnn-8/seed={s}): made with other parameters, "
                      "left out" for s in (0, 1)]
    left_out = ("**Left out**: 2 of 4 runs were made with other parameters than this preset's (a changed preset, "
                "or files from elsewhere): `runs/cmi/cnn-8/seed=0`, `runs/cmi/cnn-8/seed=1`.") in md
    no_cmi = "| cmi | cnn-8 |" not in md.split("## How")[0] and sorted(flat["runs"]) == [
        "ferd.cnn-8.seed=0", "ferd.cnn-8.seed=1"] and "| ferd | cnn-8 | 2 |" in md
    ok = refused and named and left_out and no_cmi
    record("`ferd compare --report-only` after a shared override changed", "child set: baseline.cmi.lr=0.01",
           ok, 0 if ok else 2)
    assert refused, err
    assert named, lines
    assert left_out and no_cmi, md


def test_a_changed_parent_override_leaves_every_old_arm_out_and_says_none_is_left(finished, tmp_path, caplog, capsys):
    """``distill.lr`` changed in the parent preset: every arm is stale, so even --partial refuses (exit 2), one
    line; the full ``ferd compare`` decides the same (every arm ``stale``: set aside and run again)."""
    out = _copy(finished, tmp_path)
    preset = _presets(tmp_path, parent_set=["distill.lr=0.05"])
    assert load_compare(preset).set == ["distill.lr=0.05"]
    assert _report(preset, out) == 2
    capsys.readouterr()
    assert _report(preset, out, "--partial") == 2
    err = capsys.readouterr().err
    statuses = {a: _status(preset, out, a) for a in ARMS}
    ok = (err.strip().count("\n") == 0 and "no run under" in err and "4 made with other parameters" in err
          and not (out / "comparison.md").exists() and set(statuses.values()) == {"stale"})
    record("`ferd compare --report-only --partial` after the parent preset changed", "parent set: distill.lr=0.05",
           ok, 0 if ok else 4)
    assert ok, (err, statuses)


# ---- the finding: a moved comparison directory reuses every finished arm ---------------------------------------
def test_a_moved_comparison_reruns_nothing(finished, tmp_path):
    """Every arm's teacher is pinned by sha256 (the shared teacher's): its path under the old directory is no
    parameter, so a full ``ferd compare`` of the moved directory sets nothing aside and rewrites no arm."""
    folder, _ = finished
    (tmp_path / "elsewhere").mkdir()
    moved = _copy(finished, tmp_path, "before").rename(tmp_path / "elsewhere" / "after")
    before = {a: {f: (moved / a / f).stat().st_mtime_ns for f in ("metrics.json", "result.json", "student.safetensors")}
              for a in ARMS}
    assert main(["compare", "--preset", str(folder / "child.yaml"), "--out", str(moved), "--threads", "1",
                 "--no-progress"]) == 0
    after = {a: {f: (moved / a / f).stat().st_mtime_ns for f in before[a]} for a in ARMS}
    stale = sorted(str(p.relative_to(moved)) for p in moved.rglob(".stale"))
    ok = before == after and not stale and (moved / "comparison.md").is_file()
    record("`ferd compare` of a moved comparison directory", "out/ renamed to elsewhere/after/", ok,
           0 if ok else len(ARMS))
    assert not stale and before == after


def test_a_pinned_teachers_fingerprint_is_its_sha256_not_its_path():
    """A pinned teacher (a file or URL with teacher.sha256) is identified by its bytes; ``train:`` checks no pin
    and an unpinned file is known by its path only, so both keep the source in the fingerprint."""
    sha = "ab" * 32

    def fps(*changes: str) -> dict[str, str]:
        cfg = load_config("params/ci.yaml", list(changes))
        return {s: params_fingerprint(cfg, s) for s in ("teacher", "distillation", "evaluation")}

    assert fps("teacher.source=/a/t.safetensors", f"teacher.sha256={sha}") == \
        fps("teacher.source=/b/moved.safetensors", f"teacher.sha256={sha}")
    assert fps("teacher.source=https://x/t.pt", f"teacher.sha256={sha}") == fps("teacher.source=/a/t.pt",
                                                                                f"teacher.sha256={sha}")
    assert fps("teacher.source=/a/t.safetensors", f"teacher.sha256={sha}") != fps(
        "teacher.source=/a/t.safetensors", f"teacher.sha256={'cd' * 32}")
    assert fps("teacher.source=/a/t.safetensors") != fps("teacher.source=/b/t.safetensors")  # unpinned: the path
    assert fps() != fps(f"teacher.sha256={sha}") and fps("teacher.source=train:digits") == fps()
    from ferd.plan.fingerprint import legacy_fingerprint

    cfg = load_config("params/ci.yaml", ["teacher.source=/a/t.safetensors", f"teacher.sha256={sha}"])
    assert legacy_fingerprint(cfg, "evaluation") != params_fingerprint(cfg, "evaluation")  # read back only


def test_a_result_recorded_with_the_teachers_old_path_stays_finished(finished, tmp_path):
    """Results recorded before this change carry the teacher's path in their fingerprint: still finished (and
    reported) when their own params.json reproduces it and, without the path, gives the current one; a forged
    params.json that reproduces the record but other parameters does not pass."""
    from ferd.compare.config import arm_status, current_teacher
    from ferd.plan.fingerprint import legacy_fingerprint

    out = _copy(finished, tmp_path)
    cc = load_compare(finished[0] / "child.yaml")
    arm = arms(cc)[0]
    run = out / arm.relpath
    (run / "manifest.json").unlink()  # such results carry no manifest either
    params = json.loads((run / "params.json").read_text())
    params["teacher"]["source"] = "/somewhere/old/teacher/teacher.safetensors"
    (run / "params.json").write_text(json.dumps(params))
    result = json.loads((run / "result.json").read_text())
    (run / "result.json").write_text(json.dumps({**result, "params_fingerprint": legacy_fingerprint(params,
                                                                                                   "evaluation")}))
    cfg = run_config(cc, arm, current_teacher(cc, out))
    assert arm_status(run, cfg) == "finished"
    params["distill"]["lr"] = 0.05  # another run's parameters, its record forged to match them
    (run / "params.json").write_text(json.dumps(params))
    (run / "result.json").write_text(json.dumps({**result, "params_fingerprint": legacy_fingerprint(params,
                                                                                                   "evaluation")}))
    assert arm_status(run, cfg) == "stale"


# ---- own red-team cases --------------------------------------------------------------------------------------
def test_another_arms_result_copied_in_is_refused_not_reported_as_this_arm(finished, tmp_path, capsys):
    """cmi seed 0's metrics.json and result.json copied over ferd seed 0's: the arm's manifest no longer vouches
    for them, so the report (``--partial`` too) and ``ferd compare`` refuse it in one line naming the file, rather
    than report or silently rerun it."""
    out = _copy(finished, tmp_path)
    for f in ("metrics.json", "result.json"):
        shutil.copy(out / ARMS[2] / f, out / ARMS[0] / f)
    preset = finished[0] / "child.yaml"
    before = (out / "comparison.json").read_bytes()
    refused = _report(preset, out, "--partial") == 2
    err = capsys.readouterr().err
    ok = refused and err.count("\n") == 1 and f"{ARMS[0]}/metrics.json: sha256 mismatch" in err \
        and (out / "comparison.json").read_bytes() == before  # nothing reported
    record("another arm's result copied into an arm", "cmi seed 0's metrics/result.json → ferd seed 0", ok, 0)
    assert ok, err


def test_an_arm_renamed_to_another_seed_is_not_reported_as_that_seed(finished, tmp_path, caplog):
    """ferd seed=1 renamed to seed=0 (seed 0 removed): seed 0 is another run's (set aside by ``ferd compare``),
    seed 1 has not finished; the report keeps neither."""
    out = _copy(finished, tmp_path)
    shutil.rmtree(out / ARMS[0])
    (out / ARMS[1]).rename(out / ARMS[0])
    preset = finished[0] / "child.yaml"
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert _report(preset, out, "--partial") == 0
    md = (out / "comparison.md").read_text()
    lines = _left_out(caplog)
    ok = (lines == [f"arm ferd student cnn-8 seed 0 ({ARMS[0]}): made with other parameters, left out",
                    f"arm ferd student cnn-8 seed 1 ({ARMS[1]}): has not finished, left out"]
          and "| ferd | cnn-8 |" not in md.split("## Each")[0] and f"`{ARMS[1]}`" in md and f"`{ARMS[0]}`" in md)
    record("an arm's folder renamed to another seed", "ferd seed=1 → seed=0", ok, 0)
    assert ok, (lines, md)


def test_edited_metrics_or_a_foreign_teacher_are_refused_or_left_out(finished, tmp_path, capsys):
    """metrics.json edited after the run: refused by the run's manifest (exit 2); without the manifest, its
    result.json vouches for other bytes: left out; a teacher of
    another teacher_seed, or a model card with no sha256, refuses the report with one line (exit 2); a
    re-sealed metrics.json with a non-number: one line naming the file and key, no traceback."""
    preset = finished[0] / "child.yaml"
    out = _copy(finished, tmp_path)
    m = json.loads((out / ARMS[1] / "metrics.json").read_text())
    (out / ARMS[1] / "metrics.json").write_text(json.dumps({**m, "student.pgd20.worst": 0.99}))
    edited_refused = _report(preset, out, "--partial") == 2 \
        and f"{ARMS[1]}/metrics.json: sha256 mismatch" in capsys.readouterr().err
    (out / ARMS[1] / "manifest.json").unlink()  # a run without its manifest: its result.json alone vouches
    edited_left_out = edited_refused and _report(preset, out, "--partial") == 0 \
        and "ferd.cnn-8.seed=1" not in json.loads((out / "comparison.json").read_text())["runs"]
    capsys.readouterr()
    other_seed = _presets(tmp_path, child={"teacher_seed": 1})
    refused = _report(other_seed, out, "--partial") == 2
    err = capsys.readouterr().err
    refused = refused and err.count("\n") == 1 and "the shared teacher was made with other parameters" in err
    card = json.loads((out / "teacher" / "model_card.json").read_text())
    (out / "teacher" / "model_card.json").write_text(json.dumps({**card, "sha256": None}))
    bad_card = _report(preset, out, "--partial") == 2 and "model_card.json: sha256: expected" in capsys.readouterr().err
    (out / "teacher" / "model_card.json").write_text(json.dumps(card))
    (out / ARMS[1] / "metrics.json").write_text(json.dumps({**m, "run.seconds": "soon"}))
    result = json.loads((out / ARMS[1] / "result.json").read_text())
    (out / ARMS[1] / "result.json").write_text(json.dumps({**result, "metrics_sha256": sha256_file(
        out / ARMS[1] / "metrics.json")}))
    bad_number = _report(preset, out) == 2
    err = capsys.readouterr().err
    bad_number = bad_number and err.count("\n") == 1 and "metrics.json: run.seconds: expected a number" in err
    ok = edited_left_out and refused and bad_card and bad_number
    record("a comparison's metrics or teacher edited after the runs",
           "metrics.json edited; teacher_seed 0 → 1; card sha256 null; run.seconds 'soon'", ok, 0)
    assert edited_left_out and refused and bad_card, err
    assert bad_number, err
