"""The batch paths of FieldEncryptor/FieldDecryptor (columns joined and cut, reusable buffers,
nonces written by one struct call): same format, never a repeated nonce, and every value
decrypts by the spec alone (docs/FORMAT.md, "Decrypting by hand")."""

from __future__ import annotations

import hashlib
import hmac
from collections import defaultdict
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsbeam import DataKeyCache, FieldDecryptor, FieldEncryptor
from kmsbeam.errors import AuthenticationError
from kmsbeam.formats.envelope import FIELD_V1, from_text, parse
from kmsbeam.keys.policy import DataKeyPolicy

FIELDS = ["ssn", "email", "contact.phone"]


def records(n: int, start: int = 0) -> list[dict[str, Any]]:
    # ssn: one length, ASCII (the joined path); email: mixed lengths; phone: nested, non-ASCII
    return [
        {"id": i, "ssn": f"SSN-{i:012d}", "email": f"u{i}@example.com" * (1 + i % 3),
         "contact": {"phone": f"+1-555-{i:07d}-é"}}
        for i in range(start, start + n)
    ]  # fmt: skip


def by_spec(value: bytes | str, name: str, source: Any, binding: bytes = b"") -> bytes:
    """The plaintext of one field value, with nothing but AESGCM, hmac and the key source."""
    raw = from_text(value) if isinstance(value, str) else value
    wlen = int.from_bytes(raw[1:3], "big")
    wrapped, k = raw[3 : 3 + wlen], raw[3 + wlen : 19 + wlen]
    dek = source.decrypt_data_key(wrapped, {})
    assert k == hmac.digest(dek, b"kmsbeam.key-commitment.v1", hashlib.sha256)[:16]
    h = 19 + wlen + (-(19 + wlen) % 3)
    aad = b"kmsbeam.field.v1" + len(name.encode()).to_bytes(2, "big") + name.encode() + k + binding
    return AESGCM(dek).decrypt(bytes(8) + raw[h : h + 4], raw[h + 4 :], aad)


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    return (type(value), len(value)) if isinstance(value, (str, bytes)) else value


def nonces_by_key(outs: list[dict[str, Any]]) -> dict[bytes, list[int]]:
    seen: dict[bytes, list[int]] = defaultdict(list)
    for out in outs:
        for value in (out["ssn"], out["email"], out["contact"]["phone"]):
            parsed = parse(value, FIELD_V1)
            seen[parsed.header].append(int.from_bytes(parsed.body[:4], "big"))
    return seen


@pytest.mark.parametrize("encoding", ["text", "bytes"])
@pytest.mark.parametrize(
    "policy, keys",
    [(None, 1), (DataKeyPolicy(max_records=70), 3), (DataKeyPolicy(max_bytes=3000), 4)],
    ids=["one key", "records cap", "bytes cap"],
)
def test_batches_under_several_keys_never_repeat_a_nonce_and_decrypt_by_the_spec(
    source: Any, encoding: str, policy: DataKeyPolicy | None, keys: int
) -> None:
    enc = FieldEncryptor(FIELDS, source, encoding=encoding, policy=policy)
    batches = [records(100), records(100, 100), records(7, 200)]  # 7: under the joined minimum
    outs = [out for batch in batches for out in enc.encrypt_batch(batch)]
    assert not any(isinstance(o, Exception) for o in outs)
    assert enc.keys.generated >= keys
    seen = nonces_by_key(outs)
    assert len(seen) == enc.keys.generated
    for counters in seen.values():  # per data key: 0, 1, 2, ... each once
        assert sorted(counters) == list(range(len(counters)))
    originals = [r for batch in batches for r in batch]
    for original, out in zip(originals, outs):
        assert out["id"] == original["id"]
        for name, plain in (("ssn", original["ssn"]), ("email", original["email"]),
                            ("contact.phone", original["contact"]["phone"])):  # fmt: skip
            value = out["contact"]["phone"] if name == "contact.phone" else out[name]
            assert type(value) is (str if encoding == "text" else bytes)
            assert by_spec(value, name, source) == b"\x05" + plain.encode()
    dec = FieldDecryptor(FIELDS, source, cache=DataKeyCache())
    assert dec.decrypt_batch(outs) == originals
    assert [dec.decrypt(o) for o in outs] == originals


