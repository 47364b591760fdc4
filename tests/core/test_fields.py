"""Field encryption against the real embedded keystore: round trips, tampering, dead-letter causes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from kmsbeam import (
    AuthenticationError,
    DataKeyCache,
    FieldDecryptor,
    FieldEncryptor,
    KeyDisabledError,
    MalformedValueError,
    RecordError,
    open_key_source,
)
from kmsbeam.formats.envelope import from_text, to_text
from kmsbeam.keys.local import shared_engine

RECORD: dict[str, Any] = {
    "id": 42,
    "ssn": "123-45-6789",
    "contact": {"email": "ada@example.com", "phone": "+1 555 0100"},
    "born": dt.date(1990, 2, 3),
    "seen": dt.datetime(2026, 11, 23, 8, 0, 1),
    "balance": Decimal("1234.50"),
    "score": 0.25,
    "vip": True,
    "visits": 17,
    "photo": b"\x89PNG",
    "tags": ["a", {"b": [1, None]}],
    "note": None,
}
ALL = [k for k in RECORD if k not in ("id", "contact")] + ["contact.email", "contact.phone"]


@pytest.mark.parametrize("encoding", ["text", "bytes"])
def test_every_type_round_trips(source: Any, encoding: str) -> None:
    enc = FieldEncryptor(ALL, source, encoding=encoding, context={"ds": "customers"})
    out = enc.encrypt(RECORD)
    kind = str if encoding == "text" else bytes
    assert all(isinstance(out[k], kind) for k in ALL if "." not in k and k != "note")
    assert out["note"] is None and out["id"] == 42 and isinstance(out["contact"]["email"], kind)
    back = FieldDecryptor(ALL, source, context={"ds": "customers"}).decrypt(out)
    assert back == RECORD
    assert [type(back[k]) for k in RECORD] == [type(v) for v in RECORD.values()]
    assert RECORD["contact"]["email"] == "ada@example.com"  # input never mutated


def test_none_encrypted_only_when_asked(source: Any) -> None:
    out = FieldEncryptor(["note"], source, encrypt_none=True).encrypt({"note": None})
    assert isinstance(out["note"], str)
    assert FieldDecryptor(["note"], source).decrypt(out) == {"note": None}


def _sealed(source: Any, **kw: Any) -> tuple[dict[str, Any], FieldDecryptor]:
    record = {"id": 1, "ssn": "123-45-6789", "email": "a@example.com"}
    out = FieldEncryptor(["ssn", "email"], source, bind=["id"], encoding="bytes", **kw).encrypt(record)
    dec = FieldDecryptor(["ssn", "email"], source, bind=["id"], cache=DataKeyCache(), **kw)
    return out, dec


def test_flipping_any_bit_of_any_byte_fails_authentication(source: Any) -> None:
    out, dec = _sealed(source)
    value = out["ssn"]
    for i in range(len(value)):
        for bit in (0x01, 0x80):
            bad = value[:i] + bytes([value[i] ^ bit]) + value[i + 1 :]
            with pytest.raises(AuthenticationError):
                dec.decrypt_value(bad, "ssn", dec_binding(out))


def dec_binding(record: dict[str, Any]) -> bytes:
    from kmsbeam.formats.fields import binding_for
    from kmsbeam.formats.paths import parse_paths

    return binding_for(record, parse_paths(["id"]))


def test_every_text_character_change_fails(source: Any) -> None:
    out, dec = _sealed(source)
    text = to_text(out["ssn"])
    for i in range(len(text)):
        for c in "A_-z=!":
            if c == text[i]:
                continue
            with pytest.raises(AuthenticationError):
                dec.decrypt_value(text[:i] + c + text[i + 1 :], "ssn", dec_binding(out))
    assert from_text(text) == out["ssn"]


def test_truncation_and_extension_fail(source: Any) -> None:
    out, dec = _sealed(source)
    value = out["ssn"]
    for n in range(len(value)):
        with pytest.raises(AuthenticationError):
            dec.decrypt_value(value[:n], "ssn", dec_binding(out))
    with pytest.raises(AuthenticationError):
        dec.decrypt_value(value + b"\x00", "ssn", dec_binding(out))


def test_moving_a_value_to_another_field_or_record_fails(source: Any) -> None:
    out, dec = _sealed(source)
    swapped = dict(out, ssn=out["email"], email=out["ssn"])
    with pytest.raises(AuthenticationError):
        dec.decrypt(swapped)
    other, _ = _sealed(source)
    moved = dict(other, id=2)  # the same field, copied into the record with id 2
    with pytest.raises(AuthenticationError):
        dec.decrypt(moved)


def test_wrong_context_fails(source: Any) -> None:
    out, _ = _sealed(source, context={"ds": "a"})
    for ctx in ({"ds": "b"}, {}, {"ds": "a", "x": "y"}):
        with pytest.raises(AuthenticationError):
            FieldDecryptor(["ssn", "email"], source, bind=["id"], context=ctx, cache=DataKeyCache()).decrypt(out)


def test_wrong_key_from_another_keystore_fails(source: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, _ = _sealed(source)
    monkeypatch.setenv("KMSBEAM_HOME", str(tmp_path / "other"))
    stranger = open_key_source("local:alias/test", create=True)
    with pytest.raises(AuthenticationError):
        FieldDecryptor(["ssn", "email"], stranger, bind=["id"], cache=DataKeyCache()).decrypt(out)


def test_disabled_key_fails_on_both_sides(source: Any) -> None:
    out, dec = _sealed(source)
    shared_engine(source.home).disable_key(source.key_id)
    with pytest.raises(KeyDisabledError):
        dec.decrypt(out)
    with pytest.raises(KeyDisabledError):
        FieldEncryptor(["ssn"], source).encrypt({"ssn": "x"})


def test_missing_field_and_wrong_type_are_record_errors(source: Any) -> None:
    enc = FieldEncryptor(["ssn", "contact.email"], source)
    with pytest.raises(RecordError, match="missing field: contact.email"):
        enc.encrypt({"ssn": "1", "contact": {}})
    with pytest.raises(RecordError, match="wrong type: field ssn"):
        enc.encrypt({"ssn": {1, 2}, "contact": {"email": "x"}})
    with pytest.raises(MalformedValueError):
        FieldDecryptor(["ssn"], source).decrypt({"ssn": "plain text, never encrypted"})
    with pytest.raises(MalformedValueError):
        FieldDecryptor(["ssn"], source).decrypt({"ssn": 12})


def test_configuration_is_checked_up_front(source: Any) -> None:
    from kmsbeam import ConfigurationError

    for kwargs in ({"fields": []}, {"fields": ["a", "a.b"]}, {"fields": ["a"], "bind": ["a"]},
                   {"fields": ["a."]}, {"fields": ["a"], "encoding": "hex"}):  # fmt: skip
        with pytest.raises(ConfigurationError):
            FieldEncryptor(source=source, **kwargs)


def test_rewrapped_values_decrypt_and_swapped_keys_fail(source: Any) -> None:
    from kmsbeam.formats.envelope import FIELD_V1, parse, reheader

    a = FieldEncryptor(["ssn"], source).encrypt(RECORD)["ssn"]
    b = FieldEncryptor(["ssn"], source).encrypt(RECORD)["ssn"]  # another data key
    dec = FieldDecryptor(["ssn"], source, cache=DataKeyCache())
    # a rewrap: the same data key wrapped again; only the header changes
    rewrapped = reheader(a, FIELD_V1, source.rewrap(parse(a, FIELD_V1).wrapped, None, None))
    assert rewrapped != a and rewrapped.endswith(a[-40:])
    assert dec.decrypt_value(rewrapped, "ssn") == RECORD["ssn"]
    # another data key's wrapping under this value's commitment: refused before decrypting
    swapped = reheader(a, FIELD_V1, parse(b, FIELD_V1).wrapped)
    with pytest.raises(AuthenticationError) as info:
        dec.decrypt_value(swapped, "ssn")
    assert str(info.value) == str(AuthenticationError())


# ---- authentic values the codec refuses: one record's failure, never the batch's ----------


def _forge(source: Any, encrypted: dict[str, Any], name: str, plaintext: bytes) -> bytes:
    """A value sealed with the real data key of ``encrypted[name]``: it authenticates."""
    from kmsbeam.formats.envelope import FIELD_V1, Sealer, parse

    parsed = parse(encrypted[name], FIELD_V1)
    dek = source.decrypt_data_key(parsed.wrapped)
    return Sealer(FIELD_V1, dek, parsed.wrapped).seal(plaintext, name)


def _deep_list(depth: int) -> bytes:
    from kmsbeam.formats.codec import write_varint

    enc = b"\x00"
    for _ in range(depth):
        enc = b"\x0a\x01" + write_varint(len(enc)) + enc
    return enc


@pytest.mark.parametrize(
    ("plaintext", "reason"),
    [
        (_deep_list(2_000), "value too deep (field ssn): lists and maps nest at most 64 levels"),
        (b"\x03" + b"\x7f" * 1_000_000, "value too large (field ssn): an int holds at most 1024 bytes"),
        (b"\x09" + b"9" * 1_000_000, "value too large (field ssn): a decimal has at most 1024 characters"),
        (b"\x09" + b"1E+999999999999999999", "value too large (field ssn): a decimal's exponent is from -6176 to 6111"),
        (b"\x0c", "invalid value encoding (field ssn): the kept marker is only a value of a record payload's top-level map"),
        (b"\x0b\x02\x01a\x01\x00\x01a\x01\x00", "invalid value encoding (field ssn): a map key appears twice"),
    ],
    ids=["deep-list", "1MB-int", "huge-decimal", "decimal-exponent", "kept-tag", "duplicate-key"],
)  # fmt: skip
def test_authentic_value_the_codec_refuses_fails_its_record_only(
    source: Any, plaintext: bytes, reason: str
) -> None:
    from kmsbeam import failure_reason

    records = [{"id": i, "ssn": f"900-00-{i:04d}"} for i in range(4)]
    encrypted = FieldEncryptor(["ssn"], source, encoding="bytes").encrypt_batch(records)
    batch = [dict(r) for r in encrypted]
    batch[2]["ssn"] = _forge(source, encrypted[2], "ssn", plaintext)
    dec = FieldDecryptor(["ssn"], source, cache=DataKeyCache())
    out = dec.decrypt_batch(batch)
    assert [out[i] for i in (0, 1, 3)] == [records[i] for i in (0, 1, 3)]
    assert isinstance(out[2], RecordError) and not isinstance(out[2], AuthenticationError)
    assert failure_reason(out[2]) == reason
    with pytest.raises(RecordError) as info:
        dec.decrypt(batch[2])
    assert str(info.value) == reason and info.value.__cause__ is None


def _nest(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (_nest(65), "value too deep (field ssn): lists and maps nest at most 64 levels"),
        (_nest(5_000), "value too deep (field ssn): lists and maps nest at most 64 levels"),
        (10**3000, "value too large (field ssn): an int holds at most 1024 bytes"),
        (Decimal("1E+7000"), "value too large (field ssn): a decimal has at most 1024 characters and an exponent from -6176 to 6111"),
        ("lone \udc80 surrogate", "invalid text (field ssn): a string holds a lone surrogate, not Unicode text"),
    ],
    ids=["65-deep", "5000-deep", "big-int", "big-decimal", "surrogate"],
)  # fmt: skip
@pytest.mark.parametrize("batch", [False, True])
def test_encrypt_refuses_what_the_decoder_would_refuse_per_record(
    source: Any, value: Any, reason: str, batch: bool
) -> None:
    records: list[dict[str, Any]] = [{"id": i, "ssn": f"900-00-{i:04d}"} for i in range(4)]
    records[1] = {"id": 1, "ssn": value}
    enc = FieldEncryptor(["ssn"], source)
    if batch:
        out = enc.encrypt_batch(records)
    else:
        out = []
        for r in records:
            try:
                out.append(enc.encrypt(r))
            except RecordError as exc:
                out.append(exc)
    assert isinstance(out[1], RecordError) and str(out[1]) == reason
    assert out[1].__cause__ is None
    dec = FieldDecryptor(["ssn"], source)
    assert [dec.decrypt(out[i]) for i in (0, 2, 3)] == [records[i] for i in (0, 2, 3)]
