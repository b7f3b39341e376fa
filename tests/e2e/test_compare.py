"""``ferd compare``: the paired interval by hand, the report and its figures, compare-smoke end to end, parallel
arms and their interruption (preset validation: ``test_compare_presets.py``)."""

from __future__ import annotations

import csv
import json
import math
import os

import pytest
import yaml
from pathlib import Path

from ferd.cli import main
from ferd.compare.config import arms, load_compare
from ferd.compare.stats import paired_interval, verdict

from support import golden
from support.compare_preset import tiny_preset as _preset


def test_paired_interval_by_hand():
    # d = (2, 3, 4): mean 3, sd 1, t_{0.975, 2} = 4.302653 → half-width 4.302653/√3 = 2.484138
    mean, low, high = paired_interval([3.0, 5.0, 7.0], [1.0, 2.0, 3.0])
    assert (mean, low, high) == pytest.approx((3.0, 3 - 2.484138, 3 + 2.484138), abs=1e-6)
    assert verdict(low, high) == "better than the reference beyond noise"
    assert verdict(-2.0, -0.5) == "worse than the reference beyond noise"
    assert verdict(-1.0, 1.0) == "within noise"
    mean, low, high = paired_interval([0.4], [0.5])
    assert mean == pytest.approx(-0.1) and math.isnan(low) and verdict(low, high) == \
        "no interval (one seed, or the same difference in every seed)"
    mean, low, high = paired_interval([0.568, 0.468], [0.5, 0.4])  # +0.068 twice: a tie, not a zero-width interval
    assert mean == pytest.approx(0.068) and math.isnan(low) and math.isnan(high)
    mean, low, high = paired_interval([0.9, 0.1], [0.1, 0.5], span=1.0)  # d = +0.8, −0.4: t·sd/√n = 7.6
    assert (mean, low, high) == (pytest.approx(0.2), -1.0, 1.0)  # cut to what a difference of accuracies can be
    mean, low, high = paired_interval([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])  # both at 0 % in every seed
    assert (mean, low, high) == (0.0, 0.0, 0.0) and verdict(low, high) == "equal in every seed (no difference)"


def test_undefined_nsd_is_reported_not_averaged_into_nan():
    from ferd.compare.report import _fmt
    from ferd.core.checkpoint import json_safe

    assert _fmt(math.nan, math.nan, "nsd", 0, 3) == "n/a (all classes 0)"
    assert _fmt(2.5, 0.5, "nsd", 2, 3) == "2.500 ± 0.500 (2 of 3 seeds)"
    assert _fmt(2.5, 0.5, "nsd", 3, 3) == "2.500 ± 0.500"
    assert _fmt(0.25, 0.05, "avg", 0, 3) == "25.0 ± 5.0"
    assert _fmt(0.25, 0.0, "avg", 1, 1) == "25.0" and _fmt(0.5, 0.0, "nsd", 1, 1) == "0.500"  # one seed: no spread
    assert _fmt(0.5, 0.0, "nsd", 1, 2) == "0.500 (1 of 2 seeds)"
    assert json_safe({"a": math.nan, "b": {"c": 1.0, "d": math.nan}}) == {"a": None, "b": {"c": 1.0, "d": None}}


def test_every_line_of_a_per_class_plot_has_its_own_colour_and_style():
    """Up to 10 arms: tab10, solid; more (compare-smoke has 11 and the teacher): tab20 and a style per pass, so
    no two arms share a look."""
    from ferd.compare.plots import line_styles

    assert len(set(line_styles(11))) == 11 and len(set(line_styles(45))) == 45
    assert {style for _, style in line_styles(10)} == {"-"}


