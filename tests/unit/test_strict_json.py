"""Every JSON file ferd writes is strict JSON; a metrics file is read back as numbers, null as NaN."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ferd.core.checkpoint import atomic_write_json, read_json_object_or_none
from ferd.core.numbers import is_finite_number, is_number
from ferd.algorithm.run_dir import RunDirError, read_metrics


def _refuse(constant: str) -> None:
    raise ValueError(f"non-finite {constant}")


def test_non_finite_values_are_written_as_null_and_read_back_as_nan(tmp_path):
    path = atomic_write_json(tmp_path / "metrics.json", {"student.pgd20.nsd": float("nan"), "a": float("inf"),
                                                         "b": np.float32(0.5), "c": [float("-inf"), 1]})
    data = json.loads(path.read_text(), parse_constant=_refuse)  # no NaN/Infinity token in the file
    assert data == {"student.pgd20.nsd": None, "a": None, "b": 0.5, "c": [None, 1]}
    path = atomic_write_json(tmp_path / "m.json", {"x": float("nan"), "y": 2})
    back = read_metrics(path)
    assert math.isnan(back["x"]) and back["y"] == 2.0


@pytest.mark.parametrize("text, message", [
    ('{"x": "soon"}', "x: expected a number or null, got 'soon'"),
    ('{"x": true}', "x: expected a number or null, got True"),
    ('[1, 2]', "expected a JSON object, got a JSON list"),
    ('{"x": NaN', "not a readable JSON metrics file"),
])
def test_a_metrics_file_that_is_not_numbers_is_one_line_naming_the_key(text, message, tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(text)
    with pytest.raises(RunDirError, match=rf"metrics.json: {message}"):
        read_metrics(path)


@pytest.mark.parametrize("text", [None, "", "{", "[1, 2]", '"run"', "\xff\xfe{"])
def test_a_record_that_is_missing_or_not_an_object_reads_as_absent(text, tmp_path):
    path = tmp_path / "result.json"
    if text is not None:
        path.write_bytes(text.encode("latin-1"))
    assert read_json_object_or_none(path) is None
    path.write_text('{"a": 1}')
    assert read_json_object_or_none(path) == {"a": 1}


@pytest.mark.parametrize("value, number, finite", [(1, True, True), (0.5, True, True), (True, False, False),
                                                   (float("nan"), True, False), (float("inf"), True, False),
                                                   ("1", False, False), (None, False, False)])
def test_which_json_values_are_numbers(value, number, finite):
    assert (is_number(value), is_finite_number(value)) == (number, finite)
