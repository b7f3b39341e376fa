"""The comparison as a Kubeflow pipeline: teacher → ``ParallelFor`` over the arms → report.

Each arm (method × student × seed of a preset, ``params/compare-*.yaml``) is one ``compare_run``
task running a whole ``ferd run`` with the shared teacher; the report task collects every run
(``dsl.Collected``) and writes the same comparison.md / .csv / .json and plots as ``ferd compare``.
The arms' resolved parameters are compiled in (the ``ParallelFor`` items), so the image needs no
parameter files. Cluster settings come from ``ferd/pipeline/cluster.yaml`` like the main DAG's: the
teacher task is configured as ``teacher_fetch``, the runs as ``distillation`` (GPU nodes), the
report as ``evaluation``. ``ferd pipeline compile-compare --preset P`` writes
``pipeline/compare_pipeline.yaml`` (committed for ``compare-smoke``; a test fails when stale).
"""

import json
from pathlib import Path

from kfp import compiler, dsl

from ferd.components.compare_report.component import compare_report
from ferd.components.compare_run.component import compare_run
from ferd.components.compare_teacher.component import compare_teacher
from ferd.compare.config import arms, load_compare, run_config, teacher_config
from ferd.components import use_image
from ferd.core.image import PLACEHOLDER, Image, resolve
from ferd.pipeline.dag import ClusterSettings, _configure, image_note, load_cluster

COMPILED_COMPARE = Path("pipeline") / "compare_pipeline.yaml"


def arm_items(preset: "str | Path") -> list[dict]:
    """The ``ParallelFor`` items: one dict per arm with its resolved parameters as JSON text (kfp
    parameters cannot hold ``null``, which unset fields such as ``data_root`` are)."""
    cc = load_compare(preset)
    return [{"method": a.method, "student": a.student, "seed": a.seed,
             "params_json": json.dumps(run_config(cc, a).model_dump(mode="json"), sort_keys=True)}
            for a in arms(cc)]


def build_compare_pipeline(preset: "str | Path" = "compare-smoke", cluster: "ClusterSettings | None" = None,
                           image: "Image | None" = None):
    cluster = cluster or load_cluster()
    cc = load_compare(preset)
    items = arm_items(preset)
    teacher_json = json.dumps(teacher_config(cc).model_dump(mode="json"))
    preset_json = json.dumps(cc.model_dump(mode="json"))
    ref = image.ref if image else PLACEHOLDER

    @dsl.pipeline(name="ferd-compare", pipeline_root=cluster.pipeline_root,
                  description=f"FERD against baselines and ablations: {len(items)} runs "
                              f"({', '.join(cc.methods)} × {cc.students} × seeds {cc.seeds}), equal "
                              f"{cc.budget}. {image_note(image)}Preset: {Path(str(preset)).stem}")
    def compare_pipeline(gpu_device: str = cluster.gpu.device):
        teacher = _configure(use_image(compare_teacher, ref)(params_json=teacher_json, evaluate=cc.evaluate_teacher), "teacher_fetch", cluster,
                             "shared teacher").outputs["teacher"]
        with dsl.ParallelFor(items=items, parallelism=0) as arm:
            run = _configure(use_image(compare_run, ref)(arm=arm, device=gpu_device, teacher=teacher), "distillation", cluster,
                             "run")
        _configure(use_image(compare_report, ref)(preset_json=preset_json, teacher=teacher,
                                  runs=dsl.Collected(run.outputs["run"])), "evaluation", cluster, "report")

    return compare_pipeline


def compile_compare(out: "str | Path" = COMPILED_COMPARE, preset: "str | Path" = "compare-smoke",
                    cluster: "str | Path | ClusterSettings | None" = None, image: "Image | None" = None) -> Path:
    """Compile the comparison's DAG to ``out``, every task on ``image`` (pinned by digest, or refused)."""
    image = image or resolve()
    settings = cluster if isinstance(cluster, ClusterSettings) else load_cluster(*(cluster and [cluster] or []))
    compiler.Compiler().compile(build_compare_pipeline(preset, settings, image), package_path=str(out))
    return Path(out)