@pytest.mark.parametrize("encoding", ["text", "bytes"])
def test_batch_equals_record_by_record_and_binds(source: Any, encoding: str) -> None:
    batch = records(64)
    enc = FieldEncryptor(FIELDS, source, encoding=encoding, bind=["id"])
    one = FieldEncryptor(FIELDS, source, encoding=encoding, bind=["id"])
    outs, singles = enc.encrypt_batch(batch), [one.encrypt(r) for r in batch]
    # same layout, lengths and bound values; the data keys differ
    assert list(map(shape, outs)) == list(map(shape, singles))
    dec = FieldDecryptor(FIELDS, source, bind=["id"], cache=DataKeyCache())
    assert dec.decrypt_batch(outs) == batch == dec.decrypt_batch(singles)
    moved = [dict(o, id=o["id"] + 1) for o in outs]  # a value moved to another record
    assert all(isinstance(r, AuthenticationError) for r in dec.decrypt_batch(moved))


@pytest.mark.parametrize("encoding", ["text", "bytes"])
def test_one_tampered_value_in_a_joined_column_fails_only_its_record(source: Any, encoding: str) -> None:
    batch = records(32)
    outs = FieldEncryptor(FIELDS, source, encoding=encoding).encrypt_batch(batch)
    v = outs[5]["ssn"]
    if encoding == "bytes":
        outs[5]["ssn"] = v[:-1] + bytes([v[-1] ^ 1])
    else:
        outs[5]["ssn"] = v[:-3] + ("B" if v[-3] == "A" else "A") + v[-2:]
    results = FieldDecryptor(FIELDS, source, cache=DataKeyCache()).decrypt_batch(outs)
    assert type(results[5]) is AuthenticationError and str(results[5]) == str(AuthenticationError())
    assert results[:5] + results[6:] == batch[:5] + batch[6:]


def test_text_values_with_the_tag_character_and_invalid_utf8_free_columns(source: Any) -> None:
    # "\x05" inside a value: the joined decode must not split there
    batch = [{"ssn": f"a\x05b{i:04d}", "email": "x", "contact": {"phone": "\x05"}} for i in range(20)]
    for encoding in ("text", "bytes"):
        outs = FieldEncryptor(FIELDS, source, encoding=encoding).encrypt_batch(batch)
        assert FieldDecryptor(FIELDS, source, cache=DataKeyCache()).decrypt_batch(outs) == batch


def test_repr_of_scratch_buffers_holds_no_data() -> None:
    from kmsbeam.formats._lanes import Lanes

    lanes = Lanes(4, 3)
    lanes.fill(b"secretsecre!")
    assert "secret" not in repr(lanes)
    lanes.clear()
    assert not any(lanes.buf)


@pytest.mark.parametrize("encoding", ["text", "bytes"])
def test_a_joined_column_with_another_header_of_the_same_length(source: Any, encoding: str) -> None:
    batch = records(32)
    outs = FieldEncryptor(FIELDS, source, encoding=encoding).encrypt_batch(batch)
    others = FieldEncryptor(FIELDS, source, encoding=encoding).encrypt_batch(batch)  # another key
    outs[3] = others[3]  # same length, another header: decrypted under its own key
    dec = FieldDecryptor(FIELDS, source, cache=DataKeyCache())
    assert dec.decrypt_batch(outs) == batch
    # a body without its header, of the same length as the other values: the value of a
    # plaintext longer by the header's size, under the same key, with its header cut off
    enc = FieldEncryptor(FIELDS, source, encoding=encoding)
    outs = enc.encrypt_batch(batch)
    h = len(parse(outs[0]["ssn"], FIELD_V1).header)
    longer = enc.encrypt_batch([dict(batch[4], ssn=batch[4]["ssn"] + "x" * h)])[0]["ssn"]
    cut = h * 4 // 3 if encoding == "text" else h
    outs[4]["ssn"] = longer[cut:]
    assert len(outs[4]["ssn"]) == len(outs[5]["ssn"])
    results = dec.decrypt_batch(outs)
    assert isinstance(results[4], AuthenticationError)
    assert results[:4] + results[5:] == batch[:4] + batch[5:]
