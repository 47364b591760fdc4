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


def _forge_record(source: Any, encrypted: dict[str, Any], plaintext: bytes, binding: bytes) -> bytes:
    """A payload sealed with the real data key of ``encrypted``: it authenticates."""
    from kmsbeam.formats.envelope import RECORD_V1, Sealer, parse

    parsed = parse(encrypted["kmsbeam_record"], RECORD_V1)
    dek = source.decrypt_data_key(parsed.wrapped)
    return Sealer(RECORD_V1, dek, parsed.wrapped).seal(plaintext, "kmsbeam_record", binding)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("0b0202696401" "0c" "016106" + "0b010162010c",
         "invalid value encoding (field kmsbeam_record): the kept marker is only a value of a record payload's top-level map"),
        ("0a00", "invalid value encoding (field kmsbeam_record): a record payload is a map"),
        ("0b0202696401" "0c" "0161" "8208" "03" + "7f" * 1025,
         "value too large (field kmsbeam_record): an int holds at most 1024 bytes"),
        ("0b0202696401" "0c" "02696401" "0c",
         "invalid value encoding (field kmsbeam_record): a map key appears twice"),
    ],
    ids=["nested-kept", "not-a-map", "big-int", "duplicate-key"],
)  # fmt: skip
def test_authentic_payload_the_codec_refuses_fails_its_record_only(
    source: Any, payload: str, reason: str
) -> None:
    from kmsbeam.formats.codec import encode_value

    enc = RecordEncryptor(source, keep=["id"], encoding="bytes")
    good = enc.encrypt({"id": 7, "a": 1})
    forged = {"id": 7, "kmsbeam_record": _forge_record(source, good, bytes.fromhex(payload),
                                                        encode_value({"id": 7}))}  # fmt: skip
    dec = RecordDecryptor(source, keep=["id"], cache=DataKeyCache())
    with pytest.raises(RecordError) as info:
        dec.decrypt(forged)
    assert str(info.value) == reason and not isinstance(info.value, AuthenticationError)
    assert dec.decrypt(good) == {"id": 7, "a": 1}


def test_encrypt_refuses_records_the_decoder_would_refuse(source: Any) -> None:
    from kmsbeam.formats.codec import KEPT

    deep: Any = 1
    for _ in range(63):
        deep = [deep]
    enc = RecordEncryptor(source, keep=["id"])
    back = RecordDecryptor(source, keep=["id"]).decrypt(enc.encrypt({"id": 1, "d": deep}))
    assert back == {"id": 1, "d": deep}  # the record map is level 1: 63 more fit
    with pytest.raises(RecordError, match=r"^value too deep \(field kmsbeam_record\): lists"):
        enc.encrypt({"id": 1, "d": [deep]})
    with pytest.raises(RecordError, match=r"^value too deep \(kept fields\)"):
        enc.encrypt({"id": [deep], "d": 1})
    with pytest.raises(RecordError, match="wrong type"):
        enc.encrypt({"id": 1, "d": KEPT})  # the marker as a value of a field that is not kept
    with pytest.raises(RecordError, match="wrong type"):
        enc.encrypt({"id": 1, "d": [KEPT]})
