"""``ferd export``: a finished ``ferd run`` (params/ci.yaml) shipped as a torch.export program, ONNX, a model card
and a RobustBench entry; the exported program computes what the checkpoint does, clean and under PGD-20, and the
card holds the run's numbers. A run that was changed after it finished, or a ``--to`` that holds something else,
is refused in one line with nothing written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ferd.cli import main

N_IMAGES = 200
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    assert main(["run", "--params", "params/ci.yaml", "--out", str(out), "--threads", "1", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def exported(run):
    to = run.parent / "shipped"
    assert main(["export", str(run), "--to", str(to)]) == 0
    return to


@pytest.fixture(scope="module")
def student_and_images(run):
    from ferd.data import load_split
    from ferd.models.loading import load_model
    from ferd.plan.resolve import parse_config

    cfg = parse_config(json.loads((run / "params.json").read_text()))
    model = load_model(run / "student.safetensors", cfg.student.arch, cfg.num_classes, cfg.student.mean,
                       cfg.student.std)
    x, y = load_split(cfg.dataset, "test")
    return cfg, model, x[:N_IMAGES].float().contiguous(), y[:N_IMAGES]


def _pgd20_accuracy(model, cfg, x, y):
    from ferd.attacks import ThreatContext, build_attack

    attack = build_attack("pgd20", ThreatContext(eps=cfg.threat.eps, step=cfg.threat.step, num_classes=cfg.num_classes))
    x_adv = attack.perturb(model, x, y, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return x_adv, (model(x_adv).argmax(1) == y).float().mean().item()


def test_the_program_computes_the_checkpoints_logits_and_pgd20_accuracy(exported, student_and_images, single_thread):
    from ferd.export.program import load_program

    cfg, model, x, y = student_and_images
    program = load_program(exported / "model.pt2")
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x), rtol=1e-5, atol=1e-5)
        assert program(x[:1]).shape == (1, cfg.num_classes)  # any batch size
    adv_model, acc_model = _pgd20_accuracy(model, cfg, x, y)
    adv_program, acc_program = _pgd20_accuracy(program, cfg, x, y)
    assert acc_program == acc_model
    torch.testing.assert_close(adv_program, adv_model)  # the same gradients: the same adversarial images


def test_the_onnx_graph_computes_the_checkpoints_logits(exported, student_and_images):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install onnxruntime): the "
                                                    "ONNX graph is written but not run here")
    _cfg, model, x, _y = student_and_images
    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"images": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(x), rtol=1e-4, atol=1e-4)


def test_the_card_holds_the_runs_numbers(run, exported):
    metrics = json.loads((run / "metrics.json").read_text())
    card = json.loads((exported / "model_card.json").read_text())
    teacher = json.loads((run / "teacher" / "model_card.json").read_text())
    for attack in ("clean", "pgd20"):
        for stat in ("avg", "worst", "nsd", "retention"):
            value = metrics[f"student.{attack}.{stat}"]
            assert card["metrics"][attack][stat] == value, (attack, stat)  # null: undefined (an NSD of 0/0)
    rows = {(r["attack"], r["class_index"]): r for r in json.loads((run / "eval" / "per_class.json").read_text())
            if r["model"] == "student"}
    teacher_rows = {(r["attack"], r["class_index"]): r["accuracy"]
                    for r in json.loads((run / "eval" / "per_class.json").read_text()) if r["model"] == "teacher"}
    for row in card["per_class"]:
        for attack in ("clean", "pgd20"):
            assert row[attack] == rows[(attack, row["class_index"])]["accuracy"]
            t = teacher_rows[(attack, row["class_index"])]
            assert row[f"{attack}_retention"] == (row[attack] / t if t else None)
    assert card["teacher"]["sha256"] == teacher["sha256"]
    assert card["architecture"] == "cnn-8" and card["dataset"] == "digits"
    assert card["threat_model"]["eps"] == pytest.approx(8 / 255)
    assert card["input"]["range"] == [0.0, 1.0] and card["input"]["layout"] == "NCHW"
    record = json.loads((exported / "export.json").read_text())
    assert card["files"]["model.pt2"] == record["files"]["model.pt2"]
    entry = json.loads((exported / "robustbench.json").read_text())
    assert entry["clean_acc"] == f"{100 * metrics['student.clean.avg']:.2f}"
    assert entry["reported"] == entry["pgd20_acc"] == f"{100 * metrics['student.pgd20.avg']:.2f}"
    assert "autoattack_acc" not in entry and "PGD-20 (not AutoAttack)" in entry["footnote"]
    assert entry["eps"] == "8/255" and entry["additional_data"] is False and entry["number_forward_passes"] == 1


def _refused(capsys, *argv):
    rc = main(["export", *map(str, argv)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    return err[0]


def test_a_run_changed_after_it_finished_is_refused(run, tmp_path, capsys):
    changed = tmp_path / "run"
    shutil.copytree(run, changed)
    metrics = json.loads((changed / "metrics.json").read_text())
    metrics["student.pgd20.avg"] = 0.99
    (changed / "metrics.json").write_text(json.dumps(metrics))
    assert "metrics.json" in _refused(capsys, changed, "--to", tmp_path / "a")
    assert not (tmp_path / "a").exists()
    shutil.copy(run / "metrics.json", changed / "metrics.json")
    (changed / "eval" / "per_class.json").write_text(
        (run / "eval" / "per_class.json").read_text().replace('"accuracy": 0.0', '"accuracy": 1.0', 1))
    assert "per_class.json" in _refused(capsys, changed, "--to", tmp_path / "a")
    shutil.copy(run / "eval" / "per_class.json", changed / "eval" / "per_class.json")
    shutil.copy(run / "checkpoint" / "trainer.pt", changed / "student.safetensors")  # another file in its place
    assert "student.safetensors" in _refused(capsys, changed, "--to", tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_the_destination_holds_this_runs_export_or_nothing(run, exported, tmp_path, capsys):
    before = json.loads((exported / "export.json").read_text())
    assert main(["export", str(run), "--to", str(exported)]) == 0  # again: the same run's export is replaced
    assert json.loads((exported / "export.json").read_text()) == before  # by the same bytes, model.pt2 included
    capsys.readouterr()
    other = tmp_path / "other"
    shutil.copytree(exported, other)
    record = json.loads((other / "export.json").read_text())
    record["run"]["student_sha256"] = "0" * 64
    (other / "export.json").write_text(json.dumps(record))
    assert "another run" in _refused(capsys, run, "--to", other)
    assert json.loads((other / "export.json").read_text()) == record  # untouched
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    assert "no ferd export" in _refused(capsys, run, "--to", stray)
    assert [p.name for p in stray.iterdir()] == ["notes.txt"]
    assert "inside RUN" in _refused(capsys, run, "--to", run / "export")


def test_a_run_naming_code_from_outside_ferd_is_not_imported_unless_trusted(run, exported, tmp_path, capsys,
                                                                            monkeypatch):
    """A run directory is untrusted: parameters that name a ``package.module:factory`` (even with the manifest
    resealed to match, as anyone without the signing key can) are refused before that module is imported, unless
    the user names it with ``--trust-arch``; nor does a mistyped ``--to`` leave a lock file that spoils a later
    export."""
    from ferd.core.checkpoint import sha256_file
    from ferd.core.provenance import seal

    (tmp_path / "planted.py").write_text("from pathlib import Path\n"
                                         f"Path({str(tmp_path / 'IMPORTED')!r}).write_text('ran')\n"
                                         "def build(num_classes):\n    raise ValueError('never built')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    forged = tmp_path / "run"
    shutil.copytree(run, forged)
    params = json.loads((forged / "params.json").read_text())
    params["student"]["arch"] = params["teacher"]["arch"] = "planted:build"
    (forged / "params.json").write_text(json.dumps(params))
    manifest = json.loads((forged / "manifest.json").read_text())
    manifest["outputs"]["params.json"] = {"bytes": (forged / "params.json").stat().st_size,
                                          "sha256": sha256_file(forged / "params.json")}
    (forged / "manifest.json").write_text(json.dumps(seal(manifest)))
    message = _refused(capsys, forged, "--to", tmp_path / "a")
    assert ("params.json: teacher.arch 'planted:build' and student.arch 'planted:build': code from outside ferd"
            in message and message.endswith("pass --trust-arch planted:build"))  # both sides in one line
    assert not (tmp_path / "IMPORTED").exists() and not (tmp_path / "a").exists()
    assert main(["export", str(forged), "--to", str(tmp_path / "a"), "--trust-arch", "planted:build"]) == 2
    assert (tmp_path / "IMPORTED").read_text() == "ran"  # named by the user: resolved (and here refused after)
    capsys.readouterr()
    shipped = tmp_path / "shipped"
    shutil.copytree(exported, shipped)
    assert "exists and is not a directory" in _refused(capsys, run, "--to", shipped / "model.pt2")
    assert not any(p.name.endswith(".lock") for p in shipped.iterdir())  # refused before any lock file
    assert main(["export", str(run), "--to", str(shipped)]) == 0
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    assert main(["export", str(run), "--to", "."]) == 0 and (here / "export.json").is_file()  # `--to .` by its name


def test_without_the_onnx_extra_the_rest_is_written_and_the_extra_named(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)  # the extra not installed
    asked = _refused(capsys, run, "--to", tmp_path / "asked", "--onnx")
    assert asked == "ferd export: error: needs the optional dependency 'onnxscript': pip install 'ferd[onnx]'"
    assert not (tmp_path / "asked").exists()
    assert main(["export", str(run), "--to", str(tmp_path / "plain")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ferd export: note: model.onnx not written: needs the optional dependency 'onnxscript': "
                   "pip install 'ferd[onnx]'"]
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == [
        "export.json", "model.pt2", "model_card.json", "model_card.md", "robustbench.json"]


# ---- a stage layout: what `ferd stage all --out DIR` and DVC (`make run`, `dvc repro`: out/) write ----

@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    out = tmp_path_factory.mktemp("export-stages") / "out"
    assert main(["stage", "all", "--params", "params/ci.yaml", "--out", str(out), "--threads", "1",
                 "--no-progress"]) == 0
    return out


def test_a_stage_layout_exports_as_a_run_does(layout, tmp_path, single_thread):
    from ferd.core.checkpoint import sha256_file
    from ferd.data import load_split
    from ferd.export.program import load_program
    from ferd.models.loading import load_model
    from ferd.plan.resolve import load_config

    to = tmp_path / "exported"
    assert main(["export", str(layout), "--to", str(to)]) == 0
    cfg = load_config("params/ci.yaml")
    final = layout / "round-1" / "distillation"  # the evaluation's student: the last round's distillation
    model = load_model(final / "student.safetensors", cfg.student.arch, cfg.num_classes, cfg.student.mean,
                       cfg.student.std)
    x, y = load_split(cfg.dataset, "test")
    x, y = x[:N_IMAGES].float().contiguous(), y[:N_IMAGES]
    program = load_program(to / "model.pt2")
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x), rtol=1e-5, atol=1e-5)
    adv_model, acc_model = _pgd20_accuracy(model, cfg, x, y)
    adv_program, acc_program = _pgd20_accuracy(program, cfg, x, y)
    assert acc_program == acc_model
    torch.testing.assert_close(adv_program, adv_model)

    card = json.loads((to / "model_card.json").read_text())
    metrics = json.loads((layout / "evaluation" / "metrics.json").read_text())
    for attack in ("clean", "pgd20"):
        for stat in ("avg", "worst", "nsd", "retention"):
            assert card["metrics"][attack][stat] == metrics[f"student.{attack}.{stat}"], (attack, stat)
    rows = {(r["attack"], r["class_index"]): r["accuracy"] for r in json.loads(
        (layout / "evaluation" / "eval" / "per_class.json").read_text()) if r["model"] == "student"}
    assert all(row[a] == rows[(a, row["class_index"])] for row in card["per_class"] for a in ("clean", "pgd20"))
    assert card["teacher"]["sha256"] == json.loads((layout / "teacher" / "model_card.json").read_text())["sha256"]
    assert card["student_sha256"] == sha256_file(final / "student.safetensors")
    lineage = card["lineage"]
    assert {name: a["path"] for name, a in lineage["artifacts"].items()} == {
        "teacher": "teacher", "distillation": "round-1/distillation", "evaluation": "evaluation"}
    for a in lineage["artifacts"].values():
        assert a["manifest_sha256"] == sha256_file(layout / a["path"] / "manifest.json")
    evaluation = json.loads((layout / "evaluation" / "manifest.json").read_text())
    assert lineage["params_fingerprint"]["evaluation"] == evaluation["params_fingerprint"]
    assert lineage["metrics_sha256"] == sha256_file(layout / "evaluation" / "metrics.json")
    assert "round-1/distillation" in (to / "model_card.md").read_text()
    assert json.loads((to / "export.json").read_text())["run"]["student_sha256"] == card["student_sha256"]


def _reseal(manifest_path, change):
    """Change a manifest and reseal it as anyone who can write the store can (no key: its checksum passes)."""
    from ferd.core.provenance import seal

    manifest = json.loads(manifest_path.read_text())
    change(manifest)
    manifest_path.write_text(json.dumps(seal(manifest)))


def test_a_tampered_or_partial_stage_layout_is_refused(layout, tmp_path, capsys, monkeypatch):
    from ferd.core.checkpoint import sha256_file

    out, to = tmp_path / "out", tmp_path / "a"
    shutil.copytree(layout, out)
    ev = out / "evaluation"
    saved = {p: p.read_bytes() for p in (ev / "metrics.json", ev / "manifest.json")}

    def restore():
        for p, data in saved.items():
            p.write_bytes(data)

    metrics = json.loads(saved[ev / "metrics.json"])
    metrics["student.pgd20.avg"] = 0.99
    (ev / "metrics.json").write_text(json.dumps(metrics))
    assert "evaluation/metrics.json: sha256 mismatch" in _refused(capsys, out, "--to", to)  # every manifest verified

    def listed(manifest):  # metrics.json changed and the manifest made to list it
        manifest["outputs"]["metrics.json"] = {"sha256": sha256_file(ev / "metrics.json"),
                                               "bytes": (ev / "metrics.json").stat().st_size}
    _reseal(ev / "manifest.json", listed)
    assert "per_class.json" in _refused(capsys, out, "--to", to)  # the class accuracies do not add up to it
    restore()

    def other_eps(manifest):
        manifest["params"]["threat.eps"] = 4 / 255
    _reseal(ev / "manifest.json", other_eps)
    assert "evaluation/manifest.json: params do not give its params_fingerprint" in _refused(capsys, out, "--to", to)
    restore()

    final = out / "round-1" / "distillation" / "student.safetensors"
    final.write_bytes((out / "round-0" / "distillation" / "student.safetensors").read_bytes())
    assert "round-1/distillation/student.safetensors: sha256 mismatch" in _refused(capsys, out, "--to", to)
    shutil.copy(layout / "round-1" / "distillation" / "student.safetensors", final)

    with monkeypatch.context() as m:
        m.setenv("FERD_SIGNING_KEY", "export-test-key")
        assert "unsigned, and FERD_SIGNING_KEY is set" in _refused(capsys, out, "--to", to)

    assert "one stage artifact" in _refused(capsys, ev, "--to", to)
    shutil.rmtree(ev)
    assert "no evaluation artifact" in _refused(capsys, out, "--to", to)
    assert not to.exists()
