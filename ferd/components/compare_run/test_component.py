"""The comparison's run component (one ParallelFor iteration): interface (local run: tests/e2e/test_pipeline_compare.py)."""

from ferd.components.compare_run.component import compare_run
from ferd.components.conftest import check_component


def test_interface():
    check_component(compare_run, inputs={"arm": "Dict", "device": "String", "teacher": "system.Model@0.0.1"},
                    outputs={"run": "system.Artifact@0.0.1"}, library="ferd.compare.runner")
