"""The comparison as a Kubeflow pipeline (teacher → ParallelFor over arms → report): golden file and a local run."""

from __future__ import annotations

import json
import warnings

import pytest
import yaml

from ferd.cli import main
from support.images import image_of

pytestmark = pytest.mark.usefixtures("single_thread")


def test_compiled_compare_pipeline_is_current(tmp_path):
    from ferd.pipeline.compare_dag import COMPILED_COMPARE, compile_compare

    image = image_of(COMPILED_COMPARE)
    assert image.source.startswith("built by `make image` from commit ")  # pinned, and where it comes from
    got = compile_compare(tmp_path / "c.yaml", image=image).read_text()
    assert got == COMPILED_COMPARE.read_text(), \
        "stale: ferd pipeline compile-compare --preset compare-smoke --image-from-build"
    doc = next(yaml.safe_load_all(got))
    loop = next(v for k, v in doc["root"]["dag"]["tasks"].items() if k.startswith("for-loop"))
    assert "params_json" in json.dumps(loop["parameterIterator"]["items"])  # the arms are compiled in
    assert doc["root"]["dag"]["tasks"]["compare-report"]["inputs"]["artifacts"]["runs"]


@pytest.mark.slow
def test_parallel_for_runs_locally_and_matches_ferd_compare(tmp_path, monkeypatch):
    from kfp import local

    from ferd.pipeline.compare_dag import build_compare_pipeline

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml.safe_dump({"base": "ci", "students": ["cnn-8"], "seeds": [0, 1],
                                      "methods": {"ferd": [], "zskt": ["method=zskt"]}}))
    assert main(["compare", "--preset", str(preset), "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"),
               raise_on_error=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(base image|no effect in the current local runner).*")
        build_compare_pipeline(preset)(gpu_device="cpu")
    (report,) = (tmp_path / "kfp").glob("ferd-compare-*/compare-report/report")
    got = json.loads((report / "comparison.json").read_text())
    want = json.loads((tmp_path / "cli" / "comparison.json").read_text())
    strip = lambda d: {k: v for k, v in d.items() if "seconds" not in k}  # noqa: E731
    assert {k: strip(v) for k, v in got["runs"].items()} == {k: strip(v) for k, v in want["runs"].items()}
    assert (report / "comparison.md").read_text().count("| zskt | cnn-8 | 2 |") == 2  # table + delta rows
