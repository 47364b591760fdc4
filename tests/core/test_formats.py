"""The Format objects of dict records (fields, record) and the one byte-cap rule of every
encrypting engine: a data key is replaced once ``max_bytes`` plaintext bytes are sealed under
it (at most one record over), whether records come one by one or in batches."""

from __future__ import annotations

import pickle
from collections import Counter
from typing import Any

import pyarrow as pa
import pytest

from kmsbeam import ConfigurationError, DataKeyPolicy, RecordError
from kmsbeam.formats import FORMAT_NAMES, FieldFormat, Format, KeyUse, RecordFormat, format_class
from kmsbeam.formats.envelope import FIELD_V1, parse
from kmsbeam.formats.parquet import CellEncryptor

MAX_BYTES = 1000
VALUE = 120  # plaintext bytes of one value: the str tag and 119 characters


def _records(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "ssn": f"{i:05d}".ljust(VALUE - 1, "x")} for i in range(n)]


def _check_caps(commitments: list[bytes], per_record: int) -> None:
    """Each data key sealed at most MAX_BYTES + one record, and was not replaced early."""
    per_key = Counter(commitments)
    assert len(per_key) >= len(commitments) * per_record // (MAX_BYTES + per_record)
    for count in per_key.values():
        assert count * per_record <= MAX_BYTES + per_record
    # a key is replaced only once it has reached the cap (the last one may hold fewer)
    order = list(dict.fromkeys(commitments))
    for k in order[:-1]:
        assert per_key[k] * per_record >= MAX_BYTES


def _field_commitments(rows: list[Any], field: str = "ssn", fmt: int = FIELD_V1) -> list[bytes]:
    return [parse(r[field], fmt).commitment for r in rows]


@pytest.mark.parametrize("how", ["one by one", "batch"])
def test_field_encryptor_honours_max_bytes(source: Any, how: str) -> None:
    enc = FieldFormat("ssn").encryptor(source, policy=DataKeyPolicy(max_bytes=MAX_BYTES))
    records = _records(50)
    out = [enc.encrypt(r) for r in records] if how == "one by one" else enc.encrypt_batch(records)
    commitments = _field_commitments(out)
    _check_caps(commitments, VALUE)
    assert enc.keys.generated == len(set(commitments))


def test_field_batch_counts_bytes_of_every_field_and_skips_none(source: Any) -> None:
    records = [{"a": "x" * 99, "b": None if i % 2 else "y" * 199} for i in range(40)]
    enc = FieldFormat("a,b").encryptor(source, policy=DataKeyPolicy(max_bytes=MAX_BYTES))
    out = enc.encrypt_batch(records)
    assert all(r["b"] is None for r in out[1::2])
    keys_of = [parse(r["a"], FIELD_V1).commitment for r in out]
    for r, k in zip(out, keys_of):  # one record's values share its data key
        assert r["b"] is None or parse(r["b"], FIELD_V1).commitment == k
    sizes = [100 + (0 if r["b"] is None else 200) for r in records]
    used: Counter[bytes] = Counter()
    for k, size in zip(keys_of, sizes):
        used[k] += size
    assert len(used) >= sum(sizes) // (MAX_BYTES + 300)
    assert all(v <= MAX_BYTES + 300 for v in used.values())
    assert enc.keys.generated == len(used)


def test_record_encryptor_honours_max_bytes(source: Any) -> None:
    enc = RecordFormat(keep="id").encryptor(source, policy=DataKeyPolicy(max_bytes=MAX_BYTES))
    out = [enc.encrypt(r) for r in _records(50)]
    commitments = [parse(r["kmsbeam_record"], 0x02).commitment for r in out]
    per_record = len(parse(out[0]["kmsbeam_record"], 0x02).body) - 4 - 16  # the plaintext's size
    _check_caps(commitments, per_record)
    assert enc.keys.generated == len(set(commitments))


