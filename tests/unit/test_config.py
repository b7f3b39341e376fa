"""Parameters are refused before any work, with a message naming the key and what it expects."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferd.settings.config import FerdConfig
from ferd.core.params_io import ConfigError
from ferd.plan.resolve import load_config, parse_config


def test_paper_defaults():
    c = FerdConfig()
    assert (c.epochs, c.synthesis.iterations, c.distill.iterations) == (220, 200, 400)
    assert (c.synthesis.lambda_adv, c.synthesis.lambda_bn, c.synthesis.lambda_oh, c.synthesis.lambda_uni) == (1, 5, 1, 5)
    # the student side is RSLAD's, not Eq. 11's printed 5/6, 1/6 and γ = 0.5 (README; paper-as-printed.yaml has those)
    assert c.distill.utae.gamma == 0.0 and (c.distill.lambda1, c.distill.lambda2) == pytest.approx((1 / 6, 5 / 6))
    assert (c.distill.utae.steps, c.distill.utae.random_start, c.distill.utae.target) == (10, "gaussian", "student")
    assert c.threat.eps == pytest.approx(8 / 255)
    assert c.synthesis.generator.lr == 2e-3 and c.distill.lr == 0.1 and c.distill.weight_decay == 5e-4


@pytest.mark.parametrize("data, key", [
    ({"synthesis": {"lambda_uni": -1}}, "synthesis.lambda_uni"),
    ({"distill": {"utae": {"gamma": -0.1}}}, "distill.utae.gamma"),
    ({"threat": {"eps": 1.5}}, "threat.eps"),
    ({"threat": {"eps": 0}}, "threat.eps"),
    ({"distill": {"batch_size": 0}}, "distill.batch_size"),
    ({"epochs": 2, "rounds": 3}, "rounds"),
    ({"student": {"arch": "resnet9000"}}, "student.arch"),
    ({"dataset": "mnist"}, "dataset"),
    ({"synthesis": {"lamda_uni": 1}}, "synthesis.lamda_uni: unknown key"),
    ({"epochs": "many"}, "epochs"),
    ({"synthesis": {"reweighting": {"strategy": "cubic"}}}, "synthesis.reweighting.strategy"),
])
def test_bad_parameters_name_the_key(data, key):
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert key in str(exc.value)


def test_load_with_overrides(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text("dataset: digits\nsynthesis:\n  lambda_uni: 2\n")
    c = load_config(p, ["synthesis.lambda_uni=3", "distill.utae.target=student"])
    assert c.synthesis.lambda_uni == 3 and c.distill.utae.target == "student" and c.num_classes == 10
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(p, ["nonsense"])
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("evaluation, own", [
    ({"attacks": ["clean", "aa"], "aa_examples": 100}, True),
    ({"attacks": ["clean", "aa"], "aa_examples": 100, "n_examples": 1000}, True),
    ({"attacks": ["clean", "aa"], "aa_examples": 1000, "n_examples": 1000}, False),
    ({"attacks": ["clean", "aa"], "aa_examples": 2000, "n_examples": 1000}, False),
    ({"attacks": ["clean", "aa"]}, False),
    ({"attacks": ["clean", "pgd20"], "aa_examples": 100}, False),
])
def test_autoattack_runs_on_its_own_subset_only_when_that_subset_is_smaller(evaluation, own):
    assert parse_config({"evaluation": evaluation}).evaluation.aa_on_own_subset is own


def test_rules_across_groups_are_the_resolvers_and_reported_together():
    from ferd.plan.resolve import resolve
    from ferd.settings.config import FerdConfig

    data = {"epochs": 2, "rounds": 3, "distill": {"warmup_epochs": 2}, "teacher": {"mean": [0.5]}}
    cfg = FerdConfig.model_validate(data)  # each field and group is valid on its own
    with pytest.raises(ConfigError) as exc:
        resolve(cfg)
    assert str(exc.value) == ("invalid parameters: rounds: expected at most epochs (2), got 3; distill.warmup_epochs: "
                              "expected fewer than epochs (2), got 2; teacher.std: expected a list as teacher.mean is "
                              "given (both or neither)")
    with pytest.raises(ConfigError, match=r"^invalid parameters: rounds: .*; distill\.warmup_epochs: .*; teacher\.std"):
        parse_config(data)


def test_the_pgd_step_follows_eps_unless_given_and_must_let_pgd20_cross_it():
    """No step with an ε other than 8/255: ε/4, as ``ferd evaluate`` scales it; a given step is kept; 8/255 (or the
    rounded decimal a preset writes) keeps 2/255 to the bit; a step too small for 20 steps to cross ε is refused."""
    from ferd.evaluation.runner import pgd_step_size
    from ferd.settings.config import ThreatConfig

    assert ThreatConfig(eps=0.2).step == 0.05 == pgd_step_size(0.2)
    assert ThreatConfig(eps=0.2, step=0.02).step == 0.02
    assert ThreatConfig(eps=0.0313725490196).step == ThreatConfig().step == 2 / 255 == pgd_step_size(8 / 255)
    with pytest.raises(ConfigError, match=r"^invalid parameters: threat\.step: expected at least ε/20 = 0\.01 with "
                                          r"threat\.eps = 0\.2, so that PGD-20 reaches the edge of the ε-ball "
                                          r"\(ε/4 = 0\.05 is the usual step\), got 0\.007843$"):
        parse_config({"threat": {"eps": 0.2, "step": 2 / 255}})
    assert parse_config({"threat": {"eps": 0.2, "step": 0.01}}).threat.step == 0.01  # exactly ε/20: it reaches
    embedded = Path(__file__).resolve().parents[2] / "params" / "embedded.yaml"  # pins step 2/255 for its 8/255
    assert load_config(embedded, ["threat.eps=0.1"]).threat.step == 0.025  # a new ε drops the file's step
    assert load_config(embedded, ["threat.eps=0.1", "threat.step=0.02"]).threat.step == 0.02
    assert load_config(embedded).threat == load_config(embedded, ["threat.eps=0.0313725490196"]).threat
    assert load_config(embedded, ["threat.eps=1e-1"]).threat.step == 0.025  # YAML 1.1 reads 1e-1 as text
    from ferd.compare.config import merge_overrides  # a compare preset's child with a new ε drops the parent's step

    assert merge_overrides(["threat.eps=0.047", "threat.step=0.0117", "epochs=5"], ["threat.eps=0.1"]) == [
        "threat.eps=0.1", "epochs=5"]


def test_a_key_given_twice_is_refused_naming_its_line():
    """YAML 1.1 keeps the last of two equal keys silently (DVC refuses the file); a `<<:` merge may repeat a key."""
    from ferd.core.params_io import load_yaml

    with pytest.raises(ConfigError, match=r"^p\.yaml: not valid parameter YAML at line 3, column 3: 'lambda_uni' "
                                          r"given twice; expected each key once$"):
        load_yaml("synthesis:\n  lambda_uni: 5\n  lambda_uni: 0\n", "p.yaml")
    assert load_yaml("a: 1\n<<: {a: 2, b: 3}\n", "p.yaml") == {"a": 1, "b": 3}


@pytest.mark.parametrize("value", ["050", "1:30", "1_000", "0b101", "on", "off", "yes", "No"])
def test_a_scalar_yaml_1_1_and_1_2_read_differently_is_refused_naming_its_line(value):
    """ferd reads YAML 1.1 (PyYAML), DVC 1.2: ``050`` would be 40 for ferd and 50 for DVC's change detection."""
    from ferd.core.params_io import load_yaml

    with pytest.raises(ConfigError, match="at line 2.*YAML 1.1 .ferd. and 1.2 .DVC. read it differently"):
        load_yaml(f"seed: 1\nevaluation: {{n_examples: {value}}}\n", "params.yaml")
    assert load_yaml(f"x: '{value}'", "q") == {"x": value}  # quoted: text in both


def test_deep_nesting_is_one_line_not_a_recursion_error():
    from ferd.core.params_io import load_yaml

    with pytest.raises(ConfigError, match="nested deeper than 32 levels"):
        load_yaml("seed: " + "[" * 400 + "]" * 400, "deep.yaml")


@pytest.mark.parametrize("override", ["distill.lr=.inf", "synthesis.lambda_uni=.nan", "threat.eps=-.inf"])
def test_a_non_finite_hyper_parameter_is_refused(override):
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config(None, [override])


@pytest.mark.parametrize("overrides, field", [
    (["teacher.source=https://example.org/t.safetensors"], "teacher.sha256: required for a URL source"),
    (["teacher.source=s3://bucket/../t"], "teacher.source: expected s3://bucket/key naming one object"),
    (["teacher.source=s3://bucket"], "teacher.source: expected s3://bucket/key naming one object"),
])
def test_a_teacher_source_the_stage_would_refuse_is_refused_when_read(overrides, field):
    """``ferd params check`` refuses what teacher-fetch would (the embedded default's dataset is digits)."""
    with pytest.raises(ConfigError, match=field):
        load_config(None, overrides)
    load_config(None, ["teacher.source=https://example.org/t.safetensors", "teacher.allow_unverified_url=true"])
