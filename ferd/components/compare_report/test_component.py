"""The comparison's report component (fan-in of the ParallelFor): interface (local run: tests/e2e/test_pipeline_compare.py)."""

from ferd.components.compare_report.component import compare_report
from ferd.components.conftest import check_component


def test_interface():
    check_component(compare_report, inputs={"preset_json": "String", "teacher": "system.Model@0.0.1",
                                            "runs": "system.Artifact@0.0.1"},
                    outputs={"report": "system.Artifact@0.0.1", "metrics": "system.Metrics@0.0.1"},
                    library="ferd.compare.report")
