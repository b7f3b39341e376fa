"""Kubeflow component: the comparison's report from the collected runs (:func:`ferd.compare.report.write_report`)."""

from typing import List

from kfp import dsl
from kfp.dsl import Artifact, Input, Metrics, Model, Output

from ferd.components import base_image


@dsl.component(base_image=base_image(), install_kfp_package=False)
def compare_report(preset_json: str, teacher: Input[Model], runs: Input[List[Artifact]],
                   report: Output[Artifact], metrics: Output[Metrics]):
    """comparison.md / .csv / .json and per-class plots, as ``ferd compare`` writes them."""
    import json
    import math
    import shutil
    import tempfile
    from pathlib import Path

    from ferd.compare.config import CompareConfig
    from ferd.compare.report import write_report
    from ferd.compare.runner import assemble

    cc = CompareConfig.model_validate(json.loads(preset_json))
    with tempfile.TemporaryDirectory() as tmp:
        out = assemble(Path(tmp) / "compare", Path(teacher.path), [Path(r.path) for r in runs])
        flat = write_report(cc, out)
        Path(report.path).mkdir(parents=True, exist_ok=True)
        for f in out.glob("*.*"):
            shutil.copy(f, Path(report.path) / f.name)
    for key, value in sorted(flat.items()):
        if value is not None and math.isfinite(value):
            metrics.log_metric(key, float(value))
