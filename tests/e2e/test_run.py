"""``ferd run`` end to end on a tiny version of the embedded default: outputs, metrics keys, determinism."""

from __future__ import annotations

import json

import pytest

from ferd.cli import main
from support.inputs import TINY


def _run(out, *extra):
    args = ["run", "--params", "params/embedded.yaml", "--out", str(out), "--threads", "1", "--no-progress"]
    for s in TINY + list(extra):
        args += ["-S", s]
    assert main(args) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
def test_ferd_run_outputs_and_determinism(tmp_path):
    m1 = _run(tmp_path / "a")
    for key in ("student.clean.avg", "student.pgd20.avg", "student.pgd20.worst", "teacher.pgd20.nsd",
                "teacher.clean.worst"):
        assert 0.0 <= m1[key] <= 1.0 or key.endswith("nsd"), key
    a = tmp_path / "a"
    for name in ("student.safetensors", "teacher/teacher.safetensors", "teacher/model_card.json", "result.json",
                 "class_weights.json", "history.json", "params.json", "checkpoint/round.json",
                 "pool/round=1/part-0.parquet"):
        assert (a / name).is_file(), name
    weights = json.loads((a / "class_weights.json").read_text())
    assert len(weights) == 2 and all(abs(sum(w["p"]) - 1) < 1e-9 for w in weights)
    m2 = _run(tmp_path / "b")
    strip = lambda m: {k: v for k, v in m.items() if k != "run.seconds"}  # noqa: E731
    assert strip(m1) == strip(m2)


def test_bad_parameter_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "never"
    rc = main(["run", "--params", "params/embedded.yaml", "--out", str(out), "-S", "distill.utae.gamma=-1"])
    assert rc == 2
    assert "distill.utae.gamma" in capsys.readouterr().err
    assert not out.exists()


def test_teacher_is_reused_only_for_identical_teacher_parameters():
    from ferd.plan.resolve import load_config
    from ferd.plan.fingerprint import params_fingerprint

    def fp(*changes):
        return params_fingerprint(load_config("params/embedded.yaml", list(changes)), "teacher")

    assert fp() == fp("synthesis.lambda_uni=2")
    for change in ("teacher.train.epochs=3", "threat.eps=0.1", "seed=1", "teacher.arch=cnn-8"):
        assert fp(change) != fp()


def test_autoattack_on_its_own_smaller_subset(tmp_path):
    """evaluation.aa_examples: the other attacks on n_examples, AutoAttack on its own stratified subset."""
    import csv

    m = _run(tmp_path / "aa", "evaluation.attacks=[clean,aa]", "evaluation.aa_examples=20")
    assert {"student.clean.avg", "student.aa.avg", "teacher.aa.worst"} <= set(m)
    counts = lambda d: sum(int(r["n"]) for r in csv.DictReader((tmp_path / "aa" / d / "per_class.csv").open())  # noqa: E731
                           if r["model"] == "student")
    assert counts("eval") == 40 and counts("eval-aa") == 20
    assert m["student.aa.avg"] <= 1.0 and (tmp_path / "aa" / "eval-aa" / "report.md").is_file()


def test_a_resumed_run_counts_the_time_of_its_earlier_processes(tmp_path, monkeypatch):
    """``run.seconds`` of a run killed after round 0 and resumed = the first process's time up to its
    checkpoint (``elapsed.json``) + the second process's; not the second process's alone."""
    from ferd.plan.resolve import load_config
    from ferd.core.provenance import seal
    from ferd.stages.run import ELAPSED_FILE, run
    from support.resume import die_at_round_1, revive

    cfg, out = load_config("params/embedded.yaml", TINY), tmp_path / "run"
    die_at_round_1(monkeypatch)
    with pytest.raises(RuntimeError, match="killed"):
        run(cfg, out, progress=False)
    first = json.loads((out / ELAPSED_FILE).read_text())
    assert first["next_round"] == 1 and first["seconds"] > 0
    (out / ELAPSED_FILE).write_text(json.dumps(seal({"next_round": 1, "seconds": 5000.0})))  # a long first process
    revive(monkeypatch)
    metrics = run(cfg, out, progress=False)
    assert 5000.0 < metrics["run.seconds"] < 5000.0 + 600
    assert json.loads((out / ELAPSED_FILE).read_text())["next_round"] == 2
    (out / ELAPSED_FILE).write_text("[not a record]")  # an untrusted record: refused, never guessed (issue 34)
    with pytest.raises(ValueError, match="elapsed.json"):
        run(cfg, out, progress=False)
