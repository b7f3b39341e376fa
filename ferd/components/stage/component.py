"""Kubeflow component for any stage of the graph without a folder of its own (:func:`ferd.stages.run_task`)."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from ferd.components import base_image

MAX_INPUTS = 4  # input_0 … input_3


@dsl.component(base_image=base_image(), install_kfp_package=False)
def stage(name: str, params_yaml: str, overrides: list, round_index: int, device: str, flags: list,
          output: Output[Artifact], input_0: Input[Artifact] = None, input_1: Input[Artifact] = None,
          input_2: Input[Artifact] = None, input_3: Input[Artifact] = None):
    """Run the stage ``name`` of ``ferd.plan.graph`` (``round_index`` < 0: a stage that runs once) with its input
    flags ``flags[i]`` bound to ``input_i``, into ``output``: what ``ferd stage <name>`` does. The DAG uses it
    for a stage declared in the graph whose component folder does not exist, so a new stage runs on Kubeflow
    as its module plus its graph entry; a folder of its own adds typed artifacts and UI metadata."""
    from ferd.stages import config_from_text, node_overrides, run_task

    cfg = config_from_text(params_yaml, node_overrides(overrides, device))
    given = (input_0, input_1, input_2, input_3)
    inputs = {flag: (a.path if a is not None else None) for flag, a in zip(flags, given)}
    run_task(cfg, name, None if round_index < 0 else round_index, inputs, output.path)
