"""The comparison's teacher component: interface (its local run is in tests/e2e/test_pipeline_compare.py)."""

from ferd.components.compare_teacher.component import compare_teacher
from ferd.components.conftest import check_component


def test_interface():
    check_component(compare_teacher, inputs={"params_json": "String", "evaluate": "Boolean"},
                    outputs={"teacher": "system.Model@0.0.1"},
                    library="ferd.compare.runner")
