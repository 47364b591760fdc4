"""The format vectors pin field value v1 and record v1 forever: any change here is a bug."""

from __future__ import annotations

import base64
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
from kmsbeam.errors import FormatError, MalformedValueError
from kmsbeam.formats.envelope import (
    FIELD_V1,
    FIELD_V2,
    RECORD_V1,
    RECORD_V2,
    KeyCipher,
    Sealer,
    from_text,
    open_value,
    parse,
    reheader,
    to_text,
)
from kmsbeam.vault.entry import VaultEntry, entry_name, parse_entry_name

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


# -- field value v2, record v2 (key-vault values) and key-vault entry v1 ---------------------------


def test_v2_vectors_are_v1s_with_a_short_header() -> None:
    """FORMAT.md's sizes: a 16-character string is 55 bytes, 74 text characters (v1: 166/222)."""
    for fmt in (FIELD_V1, FIELD_V2):
        sealed = Sealer(fmt, bytes(32), bytes.fromhex(load("field_v1.json")[0]["wrapped_key_hex"])).seal(
            encode_value("x" * 16), "ssn"
        )
        assert (len(sealed), len(to_text(sealed))) == ((55, 74) if fmt == FIELD_V2 else (166, 222))


def test_v2_values_differ_from_v1_values_in_their_header_only() -> None:
    """v1 and v2 share the AAD: under one data key and counter a v2 vector's bytes after its
    header are the v1 vector's (a migration rewrites headers only)."""
    pairs = list(zip(load("field_v1.json"), load("field_v2.json"))) + list(
        zip(load("record_v1.json"), load("record_v2.json")))  # fmt: skip
    same_key = [(a, b) for a, b in pairs if a["dek_hex"] == b["dek_hex"] and a["counter"] == b["counter"]]
    assert len(same_key) == len(pairs) - 1  # the last field case uses a second data key in v2
    for v1, v2 in same_key:
        fmt = FIELD_V1 if "name" in v1 else RECORD_V1
        one = parse(bytes.fromhex(v1["encrypted_hex"]), fmt)
        two = parse(bytes.fromhex(v2["encrypted_hex"]), fmt, vault=True)
        assert one.body == two.body and one.commitment == two.commitment and one.header != two.header


def _entry_of(v: dict[str, Any]) -> VaultEntry:
    """The vector's vault entry, decoded from its text under its name: K and the wrapped key."""
    entry = VaultEntry.decode(v["vault_entry_text"].encode("utf-8"), v["vault_entry_name"])
    assert entry.key_id.hex() == v["key_id_hex"] and entry.generation == 1
    assert entry.wrapped.hex() == v["wrapped_key_hex"] and entry.context == v["context"]
    assert entry_name(entry.key_id, 1) == v["vault_entry_name"]
    return entry


@pytest.mark.parametrize("v", load("field_v2.json"), ids=lambda v: f"{v['name']}#{v['counter']}")
def test_field_v2_vectors(v: dict[str, Any]) -> None:
    dek = bytes.fromhex(v["dek_hex"])
    entry = _entry_of(v)
    value = untyped(v["value"])
    plaintext = encode_value(value)
    assert plaintext.hex() == v["plaintext_hex"]
    binding = bytes.fromhex(v["binding_hex"])
    if v["bind"]:
        assert encode_value(dict(sorted(untyped(v["bind"]).items()))) == binding
    sealer = Sealer(FIELD_V2, dek, entry.wrapped)
    sealer._count = v["counter"]  # noqa: SLF001 - vectors pin the counter
    sealed = sealer.seal(plaintext, v["name"], binding)
    assert sealed.hex() == v["encrypted_hex"]
    assert to_text(sealed) == v["encrypted_text"] and from_text(v["encrypted_text"]) == sealed
    for form in (v["encrypted_text"], sealed):
        for parsed in (parse(form, FIELD_V2), parse(form, FIELD_V1, vault=True)):
            assert (parsed.fmt, parsed.wrapped, parsed.commitment) == (FIELD_V2, b"", entry.key_id)
            assert parsed.header + parsed.body == sealed and len(parsed.header) == 18
            assert decode_value(open_value(parsed, KeyCipher.from_dek(dek), v["name"], binding)) == value
        with pytest.raises(MalformedValueError):  # a v1 reader without a vault refuses it
            parse(form, FIELD_V1)
        with pytest.raises(MalformedValueError):  # nor is it a record
            parse(form, RECORD_V1, vault=True)


@pytest.mark.parametrize("v", load("record_v2.json"), ids=lambda v: f"record#{v['counter']}")
def test_record_v2_vectors(v: dict[str, Any]) -> None:
    dek = bytes.fromhex(v["dek_hex"])
    entry = _entry_of(v)
    record = untyped(v["record"])
    keep = tuple(v["keep"])
    payload = {k: (KEPT if k in keep else x) for k, x in record.items()}
    assert encode_value(payload, kept=True).hex() == v["plaintext_hex"]
    sealer = Sealer(RECORD_V2, dek, entry.wrapped)
    sealer._count = v["counter"]  # noqa: SLF001
    binding = bytes.fromhex(v["binding_hex"])
    sealed = sealer.seal(encode_value(payload, kept=True), v["payload_field"], binding)
    assert sealed.hex() == v["encrypted_hex"] and to_text(sealed) == v["encrypted_text"]
    parsed = parse(v["encrypted_text"], RECORD_V1, vault=True)
    assert (parsed.fmt, parsed.wrapped, parsed.commitment) == (RECORD_V2, b"", entry.key_id)
    out = decode_value(open_value(parsed, KeyCipher.from_dek(dek), v["payload_field"], binding), kept=True)
    assert {k: (record[k] if x is KEPT else x) for k, x in out.items()} == record
    with pytest.raises(MalformedValueError):
        parse(sealed, FIELD_V1, vault=True)


