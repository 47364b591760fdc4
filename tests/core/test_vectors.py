"""The format vectors pin field value v1 and record v1 forever: any change here is a bug."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsbeam.formats.codec import KEPT, decode_value, encode_value
from kmsbeam.formats.envelope import (
    FIELD_V1,
    RECORD_V1,
    KeyCipher,
    Sealer,
    from_text,
    open_value,
    parse,
    reheader,
    to_text,
)

VECTORS = Path(__file__).parent.parent / "vectors"


def untyped(t: dict[str, Any]) -> Any:
    kind = t["type"]
    simple = {"null": lambda: None, "kept": lambda: KEPT}
    if kind in simple:
        return simple[kind]()
    conv = {
        "bool": lambda: t["value"], "int": lambda: int(t["value"]),
        "float": lambda: float.fromhex(t["value"]), "str": lambda: t["value"],
        "bytes": lambda: bytes.fromhex(t["hex"]),
        "datetime": lambda: dt.datetime.fromisoformat(t["value"]),
        "date": lambda: dt.date.fromisoformat(t["value"]), "decimal": lambda: Decimal(t["value"]),
        "list": lambda: [untyped(i) for i in t["items"]],
        "dict": lambda: {k: untyped(v) for k, v in t["items"]},
    }  # fmt: skip
    return conv[kind]()


def load(name: str) -> list[dict[str, Any]]:
    return list(json.loads((VECTORS / name).read_text())["vectors"])


@pytest.mark.parametrize("v", load("field_v1.json"), ids=lambda v: f"{v['name']}#{v['counter']}")
def test_field_vectors(v: dict[str, Any]) -> None:
    dek, wrapped = bytes.fromhex(v["dek_hex"]), bytes.fromhex(v["wrapped_key_hex"])
    value = untyped(v["value"])
    plaintext = encode_value(value)
    assert plaintext.hex() == v["plaintext_hex"]
    binding = bytes.fromhex(v["binding_hex"])
    if v["bind"]:
        assert encode_value(dict(sorted(untyped(v["bind"]).items()))) == binding
    sealer = Sealer(FIELD_V1, dek, wrapped)
    sealer._count = v["counter"]  # noqa: SLF001 - vectors pin the counter
    sealed = sealer.seal(plaintext, v["name"], binding)
    assert sealed.hex() == v["encrypted_hex"]
    assert to_text(sealed) == v["encrypted_text"] and from_text(v["encrypted_text"]) == sealed
    parsed = parse(v["encrypted_text"], FIELD_V1)
    assert parsed.wrapped == wrapped
    assert decode_value(open_value(parsed, KeyCipher.from_dek(dek), v["name"], binding)) == value


@pytest.mark.parametrize("v", load("record_v1.json"), ids=lambda v: f"record#{v['counter']}")
def test_record_vectors(v: dict[str, Any]) -> None:
    dek, wrapped = bytes.fromhex(v["dek_hex"]), bytes.fromhex(v["wrapped_key_hex"])
    record = untyped(v["record"])
    keep = tuple(v["keep"])
    payload = {k: (KEPT if k in keep else x) for k, x in record.items()}
    assert encode_value(payload, kept=True).hex() == v["plaintext_hex"]
    sealer = Sealer(RECORD_V1, dek, wrapped)
    sealer._count = v["counter"]  # noqa: SLF001
    sealed = sealer.seal(encode_value(payload, kept=True), v["payload_field"], bytes.fromhex(v["binding_hex"]))
    assert sealed.hex() == v["encrypted_hex"]
    parsed = parse(bytes.fromhex(v["encrypted_hex"]), RECORD_V1)
    out = decode_value(open_value(parsed, KeyCipher.from_dek(dek), v["payload_field"], bytes.fromhex(v["binding_hex"])), kept=True)
    assert {k: (record[k] if x is KEPT else x) for k, x in out.items()} == record


@pytest.mark.parametrize("v", load("field_v1.json"), ids=lambda v: f"{v['name']}#{v['counter']}")
def test_vectors_decrypt_from_the_spec_alone(v: dict[str, Any]) -> None:
    """docs/FORMAT.md, "Decrypting by hand", with nothing but AESGCM and hmac."""
    raw = bytes.fromhex(v["encrypted_hex"])
    dek, wrapped = bytes.fromhex(v["dek_hex"]), bytes.fromhex(v["wrapped_key_hex"])
    assert raw[0] == 0x01 and int.from_bytes(raw[1:3], "big") == len(wrapped)
    assert raw[3 : 3 + len(wrapped)] == wrapped
    k = raw[3 + len(wrapped) : 19 + len(wrapped)]
    assert k == hmac.digest(dek, b"kmsbeam.key-commitment.v1", hashlib.sha256)[:16]
    assert k.hex() == v["commitment_hex"]
    header = 19 + len(wrapped) + (-(19 + len(wrapped)) % 3)
    assert header % 3 == 0 and not any(raw[19 + len(wrapped) : header])
    counter = raw[header : header + 4]
    assert counter == v["counter"].to_bytes(4, "big")
    name = v["name"].encode()
    aad = b"kmsbeam.field.v1" + len(name).to_bytes(2, "big") + name + k + bytes.fromhex(v["binding_hex"])
    plaintext = AESGCM(dek).decrypt(bytes(8) + counter, raw[header + 4 :], aad)
    assert plaintext.hex() == v["plaintext_hex"]
    assert len(raw) == header + 4 + len(plaintext) + 16


def test_rewrapped_vectors_keep_their_body_and_still_decrypt() -> None:
    for v in load("field_v1.json"):
        dek = bytes.fromhex(v["dek_hex"])
        other = bytes([0x02]) + b"another wrapping of the same data key"
        for form in (bytes.fromhex(v["encrypted_hex"]), v["encrypted_text"]):
            moved = reheader(form, FIELD_V1, other)
            assert type(moved) is type(form)
            parsed = parse(moved, FIELD_V1)
            assert parsed.wrapped == other
            assert parsed.body == parse(form, FIELD_V1).body  # the data bytes are unchanged
            binding = bytes.fromhex(v["binding_hex"])
            assert open_value(parsed, KeyCipher.from_dek(dek), v["name"], binding).hex() == v["plaintext_hex"]


def test_text_form_has_exactly_one_spelling() -> None:
    import os

    from kmsbeam.errors import MalformedValueError

    for n in range(40):
        data = os.urandom(n)
        assert from_text(to_text(data)) == data
    for bad in ["A", "AB", "AAB", "AA==", "AAA=", "A*AA", "AA+A", "AA/A", "ÄAAA"]:
        with pytest.raises(MalformedValueError):
            from_text(bad)