def test_a_per_class_plot_names_the_seeds_of_each_line_when_they_differ():
    """A partial comparison (or ``attack_seeds``) can average its lines over different seeds: the title names the
    seeds only when every line has the same, each line's label otherwise; a line with no seed is left out."""
    import numpy as np

    from ferd.compare.plots import plot_lines

    ferd = {"pgd20": {1: np.array([0.3, 0.5]), 0: np.array([0.1, 0.3])}}
    per_class = {("ferd", "s"): ferd, ("fast", "s"): {"pgd20": {0: np.array([0.2, 0.2])}},
                 ("cmi", "s"): {"pgd20": {}}}
    title, lines = plot_lines(per_class, "pgd20")
    assert title == "mean over each line's seeds"
    assert [label for label, _ in lines] == ["ferd (s; seeds [0, 1])", "fast (s; seeds [0])"]
    assert np.allclose(lines[0][1], [0.2, 0.4])
    title, lines = plot_lines({("ferd", "s"): ferd, ("fast", "s"): ferd}, "pgd20")
    assert title == "mean over seeds [0, 1]" and [label for label, _ in lines] == ["ferd (s)", "fast (s)"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The CI run of the real compare-smoke preset (every method and Table-3 ablation, 2 seeds)."""
    out = tmp_path_factory.mktemp("compare")
    assert main(["compare", "--preset", "compare-smoke", "--out", str(out), "--threads", "1", "--no-progress"]) == 0
    return out


def test_compare_smoke_writes_the_table_csv_and_plots(smoke):
    cc = load_compare("compare-smoke")
    rows = list(csv.DictReader((smoke / "comparison.csv").open()))
    assert [r["method"] for r in rows] == list(cc.methods)
    assert all(int(r["seeds"]) == 2 for r in rows)
    for attack in ("clean", "pgd20"):
        assert {f"{attack}_{s}_{m}" for s in ("avg", "worst", "nsd") for m in ("mean", "std")} <= set(rows[0])
        assert (smoke / f"per_class_{attack}.png").stat().st_size > 1000
    md = (smoke / "comparison.md").read_text()
    assert "| teacher |" in md and "Each method minus `ferd`" in md and "Retention (student PGD-20" in md
    # the CI preset's teacher is at chance (one epoch on digits): the report says what that means
    assert "**The teacher is at chance level** (10.0 % clean with 10 classes)" in md
    assert md.splitlines()[2].startswith("Base parameters: `ci` with no overrides; budget: equal iterations")
    # equal terms: FERD's default student side is A.8's, so Fast's own arm differs from FERD only in synthesis
    assert ("| fast | baseline.fast: its own synthesis (baseline.fast.*); method: fast; "
            "synthesis.reweighting.enabled: False |") in md
    assert ("| ferd-paper-student | distill.lambda1: 0.8333; distill.lambda2: 0.1667; distill.utae.gamma: 0.5; "
            "distill.utae.random_start: uniform |") in md
    assert flat_keys_present(json.loads((smoke / "comparison.json").read_text())["metrics"])
    assert all(f"| {m} | cnn-8 | 2 |" in md for m in cc.methods if m != "ferd")
    flat = json.loads((smoke / "comparison.json").read_text())["metrics"]
    ferd = json.loads((smoke / "runs/ferd/cnn-8/seed=1/metrics.json").read_text())
    assert flat["ferd.cnn-8.pgd20.worst.mean"] == pytest.approx(
        (ferd["student.pgd20.worst"] + json.loads((smoke / "runs/ferd/cnn-8/seed=0/metrics.json").read_text())
         ["student.pgd20.worst"]) / 2)
    for m in ("deepinv", "cmi", "fast", "zskt", "dfhl"):
        assert json.loads((smoke / f"runs/{m}/cnn-8/seed=0/params.json").read_text())["method"] == m


def flat_keys_present(flat: dict) -> bool:
    """Paired differences for worst and average PGD-20 and clean accuracy, each with its interval."""
    return all(f"fast.cnn-8.delta_{k}.{e}" in flat for k in ("pgd20_worst", "pgd20_avg", "clean_avg")
               for e in ("mean", "low", "high"))


def test_compare_smoke_gives_the_golden_bytes(smoke):
    """Every arm's student, pool shards and metrics are byte-identical to tests/support/golden.json (issue 17)."""
    assert golden.smoke_fingerprint(smoke) == golden.load()["compare-smoke"]


def test_a_finished_comparison_is_not_run_again_and_one_arm_can_be_run_alone(smoke, tmp_path):
    before = (smoke / "runs/cmi/cnn-8/seed=0/metrics.json").stat().st_mtime_ns
    assert main(["compare", "--preset", "compare-smoke", "--out", str(smoke), "--method", "cmi",
                 "--student", "cnn-8", "--seed", "0", "--no-progress"]) == 0
    assert (smoke / "runs/cmi/cnn-8/seed=0/metrics.json").stat().st_mtime_ns == before
    assert main(["compare", "--preset", "compare-smoke", "--out", str(smoke), "--method", "cmi",
                 "--student", "cnn-8", "--seed", "7"]) == 2  # not an arm of the preset


def test_a_partial_report_leaves_out_unfinished_runs_and_names_them(smoke, tmp_path):
    """A long tier's progress: --report-only refuses unfinished runs unless --partial, which reports the
    finished ones, pairs the seeds both methods finished and names the rest."""
    import shutil

    out = tmp_path / "partial"
    shutil.copytree(smoke, out, symlinks=True)
    for name in ("manifest.json", "metrics.json"):  # an unfinished run: not yet evaluated, so no manifest
        (out / "runs/fast/cnn-8/seed=1" / name).unlink()
    shutil.rmtree(out / "runs/cmi/cnn-8")
    argv = ["compare", "--preset", "compare-smoke", "--out", str(out), "--report-only"]
    assert main(argv) == 2  # refused: runs have not finished
    assert main(["compare", "--preset", "compare-smoke", "--out", str(out), "--partial"]) == 2
    assert main(argv + ["--partial"]) == 0
    md = (out / "comparison.md").read_text()
    assert ("**Partial**: 3 of 22 runs have not finished and are left out: `runs/cmi/cnn-8/seed=0`, "
            "`runs/cmi/cnn-8/seed=1`, `runs/fast/cnn-8/seed=1`.") in md
    assert "| fast | cnn-8 | 1 |" in md and "| cmi | cnn-8 |" not in md.split("## How each arm")[0]
    flat = json.loads((out / "comparison.json").read_text())["metrics"]
    ferd0, fast0 = (json.loads((out / f"runs/{m}/cnn-8/seed=0/metrics.json").read_text())["student.pgd20.worst"]
                    for m in ("ferd", "fast"))
    assert flat["fast.cnn-8.delta_pgd20_worst.mean"] == pytest.approx(fast0 - ferd0)  # seed 0 only
    assert "cmi.cnn-8.delta_pgd20_worst.mean" not in flat
    shutil.rmtree(out / "runs/ferd/cnn-8")  # the reference unfinished: nothing to pair, and the report says so
    assert main(argv + ["--partial"]) == 0
    assert "No other method shares a finished seed with `ferd` yet: nothing to pair." in \
        (out / "comparison.md").read_text()


def test_a_tampered_per_class_file_is_refused_naming_it(smoke, tmp_path, capsys):
    """A run's per_class.csv read back as untrusted: two classes' rows swapped (names and all), an accuracy out of
    [0, 1] or a missing column give one line naming the file, never a silently reordered or wrong report."""
    import shutil

    path = "runs/fast/cnn-8/seed=1/eval/per_class.csv"
    for damage, message in [("swap", "class_name: expected"), ("accuracy", "accuracy in [0, 1]"),
                            ("column", "row 2: accuracy: expected a value")]:
        out = tmp_path / damage
        shutil.copytree(smoke, out, symlinks=True)
        (out / path).parent.parent.joinpath("manifest.json").unlink()  # as kept (keep_comparison): no manifest
        lines = (out / path).read_text().splitlines()
        header, rows = lines[0], lines[1:]
        if damage == "swap":
            student = [i for i, r in enumerate(rows) if r.startswith("student,pgd20,")]
            rows[student[0]], rows[student[1]] = rows[student[1]], rows[student[0]]
            rows = [r.replace("student,pgd20,1,", "student,pgd20,X,").replace("student,pgd20,0,", "student,pgd20,1,")
                    .replace("student,pgd20,X,", "student,pgd20,0,") for r in rows]
        elif damage == "accuracy":
            cells = rows[0].split(",")
            cells[header.split(",").index("accuracy")] = "7"
            rows[0] = ",".join(cells)
        else:
            header = header.replace("accuracy", "acc")
        (out / path).write_text("\n".join([header, *rows]) + "\n")
        capsys.readouterr()
        assert main(["compare", "--preset", "compare-smoke", "--out", str(out), "--report-only", "--partial"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "per_class.csv" in err[0] and message in err[0], err


def test_an_attack_limited_to_some_seeds_is_reported_over_those_seeds(smoke, tmp_path):
    """``attack_seeds``: the other seeds' runs are evaluated without the attack (their trained students reused),
    and the report gives its columns over the seeds that ran it, saying how many."""
    import shutil

    from ferd.compare.config import run_config

    out = tmp_path / "limited"
    shutil.copytree(smoke, out, symlinks=True)
    preset = tmp_path / "limited.yaml"
    preset.write_text(yaml.safe_dump({"extends": "compare-smoke", "methods": ["ferd", "fast"],
                                      "set": ["evaluation.attacks=[clean,fgsm,pgd20]"], "attack_seeds": {"fgsm": [0]}}))
    cc = load_compare(preset)
    assert [run_config(cc, a).evaluation.attacks for a in arms(cc)[:2]] == [["clean", "fgsm", "pgd20"],
                                                                           ["clean", "pgd20"]]
    student = (out / "runs/ferd/cnn-8/seed=1/student.safetensors").read_bytes()
    assert main(["compare", "--preset", str(preset), "--out", str(out), "--no-progress"]) == 0
    assert (out / "runs/ferd/cnn-8/seed=1/student.safetensors").read_bytes() == student  # evaluated again only
    seed = {s: json.loads((out / f"runs/ferd/cnn-8/seed={s}/metrics.json").read_text()) for s in (0, 1)}
    assert "student.fgsm.avg" in seed[0] and "student.fgsm.avg" not in seed[1]
    rows = {r["method"]: r for r in csv.DictReader((out / "comparison.csv").open())}
    assert (rows["ferd"]["seeds"], rows["ferd"]["fgsm_seeds"], rows["ferd"]["pgd20_seeds"]) == ("2", "1", "2")
    assert float(rows["ferd"]["fgsm_avg_mean"]) == pytest.approx(seed[0]["student.fgsm.avg"])
    md = (out / "comparison.md").read_text()
    assert "fgsm on seeds [0] only (`attack_seeds`)." in md
    assert "| ferd | cnn-8 | 2 |" in md and f"{100 * seed[0]['student.fgsm.avg']:.1f} (1 of 2 seeds)" in md
    assert (out / "per_class_fgsm.png").stat().st_size > 1000


def test_parallel_jobs_give_the_same_runs_and_a_failing_arm_fails_alone(tmp_path, smoke, capsys, caplog):
    """``--jobs 2`` gives every arm the bytes of a one-at-a-time run; an arm whose loss goes non-finite (``boom``)
    comes back as its own numerical error (status 3, as without ``--jobs``, logged with its run) once the others
    have finished: the error crosses the process boundary (it had broken the whole pool, read as a killed arm)."""
    preset = _preset(tmp_path, seeds=[0, 1], methods={"ferd": [], "cmi": ["method=cmi"], "boom": ["distill.lr=1.0e+30"]})
    assert main(["compare", "--preset", str(preset), "--out", str(tmp_path / "j"), "--jobs", "2",
                 "--no-progress"]) == 3
    for arm in ("ferd/cnn-8/seed=1", "cmi/cnn-8/seed=0", "cmi/cnn-8/seed=1"):
        got = json.loads((tmp_path / "j/runs" / arm / "metrics.json").read_text())
        want = json.loads((smoke / "runs" / arm / "metrics.json").read_text())
        got.pop("run.seconds"), want.pop("run.seconds")
        assert got == want, arm
    assert sum(r.getMessage().startswith("runs/boom/cnn-8/seed=") and "distillation: the loss is not finite" in
               r.getMessage() for r in caplog.records) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "ferd compare: numerical error: distillation: the loss is not finite")


@pytest.mark.slow
def test_ctrl_c_stops_every_parallel_arm_at_once_and_starts_no_other(tmp_path):
    """Ctrl-C (SIGINT to the terminal's process group) while two arms of four run under ``--jobs 2``: the command ends
    with its one line and status 130, both workers are gone, and the two queued arms never start (a
    ``ProcessPoolExecutor`` ran every queued arm before letting the interrupt through). Each worker freezes itself at
    its first student iteration (``FERD_STOP_AT``), so the signal arrives while both are mid-run."""
    import signal
    import subprocess
    import sys

    from ferd.core.kill_points import STOP_ENV
    from support.processes import descendants, wait_for_stopped

    preset = _preset(tmp_path, seeds=[0, 1])
    out = tmp_path / "j"
    proc = subprocess.Popen([sys.executable, "-m", "ferd.cli", "compare", "--preset", str(preset), "--out", str(out),
                             "--jobs", "2", "--no-progress"], env={**os.environ, STOP_ENV: "student.iteration:1",
                                                                   "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal:
    try:  # a pytest-xdist worker ignores SIGINT, and an ignored signal stays ignored across exec
        wait_for_stopped(proc)
        workers = [pid for pid in descendants(proc.pid)
                   if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        assert len(workers) == 2
        os.killpg(proc.pid, signal.SIGINT)
        for pid in workers:  # a frozen worker takes the pool's SIGTERM once it runs again
            os.kill(pid, signal.SIGCONT)
        assert proc.wait(timeout=120) == 130  # bounds a hang only
    finally:  # nothing left running when the test fails
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.stderr.read().strip().splitlines()[-1] == (
        "ferd compare: interrupted; run the same command again to resume from what was kept")
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert len(list((out / "runs").glob("*/*/seed=*"))) == 2


@pytest.mark.slow
def test_a_killed_arm_process_ends_the_command_with_one_line(tmp_path):
    """An arm's process SIGKILLed mid-run under ``--jobs 2`` (what the OOM killer does; here each worker kills itself
    at its first student iteration, ``FERD_KILL_AT``): the command ends, status 1, with one line saying how to
    resume — a ``multiprocessing.Pool`` would wait for the lost result for ever."""
    import subprocess
    import sys

    from ferd.core.kill_points import KILL_ENV

    proc = subprocess.run([sys.executable, "-m", "ferd.cli", "compare", "--preset", str(_preset(tmp_path, seeds=[0, 1])),
                           "--out", str(tmp_path / "j"), "--jobs", "2", "--no-progress"], capture_output=True, text=True,
                          env={**os.environ, KILL_ENV: "student.iteration:1", "OMP_NUM_THREADS": "1"},
                          timeout=300)  # bounds a hang only
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "ferd compare: error: an arm's process ended without a result (killed, or out of memory?); the finished "
        "arms are kept: run the same command again to resume")


@pytest.mark.slow
def test_dvc_matrix_runs_a_comparison_and_a_second_repro_does_nothing(tmp_path):
    """The comparison as DVC stages (teacher → matrix → report) in a fresh git + DVC repository. A run killed
    after its first checkpoint resumes from it with the stage's own command run by hand (DVC would remove the
    folder before running the stage again), and ``dvc commit`` records it: the next ``dvc repro`` leaves it be."""
    import os
    import re
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
           "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}

    def sh(*cmd, cwd, ok=True, **more_env):
        proc = subprocess.run(cmd, cwd=cwd, env={**env, **more_env}, capture_output=True, text=True, timeout=600)
        assert (proc.returncode == 0) == ok, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    repo = tmp_path / "repo"
    repo.mkdir()
    sh("git", "init", "-q", cwd=repo)
    sh(str(bin_dir / "dvc"), "init", "-q", cwd=repo)
    root = Path(__file__).resolve().parents[2]
    preset = _preset(repo, base=str(root / "params" / "ci.yaml"), seeds=[0, 1])
    assert main(["compare", "--preset", str(preset), "--write-dvc-yaml", str(repo / "cmp")]) == 0
    killed = sh(str(bin_dir / "dvc"), "repro", cwd=repo / "cmp", ok=False, FERD_KILL_AT="checkpoint.saved:1")
    (stage,) = re.findall(r"Running stage '(run@[^']+)'", killed)  # killed after round 0's checkpoint
    cmd = re.search(rf"Running stage '{re.escape(stage)}':\n> (.+)", killed).group(1)
    assert "resuming from" in sh(*cmd.split(), cwd=repo / "cmp")
    sh(str(bin_dir / "dvc"), "commit", "-f", stage, cwd=repo / "cmp")
    out = sh(str(bin_dir / "dvc"), "repro", cwd=repo / "cmp")
    assert out.count("Running stage 'run@") == 3 and f"Stage '{stage}' didn't change" in out
    assert "Running stage 'report'" in out
    assert "| cmi | cnn-8 | 2 |" in (repo / "cmp" / "out" / "comparison.md").read_text()
    assert "Running stage" not in sh(str(bin_dir / "dvc"), "repro", cwd=repo / "cmp")
    assert "ferd.cnn-8.clean.avg.mean" in sh(str(bin_dir / "dvc"), "metrics", "show", cwd=repo / "cmp")