def test_cell_encryptor_honours_max_bytes(source: Any) -> None:
    records = _records(50)
    table = pa.table({"id": [r["id"] for r in records], "ssn": [r["ssn"] for r in records]})
    enc = CellEncryptor("ssn", source, policy=DataKeyPolicy(max_bytes=MAX_BYTES))
    out = enc.encrypt_table(table)
    commitments = [parse(v, FIELD_V1).commitment for v in out.column("ssn").to_pylist()]
    _check_caps(commitments, VALUE)
    assert enc.keys.generated == len(set(commitments))


def test_a_new_bundle_starts_a_new_key_and_the_cap_counts_from_zero(source: Any) -> None:
    enc = FieldFormat("ssn").encryptor(source, policy=DataKeyPolicy(max_bytes=MAX_BYTES))
    first = enc.encrypt_batch(_records(3))
    enc.reset()
    second = enc.encrypt_batch(_records(8))  # 8 x 120 bytes: under the cap, one key
    assert len(set(_field_commitments(first))) == 1
    assert len(set(_field_commitments(second))) == 1
    assert set(_field_commitments(first)).isdisjoint(_field_commitments(second))


def test_field_format_round_trip_and_inspect(source: Any) -> None:
    fmt = FieldFormat(["ssn", "contact.email"], bind="id", encoding="bytes")
    assert isinstance(fmt, Format) and fmt.name == "fields" and pickle.loads(pickle.dumps(fmt)) == fmt
    records = [{"id": i, "ssn": f"s{i}", "contact": {"email": None if i == 2 else f"{i}@e"}} for i in range(3)]
    enc = fmt.encryptor(source)
    out = enc.encrypt_batch(records)
    assert fmt.decryptor(source).decrypt_batch(out) == records
    uses = fmt.inspect(out[0])
    k = parse(out[0]["ssn"], FIELD_V1).commitment.hex()
    assert [(u.where, u.commitment, u.kind, u.count) for u in uses] == [
        ("ssn", k, source.kind, 1), ("contact.email", k, source.kind, 1)]  # fmt: skip
    assert all(u.version and u.key_uri == "" for u in uses)
    assert [u.where for u in fmt.inspect(out[2])] == ["ssn"]  # None is not a value


def test_record_format_round_trip_and_inspect(source: Any) -> None:
    fmt = RecordFormat(keep=["id"], payload_field="p")
    assert isinstance(fmt, Format) and fmt.name == "record"
    record = {"id": 7, "ssn": "s", "n": [1, 2]}
    out = fmt.encryptor(source).encrypt(record)
    assert set(out) == {"id", "p"}
    assert fmt.decryptor(source).decrypt(out) == record
    (use,) = fmt.inspect(out)
    assert isinstance(use, KeyUse) and use.where == "p" and use.commitment == parse(out["p"], 0x02).commitment.hex()
    with pytest.raises(RecordError, match="missing field: p"):
        fmt.inspect({"id": 7})


def test_format_configuration_is_checked_once() -> None:
    with pytest.raises(ConfigurationError, match="at least one field"):
        FieldFormat([])
    with pytest.raises(ConfigurationError, match="cannot also be encrypted"):
        FieldFormat("a.b", bind="a")
    with pytest.raises(ConfigurationError, match="encoding"):
        FieldFormat("a", encoding="base64")
    with pytest.raises(ConfigurationError, match="payload field cannot also be a kept field"):
        RecordFormat(keep="p", payload_field="p")
    with pytest.raises(ConfigurationError, match="unknown format"):
        format_class("csv")
    assert format_class("fields") is FieldFormat and format_class("record") is RecordFormat
    assert set(FORMAT_NAMES) == {"fields", "record", "cells", "objects", "pme"}


def _move_alias(source: Any) -> Any:
    from kmsbeam.keys.local import LocalKeySource
    from kmsbeam.kms import KeyStore, KmsEngine

    engine = KmsEngine(KeyStore(source.home))
    engine.update_alias("alias/test", engine.create_key("CMK-B").key_id)
    return LocalKeySource("local:alias/test")


