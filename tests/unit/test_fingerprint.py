"""The one parameter fingerprint (ferd.plan.fingerprint): scopes, what is in none, dumped configs."""

from __future__ import annotations

import hashlib
import json

import pytest

from ferd.plan.resolve import load_config
from ferd.plan.fingerprint import NOT_IN_ANY_SCOPE, SCOPES, params_fingerprint, scope_keys, scoped_params


def _cfg(*changes):
    return load_config("params/ci.yaml", list(changes))


def test_fingerprint_is_the_sha256_of_the_scoped_parameters_by_hand():
    cfg = _cfg()
    expected = {"seed": 0, "dataset": "digits", "threat.eps": cfg.threat.eps,
                "teacher": cfg.teacher.model_dump(mode="json")}
    assert scoped_params(cfg, "teacher") == expected
    assert params_fingerprint(cfg, "teacher") == hashlib.sha256(
        json.dumps(expected, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("change, changed", [
    ("synthesis.lambda_uni=2", {"synthesis", "pool", "distillation", "evaluation"}),
    ("distill.lr=0.05", {"distillation", "evaluation"}),
    ("distill.utae.steps=3", {"synthesis", "pool", "distillation", "evaluation"}),
    ("evaluation.n_examples=20", {"evaluation", "teacher-evaluation"}),
    ("threat.step=0.01", {"synthesis", "pool", "distillation", "evaluation", "teacher-evaluation"}),
    ("teacher.train.epochs=3", set(SCOPES)),
    ("seed=1", set(SCOPES)),
    ("device=cuda", set()), ("checkpoint_every=2", set()), ("data_root=/elsewhere", set()),
    ("baseline.cmi.lr=0.01", set()),  # FERD reads no baseline group
])
def test_each_scope_covers_exactly_what_its_result_depends_on(change, changed):
    base, other = _cfg(), _cfg(change)
    assert {s for s in SCOPES if params_fingerprint(base, s) != params_fingerprint(other, s)} == changed


def test_every_parameter_is_in_a_scope_or_declared_result_free():
    top = set(_cfg().model_dump())
    covered = {k.split(".")[0] for keys in SCOPES.values() for k in keys}
    assert top == covered | set(NOT_IN_ANY_SCOPE)
    assert not covered & set(NOT_IN_ANY_SCOPE)


def test_a_dumped_config_has_the_same_fingerprint():
    cfg = _cfg()
    dumped = json.loads(json.dumps(cfg.model_dump(mode="json")))
    assert all(params_fingerprint(dumped, s) == params_fingerprint(cfg, s) for s in SCOPES)
    with pytest.raises(ValueError, match="scope"):
        params_fingerprint(cfg, "training")


def test_a_baseline_run_depends_on_its_own_group_and_the_a8_conversion_only():
    rounds = {"synthesis", "pool", "distillation", "evaluation"}
    for change, changed in (("baseline.cmi.lr=0.01", rounds), ("baseline.robust.lambda_adv=0.5", rounds),
                            ("baseline.fast.lr=0.01", set())):
        base, other = _cfg("method=cmi"), _cfg("method=cmi", change)
        assert {s for s in SCOPES if params_fingerprint(base, s) != params_fingerprint(other, s)} == changed, change
    assert "baseline.cmi" in scope_keys("synthesis", "cmi") and "baseline" not in scope_keys("synthesis", "ferd")
