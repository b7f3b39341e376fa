"""ferd.core.environment: every variable ferd computes with or records is checked before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferd.cli import main
from ferd.core.environment import VARIABLES, check
from support.faultlog import record

CI = str(Path(__file__).resolve().parents[2] / "params" / "ci.yaml")

BAD = {
    "FERD_KILL_AT": "student.iteration", "FERD_STOP_AT": "nowhere:1",
    "WORLD_SIZE": "abc", "RANK": "-1", "LOCAL_RANK": "0x1",
    "FERD_GIT_COMMIT": 'abc\n"injected": 1', "FERD_IMAGE_DIGEST": "zzz",
}
GOOD = {
    "FERD_KILL_AT": "student.iteration:2@1", "FERD_STOP_AT": "checkpoint.saved:1",
    "WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "0",
    "FERD_GIT_COMMIT": "51a1aad", "FERD_IMAGE_DIGEST": "sha256:" + "ab" * 32,
}


def test_every_checked_variable_has_a_case():
    assert set(BAD) == set(GOOD) == set(VARIABLES)


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_malformed_variable_is_one_line_naming_it_status_2_before_any_work(name, monkeypatch, capsys):
    monkeypatch.setenv(name, GOOD[name])
    check()
    monkeypatch.setenv(name, BAD[name])
    assert main(["params", "check", "--params", CI]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ferd params: error: {name}=") and err.count("\n") == 1 and "expected" in err, err
    record(f"${name} malformed", repr(BAD[name]), True, 0)


def test_an_empty_variable_means_unset(monkeypatch):
    monkeypatch.delenv("FERD_SIGNING_KEY", raising=False)
    for name in VARIABLES:
        monkeypatch.setenv(name, "")
    check()


@pytest.mark.parametrize("value", ["", "  "])
def test_the_environment_check_refuses_a_set_but_empty_signing_key(value, monkeypatch):
    monkeypatch.setenv("FERD_SIGNING_KEY", "secret")
    check()
    monkeypatch.setenv("FERD_SIGNING_KEY", value)
    with pytest.raises(ValueError, match="^FERD_SIGNING_KEY is set but empty"):
        check()
