"""The batched paths: Sealer.seal_many/seal_column, FieldEncryptor.encrypt_batch and the
decryptor's last-key memo give exactly what the one-value paths give."""

from __future__ import annotations

import os
from typing import Any

import pytest

from kmsbeam import (
    AuthenticationError,
    DataKeyCache,
    DataKeyPolicy,
    FieldDecryptor,
    FieldEncryptor,
    RecordError,
)
from kmsbeam.formats.codec import encode_value
from kmsbeam.formats.envelope import FIELD_V1, KeyCipher, Opener, Sealer, parse, to_text
from kmsbeam.keys.source import DataKey


def _records(n: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "ssn": f"SSN-{i:012d}", "contact": {"email": f"u{i}@e.co"}, "n": i * 7}
        for i in range(n)
    ]


class _Counting:
    """Wraps the real local source and counts GenerateDataKey calls."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self.generated = 0
        self.uri = source.uri
        self.kind = source.kind

    def generate_data_key(self, context: Any = None) -> DataKey:
        self.generated += 1
        key: DataKey = self._source.generate_data_key(context)
        return key

    def decrypt_data_key(self, wrapped: bytes, context: Any = None) -> bytes:
        plain: bytes = self._source.decrypt_data_key(wrapped, context)
        return plain


@pytest.mark.parametrize("count", [1, 7, 8, 40])
def test_seal_column_and_seal_many_match_seal(count: int) -> None:
    dek, wrapped = os.urandom(32), b"\x01" + os.urandom(60)
    plains = [encode_value(f"value-{i:04d}") for i in range(count)]
    bindings = [encode_value({"id": i}) for i in range(count)]
    for column, one, text in (
        (Sealer.seal_column, Sealer.seal, False),
        (Sealer.seal_column_text, Sealer.seal_text, True),
    ):
        batch, single = Sealer(FIELD_V1, dek, wrapped), Sealer(FIELD_V1, dek, wrapped)
        got = column(batch, "ssn", plains, bindings)
        assert got == [one(single, p, "ssn", b) for p, b in zip(plains, bindings)]
        assert batch.count == single.count == count
        # and a whole record in one call, on the same counter
        pair = [plains[0], plains[-1]]
        many = (Sealer.seal_many_text if text else Sealer.seal_many)(batch, ["a", "b"], pair)
        assert many == [one(single, pair[0], "a"), one(single, pair[1], "b")]


def test_text_of_mixed_length_values_matches_one_by_one() -> None:
    dek, wrapped = os.urandom(32), b"\x01" + os.urandom(40)
    plains = [encode_value("x" * n) for n in range(30)]  # every length mod 3, >= 8 values
    a, b = Sealer(FIELD_V1, dek, wrapped), Sealer(FIELD_V1, dek, wrapped)
    assert a.seal_column_text("f", plains) == [b.seal_text(p, "f") for p in plains]
    same = [encode_value("y" * 11)] * 20  # one length: the joint base64 path
    assert a.seal_column_text("f", same) == [b.seal_text(p, "f") for p in same]


@pytest.mark.parametrize("encoding", ["text", "bytes"])
def test_encrypt_batch_decrypts_like_encrypt(source: Any, encoding: str) -> None:
    records = _records(50)
    records[3]["ssn"] = None  # stays None
    records[4]["n"] = None
    enc = FieldEncryptor(["ssn", "contact.email", "n"], source, encoding=encoding, bind="id")
    out = enc.encrypt_batch(records)
    assert enc.values == 150 - 2 and enc.keys.generated == 1
    assert out[3]["ssn"] is None and out[4]["n"] is None
    assert all(isinstance(o["ssn"], str if encoding == "text" else bytes) for o in out if o["ssn"])
    dec = FieldDecryptor(["ssn", "contact.email", "n"], source, bind="id")
    assert [dec.decrypt(o) for o in out] == records
    assert records[0]["contact"]["email"] == "u0@e.co"  # the input is never mutated


def test_encrypt_batch_returns_each_bad_record_error_in_place(source: Any) -> None:
    records: list[Any] = _records(20)
    records[5] = {"id": 5, "contact": {"email": "x"}, "n": 1}  # no ssn
    records[9] = dict(records[9], n=object())  # no encoding for this type
    enc = FieldEncryptor(["ssn", "contact.email", "n"], source)
    out = enc.encrypt_batch(records)
    assert isinstance(out[5], RecordError) and "missing field: ssn" in str(out[5])
    assert isinstance(out[9], RecordError) and "wrong type" in str(out[9])
    dec = FieldDecryptor(["ssn", "contact.email", "n"], source)
    good = [i for i in range(20) if i not in (5, 9)]
    assert [dec.decrypt(out[i]) for i in good] == [records[i] for i in good]
    assert enc.keys.generated == 1


@pytest.mark.parametrize(("cap", "batch", "keys"), [(7, 10, 15), (10, 25, 10), (100, 30, 1)])
def test_batches_keep_the_records_cap_exactly(source: Any, cap: int, batch: int, keys: int) -> None:
    counting = _Counting(source)
    enc = FieldEncryptor(["ssn"], counting, policy=DataKeyPolicy(max_records=cap))  # type: ignore[arg-type]
    records = _records(100)
    out: list[Any] = []
    for i in range(0, 100, batch):
        out += enc.encrypt_batch(records[i : i + batch])
    assert counting.generated == keys  # ceil(100 / cap): no key is retired early
    headers = [parse(o["ssn"], FIELD_V1).wrapped for o in out]
    per_key = [headers.count(h) for h in dict.fromkeys(headers)]
    assert max(per_key) <= cap and sum(per_key) == 100


def test_a_failing_key_source_fails_each_record_of_the_batch(source: Any) -> None:
    from kmsbeam.keys.local import shared_engine

    enc = FieldEncryptor(["ssn"], source)
    shared_engine(source.home).disable_key(source.key_id)
    out = enc.encrypt_batch(_records(5))
    assert len(out) == 5 and all(type(o).__name__ == "KeyDisabledError" for o in out)


def test_the_decrypt_memo_switches_keys_and_honours_the_cache_ttl(source: Any) -> None:
    now = [0.0]
    calls: list[int] = []
    cache = DataKeyCache(ttl_seconds=10, clock=lambda: now[0])
    dec = FieldDecryptor(["ssn"], source, cache=cache, on_call=lambda: calls.append(1))
    a = FieldEncryptor(["ssn"], source).encrypt_batch(_records(3))
    b = FieldEncryptor(["ssn"], source).encrypt_batch(_records(3))
    for x, y in zip(a, b):  # interleaved keys: each value still opens with its own key
        assert dec.decrypt(x)["ssn"] == dec.decrypt(y)["ssn"]
    assert len(calls) == 2
    now[0] = 11.0  # past the TTL: the memo is not used, the key is unwrapped again
    dec.decrypt(a[0])
    assert len(calls) == 3
    # a value with the memo's header but a changed body still fails authentication
    tampered = a[1]["ssn"][:-2] + ("A" if a[1]["ssn"][-2] != "A" else "B") + a[1]["ssn"][-1]
    with pytest.raises(AuthenticationError):
        dec.decrypt_value(tampered, "ssn")


def test_opener_refuses_values_of_another_header() -> None:
    dek, wrapped = os.urandom(32), b"\x01" + os.urandom(30)
    sealer = Sealer(FIELD_V1, dek, wrapped)
    value = sealer.seal(encode_value("v"), "f")
    parsed = parse(value, FIELD_V1)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    opener = Opener(FIELD_V1, parsed.header, KeyCipher.from_dek(dek))
    assert opener.body_of(value) == parsed.body
    assert opener.body_of(to_text(value)) == parsed.body
    other = Sealer(FIELD_V1, dek, b"\x01" + os.urandom(30)).seal(encode_value("v"), "f")
    assert opener.body_of(other) is None and opener.body_of(to_text(other)) is None
    assert opener.body_of(12) is None
    with pytest.raises(AuthenticationError):
        opener.open(parsed.body, "g")


@pytest.mark.parametrize("encoding", ["text", "bytes"])
def test_decrypt_batch_matches_decrypt_across_keys_and_errors(source: Any, encoding: str) -> None:
    fields = ["ssn", "contact.email", "n"]
    records = _records(60)
    records[7]["n"] = None
    first = FieldEncryptor(fields, source, encoding=encoding, bind="id").encrypt_batch(records[:30])
    second = FieldEncryptor(fields, source, encoding=encoding, bind="id").encrypt_batch(records[30:])
    mixed = [x for pair in zip(first, second) for x in pair]  # two data keys, interleaved
    expected = [r for pair in zip(records[:30], records[30:]) for r in pair]
    dec = FieldDecryptor(fields, source, bind="id", cache=DataKeyCache())
    assert dec.decrypt_batch(mixed) == expected
    assert dec.values == 179

    bad: list[Any] = [dict(m) for m in mixed[:6]]
    ssn = bad[1]["ssn"]
    bad[1]["ssn"] = ssn[:-1] + (ssn[-1:].swapcase() if encoding == "text" else bytes([ssn[-1] ^ 1]))
    bad[3] = {k: v for k, v in bad[3].items() if k != "ssn"}
    bad[4]["n"] = 12345  # not an encrypted value
    bad[5]["id"] = 999  # moved to another record: the binding differs
    out = FieldDecryptor(fields, source, bind="id").decrypt_batch(bad)
    assert out[0] == expected[0] and out[2] == expected[2]
    assert isinstance(out[1], AuthenticationError) and out[1].field == "ssn"
    assert isinstance(out[3], RecordError)
    assert isinstance(out[4], AuthenticationError)  # MalformedValueError
    assert isinstance(out[5], AuthenticationError)


def test_from_text_many_accepts_and_refuses_exactly_what_from_text_does() -> None:
    from kmsbeam.formats.envelope import from_text, from_text_many
    from kmsbeam.errors import MalformedValueError

    for size in range(0, 40):
        texts = [to_text(os.urandom(size)) for _ in range(9)]
        assert from_text_many(texts) == [from_text(t) for t in texts]
    texts = [to_text(os.urandom(37)) for _ in range(9)]  # 50 characters: 4 unused bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    for j in range(9):
        for last in alphabet:
            bad = list(texts)
            bad[j] = bad[j][:-1] + last
            try:
                expected: Any = [from_text(t) for t in bad]
            except MalformedValueError:
                expected = MalformedValueError
            if expected is MalformedValueError:
                with pytest.raises(MalformedValueError):
                    from_text_many(bad)
            else:
                assert from_text_many(bad) == expected
    for junk in ("=", "+", "/", "é", " "):
        bad = list(texts)
        bad[4] = bad[4][:10] + junk + bad[4][11:]
        with pytest.raises(MalformedValueError):
            from_text_many(bad)


def test_decrypt_batch_refuses_a_str_value_that_is_not_utf8_in_its_record_only(source: Any) -> None:
    records = _records(4)
    encrypted = FieldEncryptor(["ssn"], source, encoding="bytes").encrypt_batch(records)
    parsed = parse(encrypted[0]["ssn"], FIELD_V1)
    dek = source.decrypt_data_key(parsed.wrapped)
    forged = Sealer(FIELD_V1, dek, parsed.wrapped).seal(b"\x05\xff\xfe", "ssn")  # str tag, bad UTF-8
    batch = [dict(r) for r in encrypted]
    batch[2]["ssn"] = forged  # authenticates (same key) but does not decode
    out = FieldDecryptor(["ssn"], source, cache=DataKeyCache()).decrypt_batch(batch)
    assert [out[i] for i in (0, 1, 3)] == [records[i] for i in (0, 1, 3)]
    # authentic, so not an authentication error: the codec's per-record error, naming the field
    assert isinstance(out[2], RecordError) and not isinstance(out[2], AuthenticationError)
    assert str(out[2]) == "invalid value encoding (field ssn): text is not UTF-8"
