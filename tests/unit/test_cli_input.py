"""Careless command lines: counts out of range, a params 'file' that is a pipe or huge. One line, status 2,
before any work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ferd.cli import main
from support.cli import status
from support.faultlog import record

CI = str(Path(__file__).resolve().parents[2] / "params" / "ci.yaml")

COUNTS = [  # (argv without the value, flag, a value out of range)
    (["bench", "--preset", CI, "--iterations"], "--iterations", "0"),
    (["bench", "--preset", CI, "--repeats"], "--repeats", "0"),
    (["bench", "--preset", CI, "--warmup"], "--warmup", "-1"),
    (["compare", "--preset", "compare-smoke", "--out", "c", "--jobs"], "--jobs", "0"),
    (["run", "--params", CI, "--out", "r", "--threads"], "--threads", "-1"),
    (["stage", "teacher-fetch", "--params", CI, "--out", "t", "--threads"], "--threads", "two"),
]


@pytest.mark.parametrize("argv, flag, value", COUNTS, ids=[f"{a[0]} {f} {v}" for a, f, v in COUNTS])
def test_a_count_out_of_range_is_one_line_status_2(argv, flag, value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert status([*argv, value]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"argument {flag}: expected an integer >=" in err, err
    assert list(tmp_path.iterdir()) == []
    record(f"`ferd {argv[0]} {flag} {value}`", "a count out of range", True, 0)


def test_a_params_file_that_is_a_pipe_is_refused_without_reading_it(tmp_path, capsys):
    fifo = tmp_path / "params.yaml"
    os.mkfifo(fifo)  # opening it to read would block forever: it must not be opened
    assert main(["params", "check", "--params", str(fifo), "--dvc-yaml", str(tmp_path / "dvc.yaml")]) == 2
    assert "not a regular file (a directory, pipe or device)" in capsys.readouterr().err
    record("`--params` a named pipe", "reading would block forever", True, 0)


def test_a_huge_params_file_is_refused_by_its_size(tmp_path, capsys):
    huge = tmp_path / "params.yaml"
    with open(huge, "wb") as f:
        f.truncate(8 << 30)  # sparse: 8 GiB that reading would bring into memory
    assert main(["params", "check", "--params", str(huge), "--dvc-yaml", str(tmp_path / "dvc.yaml")]) == 2
    assert f"{huge}: {8 << 30} bytes; parameters are at most" in capsys.readouterr().err
    record("`--params` an 8 GiB file", "sparse file, refused by size", True, 0)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="the machine has the GPU the preset asks for")
@pytest.mark.parametrize("command", ["bench", "run"])
def test_a_gpu_preset_on_a_machine_without_one_is_one_line_status_2(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["bench", "--preset", "paper-as-printed"] if command == "bench" else \
        ["run", "--params", str(Path(CI).with_name("paper-as-printed.yaml")), "--out", "r"]
    assert status(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "device: cuda requested but CUDA is not available on this machine" in err, err
    assert list(tmp_path.iterdir()) == []


def test_params_commands_refuse_a_file_the_generated_stages_would_not_read(tmp_path, capsys):
    """The stages of dvc.yaml read params.yaml beside it: a --params elsewhere would be checked, then ignored."""
    other = tmp_path / "ci-params.yaml"
    for action in (["use", "ci"], ["check"], ["dvc-yaml"]):
        assert main(["params", *action, "--params", str(other), "--dvc-yaml", str(tmp_path / "dvc.yaml")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"read {tmp_path / 'params.yaml'}" in err, err
    assert list(tmp_path.iterdir()) == []


def test_params_use_leaves_the_project_as_it_was_when_the_pipeline_files_cannot_go_there(tmp_path, capsys):
    (tmp_path / "rounds").write_text("a file where the rounds' folder goes")
    (tmp_path / "params.yaml").write_text("seed: 3\n")
    assert main(["params", "use", "ci", "--params", str(tmp_path / "params.yaml"),
                 "--dvc-yaml", str(tmp_path / "dvc.yaml")]) == 2
    assert "rounds" in capsys.readouterr().err
    assert (tmp_path / "params.yaml").read_text() == "seed: 3\n" and not (tmp_path / "dvc.yaml").exists()


def test_params_yaml_names_a_shipped_preset_by_name_and_version_and_an_own_file_by_its_path(tmp_path, monkeypatch):
    """Outside a checkout a shipped preset lies in a site-packages folder that differs per machine: the header
    names it by its name and ferd's version; a file of the user's own keeps the path they gave."""
    from ferd import __version__

    monkeypatch.chdir(tmp_path)  # no ./params/ here: `ci` is the preset shipped in ferd/params/
    assert main(["params", "use", "ci"]) == 0
    header = (tmp_path / "params.yaml").read_text().splitlines()[1]
    assert f"(this file: params/ci.yaml shipped with ferd {__version__})" in header and str(tmp_path) not in header
    (tmp_path / "mine.yaml").write_text("seed: 3\nepochs: 2\nrounds: 2\n")
    assert main(["params", "use", "mine.yaml"]) == 0
    assert "(this file: mine.yaml)" in (tmp_path / "params.yaml").read_text().splitlines()[1]


@pytest.mark.parametrize("extra", [["--method", "ferd", "--student", "cnn-8", "--seed", "0"], ["--teacher-only"]])
def test_report_only_with_a_flag_that_runs_something_is_refused(extra, tmp_path, monkeypatch, capsys):
    """``--report-only`` runs nothing: with an arm's selection or ``--teacher-only`` (which would train) it is one
    line, status 2, nothing written."""
    monkeypatch.chdir(tmp_path)
    assert status(["compare", "--preset", "compare-smoke", "--out", "c", "--report-only", *extra]) == 2
    assert capsys.readouterr().err == ("ferd compare: error: --report-only: writes the report from finished runs and "
                                       "runs nothing; expected no --teacher-only, --method, --student or --seed\n")
    assert not (tmp_path / "c").exists()


def test_run_local_refuses_an_image_the_subprocess_runner_would_ignore(tmp_path, monkeypatch, capsys):
    """``--image`` names the image of ``--runner docker``; with the default runner it was silently ignored."""
    monkeypatch.chdir(tmp_path)
    assert status(["pipeline", "run-local", "--params", CI, "--image", "ghcr.io/acme/ferd:1", "--out", "r"]) == 2
    assert "--image/--image-from-build: the image the tasks run in under --runner docker" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_ctrl_c_is_one_line_and_status_130(tmp_path, monkeypatch, capsys):
    """Ctrl-C (KeyboardInterrupt) anywhere in a command: one line saying how to resume, the shell's status 130."""
    import ferd.cli.params

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ferd.cli.params, "load_config", interrupted)
    assert main(["params", "check", "--params", str(tmp_path / "params.yaml"),
                 "--dvc-yaml", str(tmp_path / "dvc.yaml")]) == 130
    err = capsys.readouterr().err
    assert err == "ferd params: interrupted; run the same command again to resume from what was kept\n"


