"""Whole-record encryption: exact round trips (field order included) and binding of kept fields."""

from __future__ import annotations

from typing import Any

import pytest

from kmsbeam import AuthenticationError, ConfigurationError, DataKeyCache, RecordDecryptor, RecordEncryptor, RecordError

RECORD = {"name": "Ada", "id": 7, "ssn": "123-45-6789", "contact": {"email": "a@example.com"}, "n": None}


@pytest.mark.parametrize("encoding", ["text", "bytes"])
def test_round_trip_keeps_order_and_kept_fields(source: Any, encoding: str) -> None:
    out = RecordEncryptor(source, keep=["id"], encoding=encoding).encrypt(RECORD)
    assert list(out) == ["id", "kmsbeam_record"] and out["id"] == 7
    back = RecordDecryptor(source, keep=["id"]).decrypt(out)
    assert back == RECORD and list(back) == list(RECORD)


def test_changed_kept_field_or_moved_payload_fails(source: Any) -> None:
    enc = RecordEncryptor(source, keep=["id"])
    a, b = enc.encrypt(RECORD), enc.encrypt(dict(RECORD, id=8))
    dec = RecordDecryptor(source, keep=["id"], cache=DataKeyCache())
    for bad in (dict(a, id=8), dict(a, kmsbeam_record=b["kmsbeam_record"])):
        with pytest.raises(AuthenticationError):
            dec.decrypt(bad)
    with pytest.raises(AuthenticationError):  # decryptor told of other kept fields
        RecordDecryptor(source, keep=[]).decrypt({"kmsbeam_record": a["kmsbeam_record"]})
    with pytest.raises(AuthenticationError):
        RecordDecryptor(source, keep=["id"], payload_field="other").decrypt({"id": 7, "other": a["kmsbeam_record"]})


def test_record_errors_and_configuration(source: Any) -> None:
    enc = RecordEncryptor(source, keep=["id"])
    with pytest.raises(RecordError, match="missing field: id"):
        enc.encrypt({"name": "x"})
    with pytest.raises(RecordError, match="already has a field"):
        enc.encrypt({"id": 1, "kmsbeam_record": "x"})
    with pytest.raises(RecordError, match="wrong type"):
        enc.encrypt({"id": 1, "s": {1}})
    with pytest.raises(RecordError, match="missing field: kmsbeam_record"):
        RecordDecryptor(source, keep=["id"]).decrypt({"id": 1})
    for kwargs in ({"keep": ["a.b"]}, {"keep": ["a", "a"]}, {"keep": ["p"], "payload_field": "p"}):
        with pytest.raises(ConfigurationError):
            RecordEncryptor(source, **kwargs)
