"""The evaluation component: interface, and a local run on imported artifacts equal to the stage."""

import json
import re


from ferd.components.conftest import check_component, run_locally, stage_pipeline
from ferd.components.evaluation.component import evaluation
from ferd.evaluation.portable import inline_images


def test_interface():
    check_component(evaluation, inputs={"params_yaml": "String", "overrides": "List", "device": "String",
                                        "teacher": "system.Model@0.0.1", "student": "system.Model@0.0.1"},
                    outputs={"metrics": "system.Metrics@0.0.1", "report": "system.Artifact@0.0.1",
                             "summary": "system.Markdown@0.0.1", "confusion": "system.ClassificationMetrics@0.0.1",
                             "html": "system.HTML@0.0.1"})


def test_runs_locally_and_matches_the_stage(tmp_path, ci_cfg, ci_params_yaml, stage_artifacts):
    from ferd.stages import evaluation as evaluate

    a = stage_artifacts

    p = stage_pipeline("evaluation", a, 2, None, "evaluation-test")
    run_locally(p, tmp_path / "kfp", params_yaml=ci_params_yaml, overrides=[])
    (out,) = (tmp_path / "kfp").glob("evaluation-test-*/evaluation/report")
    ref = evaluate(ci_cfg, tmp_path / "ref", teacher=a / "teacher", student=a / "round-1" / "distillation")
    assert json.loads((out / "metrics.json").read_text()) == json.loads(ref.metrics_file.read_text())
    assert (out / "eval" / "report.md").is_file()
    # what the Kubeflow UI draws: report.md as Markdown with its figures inlined (a relative link does not resolve
    # there), the same as one HTML page, the student's confusion matrix under the last attack
    report_md = (out / "eval" / "report.md").read_text()
    (summary,) = (tmp_path / "kfp").glob("evaluation-test-*/evaluation/summary")
    assert summary.read_text() == inline_images(report_md, out / "eval", root=out)
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report_md)
    assert "losses.png" in figures and len(figures) >= 7
    assert summary.read_text().count("](data:image/png;base64,") == len(figures)
    (page,) = (tmp_path / "kfp").glob("evaluation-test-*/evaluation/html")
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table>" in html
    assert html.count('src="data:image/png;base64,') == len(figures) and 'src="' + figures[0] not in html
    names, matrix = ref.confusion("pgd20")
    assert len(names) == len(matrix) == 10 and sum(map(sum, matrix)) == ci_cfg.evaluation.n_examples
    assert ref.evaluated_attacks() == ["clean", "pgd20"]
    assert {"student.clean.avg", "student.pgd20.worst", "teacher.pgd20.nsd"} <= set(ref.metrics)
