"""Cell columns: every supported Arrow type round-trips, cells are field values v1 that
travel to other formats, tampering and moving are detected row by row."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kmsbeam import ConfigurationError, DataKeyPolicy, FieldDecryptor, KeySource, open_key_source
from kmsbeam.formats.envelope import FIELD_V1, parse, to_text
from kmsbeam.formats.parquet import CELLS_KEY, CellDecryptor, CellEncryptor, cells_metadata, original_schema
from tests.parquet.conftest import events

UTC = dt.timezone.utc
TYPES: dict[str, tuple[pa.DataType, list[Any]]] = {
    "bool": (pa.bool_(), [True, False]),
    "int8": (pa.int8(), [-128, 127]),
    "int16": (pa.int16(), [-32768, 7]),
    "int32": (pa.int32(), [-(2**31), 2**31 - 1]),
    "int64": (pa.int64(), [-(2**63), 2**63 - 1]),
    "uint8": (pa.uint8(), [0, 255]),
    "uint16": (pa.uint16(), [0, 65535]),
    "uint32": (pa.uint32(), [0, 2**32 - 1]),
    "uint64": (pa.uint64(), [0, 2**64 - 1]),
    "float16": (pa.float16(), [1.5, -0.25]),
    "float32": (pa.float32(), [1.5, 3.4028234663852886e38]),
    "float64": (pa.float64(), [0.1, float("inf")]),
    "string": (pa.string(), ["", "héllo ✓"]),
    "large_string": (pa.large_string(), ["a" * 1000, "b"]),
    "string_view": (pa.string_view(), ["view", ""]),
    "binary": (pa.binary(), [b"\x00\xff", b""]),
    "large_binary": (pa.large_binary(), [b"x" * 300, b"y"]),
    "binary_view": (pa.binary_view(), [b"v", b""]),
    "fixed_binary": (pa.binary(4), [b"abcd", b"\x00\x01\x02\x03"]),
    "date32": (pa.date32(), [dt.date(1970, 1, 1), dt.date(2026, 11, 23)]),
    "date64": (pa.date64(), [dt.date(1, 1, 1), dt.date(9999, 12, 31)]),
    "ts_s": (pa.timestamp("s"), [dt.datetime(2026, 1, 1, 12), dt.datetime(1900, 1, 1)]),
    "ts_ms": (pa.timestamp("ms"), [dt.datetime(2026, 1, 1, 12, 0, 0, 123000), dt.datetime(2000, 2, 29)]),
    "ts_us": (pa.timestamp("us"), [dt.datetime(2026, 1, 1, 12, 0, 0, 123456), dt.datetime(2000, 2, 29)]),
    "ts_utc": (pa.timestamp("us", tz="UTC"), [dt.datetime(2026, 1, 1, tzinfo=UTC), dt.datetime(1999, 1, 1, tzinfo=UTC)]),
    "ts_paris": (pa.timestamp("ms", tz="Europe/Paris"), [dt.datetime(2026, 7, 1, tzinfo=UTC), dt.datetime(2026, 1, 1, tzinfo=UTC)]),
    "decimal128": (pa.decimal128(12, 3), [Decimal("123456789.123"), Decimal("-0.500")]),
    "decimal256": (pa.decimal256(50, 10), [Decimal("1" * 40 + ".0123456789"), Decimal("0E-10")]),
    "list": (pa.list_(pa.int64()), [[1, 2, None], []]),
    "large_list": (pa.large_list(pa.string()), [["a"], ["b", "c"]]),
    "fixed_list": (pa.list_(pa.float64(), 2), [[1.0, 2.0], [None, 3.5]]),
    "struct": (pa.struct([("a", pa.int32()), ("b", pa.list_(pa.string()))]), [{"a": 1, "b": ["x"]}, {"a": None, "b": None}]),
    "map": (pa.map_(pa.string(), pa.int64()), [[("k", 1), ("j", None)], []]),
    "map_of_struct": (pa.map_(pa.int32(), pa.struct([("x", pa.bool_())])), [[(1, {"x": True})], [(2, None)]]),
    "dictionary": (pa.dictionary(pa.int32(), pa.string()), ["red", "blue"]),
}  # fmt: skip


@pytest.fixture()
def pii(keys: dict[str, str]) -> KeySource:
    return open_key_source(keys["pii"])


def all_types_table() -> pa.Table:
    return pa.table({name: pa.array(values + [None], t) for name, (t, values) in TYPES.items()})


def test_every_supported_type_round_trips_through_a_file(pii: KeySource, tmp_path: Path) -> None:
    table = all_types_table()
    enc = CellEncryptor(list(TYPES), pii)
    encrypted = enc.encrypt_table(table)
    assert all(encrypted.schema.field(n).type == pa.binary() for n in TYPES)
    assert enc.values == 2 * len(TYPES)  # nulls stay null
    pq.write_table(encrypted, tmp_path / "cells.parquet")
    back, failed = CellDecryptor(None, pii).decrypt_table(pq.read_table(tmp_path / "cells.parquet"))
    assert failed == []
    assert back.schema.equals(table.schema)
    for name in TYPES:
        assert back.column(name).equals(table.column(name)), name


def test_encrypt_none_encrypts_nulls_too(pii: KeySource) -> None:
    table = pa.table({"ssn": ["a", None]})
    encrypted = CellEncryptor(["ssn"], pii, encrypt_none=True).encrypt_table(table)
    assert encrypted.column("ssn").null_count == 0
    back, _ = CellDecryptor(None, pii).decrypt_table(encrypted)
    assert back.column("ssn").to_pylist() == ["a", None]


def test_unsupported_types_are_refused_up_front(pii: KeySource) -> None:
    for t in (pa.time64("us"), pa.duration("s"), pa.timestamp("ns"), pa.null(), pa.list_(pa.time32("s"))):
        table = pa.table({"c": pa.array([None], t)})
        with pytest.raises(ConfigurationError, match="cannot be encrypted as cells"):
            CellEncryptor(["c"], pii).encrypt_table(table)
    with pytest.raises(ConfigurationError, match="unknown column"):
        CellEncryptor(["nope"], pii).encrypt_table(pa.table({"c": [1]}))
    with pytest.raises(ConfigurationError, match="cannot also be encrypted"):
        CellEncryptor(["c"], pii, bind=["c"])
    with pytest.raises(ConfigurationError, match="already hold kmsbeam cells"):
        enc = CellEncryptor(["c"], pii)
        enc.encrypt_table(enc.encrypt_table(pa.table({"c": [1]})))


def test_a_cell_is_a_field_value_that_travels(pii: KeySource) -> None:
    table = events(50)
    encrypted = CellEncryptor(["ssn", "contact.email"], pii, bind=["id"]).encrypt_table(table)
    dec = FieldDecryptor(["ssn", "contact.email"], pii, bind=["id"])
    checked = 0
    for row, original in zip(encrypted.to_pylist(), table.to_pylist()):
        if row["contact"] is None:  # a null struct: no email path in a dict record
            continue
        assert parse(row["ssn"], FIELD_V1).wrapped[0] == 0x01
        assert dec.decrypt(row) == original  # a dict record, as Avro bytes would hold it
        as_text = {**row, "ssn": to_text(row["ssn"]),
                   "contact": {**row["contact"], "email": to_text(row["contact"]["email"])}}  # fmt: skip
        assert dec.decrypt(as_text) == original  # text form, as JSON or CSV would hold it
        checked += 1
    assert checked == 42


def test_tampered_moved_and_unbound_cells_fail_row_by_row(pii: KeySource) -> None:
    table = events(20)
    encrypted = CellEncryptor(["ssn", "card"], pii, bind=["id"]).encrypt_table(table)
    ssn = encrypted.column("ssn").to_pylist()
    flipped = bytearray(ssn[3])
    flipped[-1] ^= 1
    ssn[3] = bytes(flipped)
    ssn[5], ssn[6] = ssn[6], ssn[5]  # swapped between rows: the binding (id) differs
    card = encrypted.column("card").to_pylist()
    card[8] = ssn[8]  # moved to another column: the path differs
    bad = encrypted.set_column(1, "ssn", pa.array(ssn, pa.binary())).set_column(2, "card", pa.array(card, pa.binary()))
    back, failed = CellDecryptor(None, pii, bind=["id"]).decrypt_table(bad)
    assert [i for i, _ in failed] == [3, 5, 6, 8]
    assert {type(e).__name__ for _, e in failed} == {"AuthenticationError"}
    assert {e.field for _, e in failed} == {"ssn", "card"}
    expected = table.filter(pa.array([i not in (3, 5, 6, 8) for i in range(20)]))
    assert back.equals(expected)
    _, failed = CellDecryptor(None, pii).decrypt_table(encrypted)  # bind forgotten
    assert len(failed) == 20


def test_metadata_restores_types_and_names_the_key(pii: KeySource) -> None:
    table = events(10)
    encrypted = CellEncryptor("ssn,contact.zip", pii, bind="id").encrypt_table(table)
    meta = cells_metadata(encrypted.schema)
    assert meta is not None and meta["columns"] == ["ssn", "contact.zip"] and meta["key"] == "local:alias/pii"
    assert meta["bind"] == ["id"] and original_schema(encrypted.schema) == table.schema
    partial, _ = CellDecryptor(["ssn"], pii, bind=["id"]).decrypt_table(encrypted)
    assert partial.column("ssn").equals(table.column("ssn"))
    assert cells_metadata(partial.schema)["columns"] == ["contact.zip"]  # type: ignore[index]
    stripped = encrypted.replace_schema_metadata(None)
    with pytest.raises(ConfigurationError, match="name the columns"):
        CellDecryptor(None, pii).decrypt_table(stripped)
    back, _ = CellDecryptor(["ssn", "contact.zip"], pii, bind=["id"], schema=table.schema).decrypt_table(stripped)
    assert back.equals(table)
    assert CELLS_KEY not in (back.schema.metadata or {})


def test_the_policy_caps_rows_per_data_key(pii: KeySource) -> None:
    generated: list[int] = []
    enc = CellEncryptor(["ssn"], pii, policy=DataKeyPolicy(max_records=300), on_generate=lambda: generated.append(1))
    encrypted = enc.encrypt_table(events(1000))
    headers = {parse(v, FIELD_V1).header for v in encrypted.column("ssn").to_pylist()}
    assert len(generated) == len(headers) == 4
    back, failed = CellDecryptor(None, pii).decrypt_table(encrypted)
    assert failed == [] and back.column("ssn").equals(events(1000).column("ssn"))


def test_record_batches_and_sliced_chunked_tables(pii: KeySource) -> None:
    table = pa.concat_tables([events(30), events(30)]).slice(10, 40)
    enc = CellEncryptor(["ssn", "contact.email"], pii)
    out = enc.encrypt_table(table)
    back, _ = CellDecryptor(None, pii).decrypt_table(out)
    assert back.equals(table.combine_chunks()) or back.to_pylist() == table.to_pylist()
    batch = table.combine_chunks().to_batches()[0]
    assert CellDecryptor(None, pii).decrypt_table(enc.encrypt_table(batch))[0].to_pylist() == batch.to_pylist()


def test_large_tables_are_worked_through_in_slices(pii: KeySource) -> None:
    from kmsbeam.formats.parquet._cells import SLICE_ROWS

    n = SLICE_ROWS + 5000
    table = pa.table({"id": range(n), "ssn": [f"{i:09d}" if i % 3 else None for i in range(n)]})
    encrypted = CellEncryptor(["ssn"], pii, bind=["id"]).encrypt_table(table)
    assert encrypted.num_rows == n and encrypted.column("ssn").null_count == table.column("ssn").null_count
    ssn = encrypted.column("ssn").to_pylist()
    bad = SLICE_ROWS + 7
    ssn[bad] = ssn[bad + 2]  # another row's cell: the binding (id) differs
    tampered = encrypted.set_column(1, "ssn", pa.array(ssn, pa.binary()))
    back, failed = CellDecryptor(None, pii, bind=["id"]).decrypt_table(tampered)
    assert [i for i, _ in failed] == [bad]
    assert back.num_rows == n - 1 and back.column("ssn").to_pylist()[:4] == [None, "000000001", "000000002", None]