V2_CASES = [("field", v) for v in load("field_v2.json")] + [("record", v) for v in load("record_v2.json")]


@pytest.mark.parametrize("kind,v", V2_CASES, ids=lambda c: c if isinstance(c, str) else str(c["counter"]))
def test_v2_vectors_decrypt_from_the_spec_alone(kind: str, v: dict[str, Any]) -> None:
    """docs/FORMAT.md, "Decrypting by hand" for v2: the key found in the vault by K, then
    nothing but json, base64, AESGCM and hmac."""
    raw = base64.urlsafe_b64decode(v["encrypted_text"] + "=" * (-len(v["encrypted_text"]) % 4))
    assert raw.hex() == v["encrypted_hex"]
    assert raw[0] == (0x03 if kind == "field" else 0x04) and raw[17] == 0
    k = raw[1:17]
    # the vault: VAULT/<hex K>/<generation:08d>.json, newest generation first
    assert v["vault_entry_name"] == f"{k.hex()}/{1:08d}.json"
    text = v["vault_entry_text"]
    entry = json.loads(text)
    assert json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n" == text
    assert entry["format"] == "kmsbeam.vault-entry.v1" and entry["key_id"] == k.hex()
    wrapped = base64.urlsafe_b64decode(entry["wrapped"] + "=" * (-len(entry["wrapped"]) % 4))
    assert wrapped.hex() == v["wrapped_key_hex"]  # what the key source's Decrypt unwraps
    dek = bytes.fromhex(v["dek_hex"])  # (the vectors' wrapped keys are opaque: the DEK is given)
    assert k == hmac.digest(dek, b"kmsbeam.key-commitment.v1", hashlib.sha256)[:16]
    counter = raw[18:22]
    assert counter == v["counter"].to_bytes(4, "big")
    name = (v["name"] if kind == "field" else v["payload_field"]).encode()
    label = b"kmsbeam.field.v1" if kind == "field" else b"kmsbeam.record.v1"  # v1 and v2 share the AAD
    aad = label + len(name).to_bytes(2, "big") + name + k + bytes.fromhex(v["binding_hex"])
    plaintext = AESGCM(dek).decrypt(bytes(8) + counter, raw[22:], aad)
    assert plaintext.hex() == v["plaintext_hex"]
    assert len(raw) == 18 + 4 + len(plaintext) + 16


def _vault_vectors() -> dict[str, Any]:
    return dict(json.loads((VECTORS / "vault_entry_v1.json").read_text("utf-8")))


@pytest.mark.parametrize("v", _vault_vectors()["accepted"], ids=lambda v: v["name"])
def test_vault_entry_vectors_accepted(v: dict[str, Any]) -> None:
    data = bytes.fromhex(v["hex"])
    assert data.decode("utf-8") == v["text"] and data.endswith(b"}\n")
    for name in (v["name"], None):
        entry = VaultEntry.decode(data, name)
        assert entry.encode() == data  # byte for byte
        assert (entry.key_id.hex(), entry.generation, entry.wrapped.hex(), entry.master_key,
                entry.master_key_version, entry.context, entry.created, entry.name) == (
            v["key_id_hex"], v["generation"], v["wrapped_key_hex"], v["master_key"],
            v["master_key_version"], v["context"], v["created"], v["name"])  # fmt: skip
    built = VaultEntry(bytes.fromhex(v["key_id_hex"]), v["generation"], bytes.fromhex(v["wrapped_key_hex"]),
                       v["master_key"], v["master_key_version"], dict(reversed(v["context"].items())),
                       v["created"])  # fmt: skip
    assert built.encode() == data  # a writer given the fields writes exactly these bytes
    assert parse_entry_name(v["name"]) == (built.key_id, built.generation)


@pytest.mark.parametrize("v", _vault_vectors()["refused"], ids=lambda v: v["reason"])
def test_vault_entry_vectors_refused(v: dict[str, Any]) -> None:
    data = bytes.fromhex(v["hex"])
    if "text" in v:
        assert data == v["text"].encode("utf-8", "surrogatepass")
    with pytest.raises(FormatError):
        VaultEntry.decode(data, v.get("name"))


def test_vault_entry_over_64_kib_is_refused_and_at_64_kib_read() -> None:
    accepted = _vault_vectors()["accepted"][0]
    base = bytes.fromhex(accepted["hex"])

    def sized(n: int) -> bytes:
        pad = n - len(base) - len('"c":""')
        return base.replace(b'"context":{}', b'"context":{"c":"' + b"x" * pad + b'"}')

    assert len(sized(64 * 1024)) == 64 * 1024
    assert VaultEntry.decode(sized(64 * 1024)).context["c"].startswith("x")
    with pytest.raises(FormatError):
        VaultEntry.decode(sized(64 * 1024 + 1))


def test_format_md_shows_the_first_vault_entry_vector_and_the_marker() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "FORMAT.md").read_text("utf-8")
    first = _vault_vectors()["accepted"][0]
    assert "\n" + first["text"].rstrip("\n") + "\n" in doc and first["name"] in doc
    from kmsbeam.vault.vault import MARKER, MARKER_TEXT

    assert MARKER in doc and "\n" + MARKER_TEXT.decode().replace("\n", "\\n") + "\n" in doc
