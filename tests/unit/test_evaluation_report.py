"""write_evaluation: every file is written, parseable and consistent with the result."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torch import nn

from ferd.evaluation.report import summary_table, write_evaluation
from ferd.evaluation.runner import EvaluationResult, attack_settings, evaluate_models, flat_metrics

N, C = 30, 10
NAMES = [f"class{i}" for i in range(C)]


def tiny(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 8 * 8, C))


pytestmark = pytest.mark.usefixtures("one_thread_module")  # tiny models: one intra-op thread


@pytest.fixture(scope="module")
def result() -> EvaluationResult:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N, 3, 8, 8, generator=g)
    y = torch.arange(N) % C
    return evaluate_models({"teacher": tiny(0), "student": tiny(1)}, x, y, num_classes=C,
                           attacks=("clean", "fgsm", "pgd20"), batch_size=16, progress=False)


@pytest.fixture(scope="module")
def written(result, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    return out, write_evaluation(result, out, NAMES)


def strict_json(path):
    def no_nan(token):
        raise AssertionError(f"{path.name}: non-standard JSON constant {token}")
    return json.loads(path.read_text(), parse_constant=no_nan)


def test_files_written(written, result):
    out, files = written
    expected = {"metrics.json", "per_class.csv", "per_class.json", "attack_targets.csv", "settings.json",
                "predictions.npz", "report.md", "per_class.png"}
    if "teacher" in result.models and len(result.models) > 1:
        expected.add("retention.png")
    expected |= {f"per_class_{a}.png" for a in result.attacks}
    expected |= {f"confusion_{m}_{a}.{ext}" for m in result.models for a in result.attacks for ext in ("csv", "png")}
    assert set(files) == expected
    assert {p.name for p in out.iterdir()} == expected  # no temporary files left behind
    for name in expected:
        assert (out / name).stat().st_size > 0
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_metrics_json(written, result):
    out, _ = written
    data = strict_json(out / "metrics.json")
    flat = flat_metrics(result)
    assert list(data) == list(flat)
    assert "student.pgd20.worst" in data and "teacher.clean.nsd" in data
    for key, value in data.items():
        assert value == pytest.approx(flat[key]) if value is not None else np.isnan(flat[key])


def test_per_class_csv_and_json(written, result):
    out, _ = written
    with open(out / "per_class.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(result.models) * len(result.attacks) * C
    assert list(rows[0]) == ["model", "attack", "class_index", "class_name", "accuracy", "n"]
    assert rows[0]["class_name"] == "class0" and int(rows[0]["n"]) == N // C
    acc = result.class_accuracy("student", "fgsm")
    got = [float(r["accuracy"]) for r in rows if r["model"] == "student" and r["attack"] == "fgsm"]
    np.testing.assert_allclose(got, acc)
    js = strict_json(out / "per_class.json")
    assert isinstance(js, list) and len(js) == len(rows) and js[5]["class_index"] == 5


def test_confusion_and_targets(written, result):
    out, _ = written
    with open(out / "confusion_teacher_pgd20.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["true\\predicted"] + NAMES
    cm = np.array([[int(v) for v in r[1:]] for r in rows[1:]])
    np.testing.assert_array_equal(cm, result.confusion("teacher", "pgd20"))
    assert cm.sum() == N
    np.testing.assert_array_equal(cm.sum(1), np.bincount(result.y, minlength=C))
    with open(out / "attack_targets.csv", newline="") as fh:
        targets = list(csv.DictReader(fh))
    assert {(t["model"], t["attack"]) for t in targets} == {(m, a) for m in result.models
                                                             for a in ("fgsm", "pgd20")}


def test_report_md_and_settings(written, result):
    out, _ = written
    md = (out / "report.md").read_text()
    assert "| Model | Clean Avg | Clean Worst | Clean NSD | FGSM Avg" in md
    assert "| teacher |" in md and "| student |" in md
    assert "PGD-20: 20 steps of 2/255" in md and "(8/255)" in md and f"Examples: {N}" in md
    for fig in ("per_class.png", "confusion_student_fgsm.png"):
        assert f"]({fig})" in md
    settings = strict_json(out / "settings.json")
    assert settings["n_examples"] == N and settings["pgd20"]["steps"] == 20 and settings["class_names"] == NAMES
    npz = np.load(out / "predictions.npz")
    np.testing.assert_array_equal(npz["pred__student__fgsm"], result.predictions[("student", "fgsm")])


def test_nan_nsd_becomes_null(tmp_path):
    y = np.arange(20) % C
    wrong = (y + 1) % C
    res = EvaluationResult(y=y, num_classes=C, models=["m"], attacks=["pgd20"], correct={("m", "pgd20"): wrong == y},
                           predictions={("m", "pgd20"): wrong},
                           settings=attack_settings(8 / 255, 0, 20, 8, "cpu", ["pgd20"], C))
    write_evaluation(res, tmp_path)
    data = strict_json(tmp_path / "metrics.json")
    assert data["m.pgd20.avg"] == 0.0 and data["m.pgd20.nsd"] is None
    assert "| m | 0.00 | 0.00 | – |" in summary_table(res)


def test_worst10_column_for_many_classes():
    y = np.arange(200) % 100
    res = EvaluationResult(y=y, num_classes=100, models=["m"], attacks=["clean"], correct={("m", "clean"): y < 50},
                           predictions={("m", "clean"): y}, settings={})
    assert "Clean Worst-10%" in summary_table(res)


def test_class_names_length_checked(result, tmp_path):
    with pytest.raises(ValueError, match="class_names"):
        write_evaluation(result, tmp_path, NAMES[:3])