def test_sigterm_is_one_line_and_status_143_and_the_handler_is_restored(tmp_path, monkeypatch, capsys):
    """SIGTERM (a pod's eviction) while a command runs: raised like Ctrl-C, one line, the shell's status 143;
    the process's own SIGTERM handler is back afterwards."""
    import signal

    import ferd.cli.params

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(ferd.cli.params, "load_config", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert main(["params", "check", "--params", str(tmp_path / "params.yaml"),
                 "--dvc-yaml", str(tmp_path / "dvc.yaml")]) == 143
    assert capsys.readouterr().err == ("ferd params: terminated (SIGTERM); run the same command again to resume "
                                       "from what was kept\n")
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_during_an_atomic_write_leaves_no_temporary_file(tmp_path):
    """What SIGTERM's exception buys over the default action: the write under way removes its temporary file
    (the default action would leave ``.<name>.tmp-*`` behind) and the target stays as it was."""
    import signal

    from ferd.cli import Terminated, _sigterm_raises
    from ferd.core.checkpoint import atomic_path

    target = tmp_path / "result.json"
    target.write_text("old")
    with pytest.raises(Terminated), _sigterm_raises(), atomic_path(target) as tmp:
        tmp.write_text("half")
        os.kill(os.getpid(), signal.SIGTERM)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
    assert target.read_text() == "old"


def test_a_mistyped_key_names_the_closest_one():
    from ferd.core.params_io import ConfigError
    from ferd.plan.resolve import load_config

    with pytest.raises(ConfigError, match=r"synthesis\.lamda_uni: unknown key \(did you mean synthesis\.lambda_uni\?\)"):
        load_config(CI, ["synthesis.lamda_uni=2"])
    with pytest.raises(ConfigError, match=r"synthesis\.zzz: unknown key$"):
        load_config(CI, ["synthesis.zzz=2"])


def test_progress_bars_only_on_a_terminal(tmp_path, monkeypatch):
    """Piped to a log (stderr no terminal), a command runs as with --no-progress; on a terminal, bars stay."""
    import sys

    import ferd.cli.stage

    seen = []
    monkeypatch.setattr(ferd.cli.stage, "_stage", lambda args: seen.append(args.no_progress) or 0)
    argv = ["stage", "teacher-fetch", "--params", CI, "--out", str(tmp_path / "t")]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert main(argv) == 0
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(argv) == 0 and main([*argv, "--no-progress"]) == 0
    assert seen == [True, False, True]


def test_help_pages_show_no_restructuredtext_markup(capsys):
    """The docstrings shown as help drop their markup: no double backticks, no :role:`…`, no trailing ``::``."""
    import re

    commands = ["params", "stage", "pipeline", "compare", "run", "evaluate", "export", "lineage", "bench", "data"]
    for command in commands:
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0, command
        text = capsys.readouterr().out
        assert "``" not in text and not re.search(r":[a-z]+:`", text) and not re.search(r"::$", text, re.M), command


def test_a_stage_summary_writes_a_missing_metric_as_null(capsys):
    """`ferd stage`'s JSON on stdout stays JSON: a metric with no value (NaN) is null, as in metrics.json."""
    import json

    from ferd.cli.stage import _print

    assert _print({"student.pgd20.nsd": float("nan"), "uri": Path("out")}) == 0
    assert json.loads(capsys.readouterr().out) == {"student.pgd20.nsd": None, "uri": "out"}
