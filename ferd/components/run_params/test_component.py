"""The run_params component: interface, and a local run that resolves (and checks) the typed parameters."""

import pytest
from kfp import dsl

from ferd.components.conftest import run_locally
from ferd.components.run_params.component import run_params
from ferd.stages import RUN_TIME_PARAMS, run_time_overrides, run_time_values


def test_interface():
    types = {"teacher_source": "String", "teacher_sha256": "String", "eps": "Float", "gamma": "Float",
             "lambda1": "Float", "lambda2": "Float", "lambda_uni": "Float"}
    assert set(types) == set(RUN_TIME_PARAMS)
    spec = run_params.component_spec
    assert {k: v.type for k, v in spec.inputs.items()} == {"params_yaml": "String", "overrides": "List", **types}
    assert spec.outputs["Output"].type == "List"


def test_resolves_typed_values_then_overrides_and_checks_them(ci_cfg, ci_params_yaml, tmp_path):
    values = {**run_time_values(ci_cfg), "eps": 0.05, "teacher_sha256": ""}
    got = run_time_overrides(ci_params_yaml, ["seed=3", "threat.eps=0.04"], values)
    assert "threat.eps=0.05" in got and got[-2:] == ["seed=3", "threat.eps=0.04"]
    assert not any(o.startswith("teacher.sha256=") for o in got)  # "" keeps the file's value
    from ferd.stages import config_from_text

    cfg = config_from_text(ci_params_yaml, got)
    assert cfg.threat.eps == 0.04 and cfg.seed == 3  # the overrides list wins
    assert cfg.threat.step == 0.01  # the file's step was for its ε: the run's ε takes ε/4 (ferd.plan.resolve)
    pinned = config_from_text(ci_params_yaml, run_time_overrides(ci_params_yaml, ["threat.step=0.005"], values))
    assert (pinned.threat.eps, pinned.threat.step) == (0.05, 0.005)  # a step given is kept
    same = config_from_text(ci_params_yaml, run_time_overrides(ci_params_yaml, [], run_time_values(ci_cfg)))
    assert same == ci_cfg  # the compiled defaults change nothing
    with pytest.raises(Exception, match="distill.lambda1"):
        run_time_overrides(ci_params_yaml, [], {**values, "lambda1": -1.0})

    @dsl.pipeline(name="run-params-test")
    def p(params_yaml: str, overrides: list):
        run_params(params_yaml=params_yaml, overrides=overrides, **{**run_time_values(ci_cfg), "gamma": 0.25})

    run_locally(p, tmp_path, params_yaml=ci_params_yaml, overrides=["seed=1"])
    (out,) = tmp_path.glob("run-params-test-*/run-params/executor_output.json")
    assert '"distill.utae.gamma=0.25"' in out.read_text().replace("\\", "")
