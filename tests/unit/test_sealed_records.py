"""Sealed JSON records (:func:`ferd.core.provenance.read_sealed`) and the signing key (issue 34): a record ferd
reads back is an object with every required field of its type, sealed, and signed under the key."""

from __future__ import annotations

import json

import pytest

from ferd.core.provenance import SIGNATURE_KEY, read_sealed, seal, signing_key
from ferd.stages.run import ELAPSED_FILE, RunRecordError, elapsed_before

FIELDS = {"next_round": int, "seconds": (int, float)}


def _write(path, data) -> None:
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("value", ["", " ", "\t\n"])
def test_a_set_but_empty_signing_key_is_an_error(monkeypatch, value):
    monkeypatch.setenv("FERD_SIGNING_KEY", value)
    with pytest.raises(ValueError, match="FERD_SIGNING_KEY is set but empty: expected the signing secret"):
        signing_key()


def test_an_unset_signing_key_means_no_signing(monkeypatch):
    monkeypatch.delenv("FERD_SIGNING_KEY", raising=False)
    assert signing_key() is None
    monkeypatch.setenv("FERD_SIGNING_KEY", "k")
    assert signing_key() == b"k"


def test_a_sealed_record_reads_back(tmp_path, monkeypatch):
    monkeypatch.setenv("FERD_SIGNING_KEY", "k")
    _write(tmp_path / "r.json", seal({"next_round": 1, "seconds": 2.5}))
    assert read_sealed(tmp_path / "r.json", FIELDS)["seconds"] == 2.5


@pytest.mark.parametrize("forge, message", [
    (lambda r: {k: v for k, v in r.items() if k != "manifest_sha256"}, "no manifest_sha256: not sealed by ferd"),
    (lambda r: {**r, "seconds": 9.0}, "manifest_sha256 does not match the content"),
    (lambda r: {k: v for k, v in r.items() if k != SIGNATURE_KEY}, "unsigned, and FERD_SIGNING_KEY is set"),
    (lambda r: [r], "expected a JSON object, got a JSON list"),
])
def test_a_changed_or_unsealed_record_is_refused(tmp_path, monkeypatch, forge, message):
    monkeypatch.setenv("FERD_SIGNING_KEY", "k")
    _write(tmp_path / "r.json", forge(seal({"next_round": 1, "seconds": 2.5})))
    with pytest.raises(ValueError, match=message):
        read_sealed(tmp_path / "r.json", FIELDS)


def test_a_record_signed_under_another_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FERD_SIGNING_KEY", "one")
    _write(tmp_path / "r.json", seal({"next_round": 1, "seconds": 2.5}))
    monkeypatch.setenv("FERD_SIGNING_KEY", "two")
    with pytest.raises(ValueError, match="signature does not match"):
        read_sealed(tmp_path / "r.json", FIELDS)


@pytest.mark.parametrize("record, message", [
    ({"seconds": 1.0}, "field 'next_round' missing"),
    ({"next_round": True, "seconds": 1.0}, "field 'next_round' must be int, got bool"),
    ({"next_round": 1, "seconds": "1"}, "field 'seconds' must be int or float, got str"),
])
def test_a_sealed_record_without_its_fields_is_refused(tmp_path, monkeypatch, record, message):
    monkeypatch.delenv("FERD_SIGNING_KEY", raising=False)
    _write(tmp_path / "r.json", seal(record))
    with pytest.raises(ValueError, match=f"r.json: {message}"):
        read_sealed(tmp_path / "r.json", FIELDS)


@pytest.mark.parametrize("text", ["{not json", "\xff\xfe"])
def test_an_unreadable_record_is_one_line(tmp_path, text):
    (tmp_path / "r.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match=r"r.json: not a JSON record \("):
        read_sealed(tmp_path / "r.json", FIELDS)


@pytest.mark.parametrize("seconds", [float("nan"), -1.0, float("inf")])
def test_elapsed_json_resealed_with_an_impossible_time_is_refused(tmp_path, monkeypatch, seconds):
    monkeypatch.delenv("FERD_SIGNING_KEY", raising=False)
    (tmp_path / ELAPSED_FILE).write_text(json.dumps(seal({"next_round": 1, "seconds": seconds})))
    with pytest.raises(RunRecordError, match="field 'seconds' must be finite and >= 0"):
        elapsed_before(tmp_path)


def test_no_elapsed_json_is_a_new_run(tmp_path):
    assert elapsed_before(tmp_path) == 0.0
