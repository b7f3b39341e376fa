"""``ferd evaluate``: argument validation before any loading, and a small end-to-end run on digits."""

from __future__ import annotations

import json

import pytest

from ferd.cli import main
from ferd.cli.evaluate import parse_attacks, parse_eps
from support.cli import status


@pytest.fixture
def checkpoint(tmp_path):
    from ferd.core.checkpoint import save_state_dict
    from ferd.models import create_model

    path = tmp_path / "cnn.safetensors"
    save_state_dict(create_model("cnn-4", num_classes=10).state_dict(), path)
    return path


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if a model or a dataset gets loaded."""
    import ferd.data
    import ferd.models.loading

    def boom(*_a, **_k):
        raise AssertionError("loaded something before validating the arguments")

    monkeypatch.setattr(ferd.data, "load_split", boom)
    monkeypatch.setattr(ferd.models.loading, "load_model", boom)


def base_args(teacher, out) -> list[str]:
    return ["evaluate", "--teacher", str(teacher), "--teacher-arch", "cnn-4", "--dataset", "digits",
            "--out", str(out), "--no-progress"]


def test_parse_helpers():
    assert parse_attacks("clean, PGD20,aa") == ("clean", "pgd20", "aa")
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    assert parse_eps("0.1") == 0.1
    with pytest.raises(ValueError, match=r"--attacks: expected distinct names among \['clean', 'fgsm', 'pgd20', "
                                         r"'cw', 'aa'\], got \['clean', 'pgd'\]"):
        parse_attacks("clean,pgd")
    with pytest.raises(ValueError, match=r"--attacks: expected distinct names .*got \['fgsm', 'fgsm'\]"):
        parse_attacks("fgsm,fgsm")
    for bad in ("abc", "0", "2", "8/0", "nan"):
        with pytest.raises(ValueError, match="--eps"):
            parse_eps(bad)


@pytest.mark.parametrize("extra, message", [
    (["--attacks", "clean,pgd10"], "--attacks: expected distinct names among ['clean', 'fgsm', 'pgd20', 'cw', "
                                   "'aa'], got ['clean', 'pgd10']"),
    (["--n-examples", "0"], "--n-examples: Input should be greater than or equal to 1"),
    (["--batch-size", "0"], "--batch-size: Input should be greater than or equal to 1"),
    (["--eps", "16"], "--eps: Input should be less than or equal to 1"),
    (["--device", "cuda:abc"], "--device: not a torch device: 'cuda:abc'"),
    (["--num-classes", "1"], "--num-classes"),
    (["--student-arch", "cnn-4"], "--student and --student-arch"),
    (["--device", "cuda:0"], "--device"),
    (["--student", "missing.pt", "--student-arch", "cnn-4"], "--student: no such file"),
    (["--teacher-mean", "0.5"], "--teacher-std: expected a list as --teacher-mean is given (both or neither)"),
    (["--teacher-mean", "0.5,0.5", "--teacher-std", "0.3,0.3"],
     "--teacher-mean: expected 3 values (one per image channel of digits), got 2"),
    (["--teacher-mean", "0.5,0.5,0.5", "--teacher-std", "0.3,0,0.3"], "--teacher-std: expected finite values > 0, got 0.0"),
    (["--teacher-mean", "half"], "argument --teacher-mean: expected comma-separated numbers, one per image channel"),
    (["--student-mean", "0.5,0.5,0.5", "--student-std", "0.3,0.3,0.3"],
     "--student-mean/--student-std: only with --student"),
])
def test_validation_errors(checkpoint, tmp_path, capsys, no_loading, extra, message):
    if "--device" in extra:
        import torch
        if torch.cuda.is_available():
            pytest.skip("CUDA present")
    assert status(base_args(checkpoint, tmp_path / "out") + extra) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "out").exists()


def test_out_at_the_root_is_refused_before_loading(checkpoint, tmp_path, capsys, no_loading):
    """``--out /``: its finished attacks would be kept beside it, and the root has no beside."""
    args = base_args(checkpoint, tmp_path)
    args[args.index("--out") + 1] = "/"
    assert main(args) == 2
    assert "--out: expected a folder inside another (its finished attacks are kept beside it), got /" in \
        capsys.readouterr().err


def test_validation_order_and_unknown_names(tmp_path, capsys, no_loading, checkpoint):
    # a bad --attacks is reported even when the teacher file does not exist
    assert main(base_args(tmp_path / "nope.pt", tmp_path / "o") + ["--attacks", "bogus"]) == 2
    assert "--attacks" in capsys.readouterr().err
    assert main(base_args(tmp_path / "nope.pt", tmp_path / "o")) == 2
    assert "--teacher: no such file" in capsys.readouterr().err
    args = base_args(checkpoint, tmp_path / "o")
    args[args.index("cnn-4")] = "cnn-x"
    assert main(args) == 2
    assert "--teacher-arch: unknown architecture 'cnn-x'; expected one of" in capsys.readouterr().err
    args = base_args(checkpoint, tmp_path / "o")
    args[args.index("digits")] = "mnist"
    assert main(args) == 2
    assert "--dataset" in capsys.readouterr().err


def test_end_to_end_digits(checkpoint, tmp_path, capsys):
    from ferd.core.checkpoint import sha256_file

    out = tmp_path / "out"
    rc = main(base_args(checkpoint, out) + ["--student", str(checkpoint), "--student-arch", "cnn-4",
                                            "--attacks", "clean,fgsm", "--n-examples", "30", "--eps", "8/255",
                                            "--batch-size", "16"])
    assert rc == 0, capsys.readouterr().err
    assert "| teacher |" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {f"{m}.{a}.{s}" for m in ("teacher", "student") for a in ("clean", "fgsm")
                            for s in ("avg", "worst", "worst10", "nsd")} | {"student.clean.retention",
                                                                              "student.fgsm.retention"}
    # same weights → same numbers for teacher and student
    assert metrics["teacher.fgsm.avg"] == metrics["student.fgsm.avg"]
    settings = json.loads((out / "settings.json").read_text())
    assert settings["n_examples"] == 30 and settings["dataset"] == "digits"
    assert settings["teacher_sha256"] == settings["student_sha256"] == sha256_file(checkpoint)  # what was evaluated
    assert settings["class_counts"] == [3] * 10
    assert (out / "per_class_fgsm.png").exists() and (out / "report.md").exists()


def test_the_normalisation_given_is_the_one_evaluated_and_recorded(checkpoint, tmp_path, capsys, monkeypatch):
    """``--teacher-mean/--teacher-std`` reach the model (a checkpoint does not hold them: without them a model trained
    on normalised inputs is attacked as another model) and ``settings.json`` records them; the student gets its own."""
    import ferd.models.loading

    real, seen = ferd.models.loading.load_model, []

    def spy(path, arch, num_classes, mean=None, std=None, sha256=None):
        seen.append((mean, std))
        return real(path, arch, num_classes, mean, std, sha256=sha256)

    monkeypatch.setattr(ferd.models.loading, "load_model", spy)
    out = tmp_path / "out"
    assert main(base_args(checkpoint, out) + ["--teacher-mean", "0.2,0.2,0.2", "--teacher-std", "0.3,0.3,0.3", "--student",
                                              str(checkpoint), "--student-arch", "cnn-4", "--attacks", "clean",
                                              "--n-examples", "20"]) == 0, capsys.readouterr().err
    assert seen == [([0.2] * 3, [0.3] * 3), (None, None)]
    settings = json.loads((out / "settings.json").read_text())
    assert (settings["teacher_mean"], settings["teacher_std"], settings["student_mean"]) == ([0.2] * 3, [0.3] * 3, None)