@pytest.mark.parametrize("encoding", ["text", "bytes"])
def test_field_and_record_formats_rewrap_headers_only(source: Any, encoding: str) -> None:
    from kmsbeam import DataKeyCache
    from kmsbeam.formats import ALREADY, REWRAPPED
    from kmsbeam.rotation.rewrap import Rewrapper

    records = [{"id": i, "ssn": f"s{i}", "email": None if i == 1 else f"{i}@e"} for i in range(6)]
    fields = FieldFormat("ssn,email", bind="id", encoding=encoding)
    whole = RecordFormat(keep="id", encoding=encoding)
    policy = DataKeyPolicy(max_records=2)
    by_fields = fields.encryptor(source, policy=policy).encrypt_batch(records)
    sealing = whole.encryptor(source, policy=policy)
    by_record = [sealing.encrypt(r) for r in records]
    old_version = fields.inspect(by_fields[0])[0].version
    new = _move_alias(source)
    calls: list[int] = []
    rw = Rewrapper(new, on_call=lambda: calls.append(1), cache=DataKeyCache())
    rotated = [fields.rewrap(r, rw) for r in by_fields]
    rotated_records = [whole.rewrap(r, rw) for r in by_record]
    assert len(calls) == rw.calls == 6  # 3 data keys per dataset: one call each, not per value
    assert rw.counts[REWRAPPED] == 11 + 6
    for before, after, fmt in [(by_fields, rotated, fields), (by_record, rotated_records, whole)]:
        for b, a in zip(before, after):
            old_uses, new_uses = fmt.inspect(b), fmt.inspect(a)
            assert [u.commitment for u in old_uses] == [u.commitment for u in new_uses]
            assert {u.version for u in old_uses} == {old_version} != {u.version for u in new_uses}
            for name, value in a.items():
                if name != "id" and value is not None:  # the same bytes after the header
                    fmt_byte = 0x01 if fmt is fields else 0x02
                    assert parse(value, fmt_byte).body == parse(b[name], fmt_byte).body
                    assert type(value) is type(b[name])
    cache = DataKeyCache()
    assert fields.decryptor(new, cache=cache).decrypt_batch(rotated) == records
    assert [whole.decryptor(new, cache=cache).decrypt(r) for r in rotated_records] == records
    again = Rewrapper(new, cache=DataKeyCache())
    assert [fields.rewrap(r, again) for r in rotated] == rotated
    assert again.calls == 0 and again.counts[ALREADY] == 11


def test_every_format_names_its_format_md_section() -> None:
    from pathlib import Path

    headings = {line.lstrip("#").strip() for line in
                (Path(__file__).parents[2] / "docs" / "FORMAT.md").read_text().splitlines() if line.startswith("## ")}  # fmt: skip
    for name in FORMAT_NAMES:
        cls = format_class(name)
        assert cls.name == name and cls.section in headings, name


def test_outcomes_keep_each_items_error_without_the_batch_context(source: Any) -> None:
    from kmsbeam.formats import outcomes

    fmt = RecordFormat(keep="id")
    good = fmt.encryptor(source).encrypt({"id": 1, "x": "y"})
    dec = fmt.decryptor(source)
    try:
        raise RuntimeError("the batch failed")
    except RuntimeError:
        out = outcomes(dec.decrypt, [good, {"id": 2}])
    assert out[0] == {"id": 1, "x": "y"}
    assert isinstance(out[1], RecordError) and out[1].__context__ is None and out[1].__suppress_context__
    with pytest.raises(TypeError):  # not a kmsbeam error: it propagates
        outcomes(dec.decrypt, [None])  # type: ignore[list-item]


def test_only_sealing_hands_out_sealers() -> None:
    """Every encrypt engine gets its sealer from ``Sealing.sealer``, which counts the bytes:
    none builds ``DataKeys`` or asks it for a sealer itself (that would skip ``max_bytes``)."""
    from pathlib import Path

    root = Path(__file__).parents[2] / "kmsbeam" / "formats"
    for path in root.rglob("*.py"):
        if path.name != "_keys.py":
            text = path.read_text()
            assert "DataKeys(" not in text and "keys.sealer(" not in text, path
