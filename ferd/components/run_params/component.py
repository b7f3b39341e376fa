"""Kubeflow component that resolves a pipeline run's parameters: the typed run-time values, then the overrides."""

from kfp import dsl

from ferd.components import base_image


@dsl.component(base_image=base_image(), install_kfp_package=False)
def run_params(params_yaml: str, overrides: list, teacher_source: str, teacher_sha256: str, eps: float, gamma: float,
               lambda1: float, lambda2: float, lambda_uni: float) -> list:
    """The overrides every stage of this run gets (``ferd.stages.RUN_TIME_PARAMS``: teacher source and sha256,
    ε, γ, λ1, λ2, λ_uni as typed pipeline parameters, then ``overrides``), checked against the whole
    configuration before any stage starts."""
    from ferd.stages import run_time_overrides

    return run_time_overrides(params_yaml, list(overrides), {
        "teacher_source": teacher_source, "teacher_sha256": teacher_sha256, "eps": eps, "gamma": gamma,
        "lambda1": lambda1, "lambda2": lambda2, "lambda_uni": lambda_uni})
