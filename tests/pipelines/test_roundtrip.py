"""Round trips through ``kmsbeam encrypt`` and ``kmsbeam decrypt`` on real files and Beam."""

from __future__ import annotations

import csv
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.pipelines.conftest import EXAMPLES, shard_lines, table_value

FIELDS = "ssn,email,phone"


def test_jsonl_round_trip_is_byte_for_byte(cli, customers: Path, tmp_path: Path) -> None:
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    r = cli("encrypt", customers, enc, "--fields", FIELDS)
    assert r.code == 0, r.err
    assert sorted(p.name for p in enc.iterdir()) == ["_kmsbeam.json", "part-00000-of-00001.jsonl"]
    r = cli("decrypt", enc, plain)
    assert r.code == 0, r.err
    original = customers.read_text(encoding="utf-8").splitlines()
    assert len(original) == 1000
    assert sorted(shard_lines(plain)) == sorted(original)
    assert not (plain / "_kmsbeam.json").exists()


def test_encrypted_output_holds_no_plaintext_of_the_fields(cli, customers: Path, tmp_path: Path) -> None:
    records = [json.loads(line) for line in customers.read_text(encoding="utf-8").splitlines()]
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", FIELDS).code == 0
    data = b"".join(p.read_bytes() for p in enc.iterdir())
    for r in records[:25]:
        for name in ("ssn", "email", "phone"):
            assert r[name].encode() not in data
    assert records[0]["name"].encode() in data  # the other fields stay in clear
    first = json.loads(shard_lines(enc)[0])
    assert list(first) == list(records[0])  # key order kept
    assert first["ssn"] != records[0]["ssn"]


def test_manifest_records_how_the_dataset_was_written(cli, customers: Path, tmp_path: Path) -> None:
    enc = tmp_path / "enc"
    r = cli("encrypt", customers, enc, "--fields", "ssn,address.zip", "--bind", "id",
            "--key", "local:alias/pii", "--context", "dataset=customers", "--context", "env=test")
    assert r.code == 0, r.err
    manifest = json.loads((enc / "_kmsbeam.json").read_text())
    assert list(manifest)[:10] == ["kmsbeam_dataset", "mode", "fields", "bind", "keep",
                                   "payload_field", "key", "context", "format", "encoding"]
    assert manifest["kmsbeam_dataset"] == 1
    assert manifest["mode"] == "fields"
    assert manifest["fields"] == ["ssn", "address.zip"]
    assert manifest["bind"] == ["id"] and manifest["keep"] == []
    assert manifest["key"] == "local:alias/pii"
    assert manifest["context"] == {"dataset": "customers", "env": "test"}
    assert (manifest["format"], manifest["encoding"]) == ("jsonl", "text")
    assert manifest["arrow_schema"] is None
    plain = tmp_path / "plain"
    assert cli("decrypt", enc, plain, "-q").code == 0  # bind, key and context from the manifest
    assert sorted(shard_lines(plain)) == sorted(customers.read_text(encoding="utf-8").splitlines())


def test_csv_round_trip_keeps_header_and_quoted_commas(cli, tmp_path: Path) -> None:
    source = EXAMPLES / "customers.csv"
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    r = cli("encrypt", source, enc, "--fields", "ssn,email", "--key", "local:alias/pii",
            "--context", "dataset=customers")
    assert r.code == 0, r.err
    shard = next(enc.glob("part-*.csv"))
    rows = list(csv.reader(shard.read_text(encoding="utf-8").splitlines()))
    original = list(csv.reader(source.read_text(encoding="utf-8").splitlines()))
    assert rows[0] == original[0]
    assert any("," in row[5] for row in original[1:])  # the sample has quoted commas
    assert len(rows) == len(original)
    manifest = json.loads((enc / "_kmsbeam.json").read_text())
    assert manifest["columns"] == original[0] and manifest["format"] == "csv"
    assert cli("decrypt", enc, plain).code == 0
    lines = shard_lines(plain)
    expected = source.read_text(encoding="utf-8").splitlines()
    assert lines[0] == expected[0]
    assert sorted(lines[1:]) == sorted(expected[1:])


def test_record_mode_jsonl_round_trip(cli, customers: Path, tmp_path: Path) -> None:
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    assert cli("encrypt", customers, enc, "--mode", "record", "--keep", "id").code == 0
    first = json.loads(shard_lines(enc)[0])
    assert list(first) == ["id", "kmsbeam_record"]
    assert json.loads((enc / "_kmsbeam.json").read_text())["keep"] == ["id"]
    assert cli("decrypt", enc, plain).code == 0
    assert sorted(shard_lines(plain)) == sorted(customers.read_text(encoding="utf-8").splitlines())


SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        ("name", pa.string()),
        ("ssn", pa.string()),
        ("born", pa.date32()),
        ("seen", pa.timestamp("us", tz="UTC")),
        ("local_ts", pa.timestamp("ms")),
        ("balance", pa.decimal128(12, 2)),
        ("score", pa.float64()),
        ("tags", pa.list_(pa.string())),
        ("address", pa.struct([("street", pa.string()), ("zip", pa.string())])),
    ],
    metadata={b"origin": b"kmsbeam-test"},
)


def _parquet_rows(n: int = 60) -> list[dict[str, object]]:
    return [
        {
            "id": i,
            "name": f"name {i}",
            "ssn": None if i % 5 == 0 else f"900-11-{i:04d}",
            "born": dt.date(1980, 1, 1) + dt.timedelta(days=i),
            "seen": dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(seconds=i),
            "local_ts": dt.datetime(2024, 2, 1, 12, 0, 0, 125000),
            "balance": Decimal("10.05") + i,
            "score": None if i % 4 == 0 else i / 3,
            "tags": ["a", str(i)],
            "address": None if i % 7 == 0 else
            {"street": f"{i} Main St", "zip": None if i % 3 == 0 else f"{10000 + i}"},
        }
        for i in range(n)
    ]  # fmt: skip


@pytest.fixture()
def parquet_file(tmp_path: Path) -> Path:
    path = tmp_path / "people.parquet"
    pq.write_table(pa.Table.from_pylist(_parquet_rows(), schema=SCHEMA), path)
    return path


def _read_parquet(directory: Path) -> pa.Table:
    shards = sorted(directory.glob("part-*.parquet"))
    assert shards
    return pa.concat_tables(pq.read_table(s) for s in shards)


def _by_id(table: pa.Table) -> list[dict[str, object]]:
    return sorted(table.to_pylist(), key=lambda r: r["id"])  # type: ignore[arg-type, return-value]


def test_parquet_round_trip_restores_the_exact_schema(cli, parquet_file: Path, tmp_path: Path) -> None:
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    r = cli("encrypt", parquet_file, enc, "--fields", "ssn,born,balance,tags,address.zip")
    assert r.code == 0, r.err + r.out
    encrypted = _read_parquet(enc)
    for name in ("ssn", "born", "balance", "tags"):
        assert encrypted.schema.field(name).type == pa.binary()
    address = encrypted.schema.field("address").type
    assert address.field("zip").type == pa.binary() and address.field("street").type == pa.string()
    assert encrypted.schema.field("id").type == pa.int64() and not encrypted.schema.field("id").nullable
    rows = _by_id(encrypted)
    assert rows[0]["ssn"] is None and rows[0]["address"] is None  # nulls stay null
    assert isinstance(rows[1]["ssn"], bytes) and b"900-11-0001" not in rows[1]["ssn"]
    manifest = json.loads((enc / "_kmsbeam.json").read_text())
    assert (manifest["format"], manifest["encoding"]) == ("parquet", "bytes")
    assert manifest["arrow_schema"]

    r = cli("decrypt", enc, plain)
    assert r.code == 0, r.err + r.out
    assert table_value(r.out, "dead letters") == "0"
    decrypted = _read_parquet(plain)
    # the input file's own schema (Parquet names list items "element", so not SCHEMA itself)
    assert decrypted.schema.equals(pq.read_schema(parquet_file), check_metadata=True)
    assert decrypted.schema.equals(SCHEMA)
    assert decrypted.schema.metadata == SCHEMA.metadata
    assert _by_id(decrypted) == _parquet_rows()


def test_parquet_record_mode_round_trip(cli, parquet_file: Path, tmp_path: Path) -> None:
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    assert cli("encrypt", parquet_file, enc, "--mode", "record", "--keep", "id,name").code == 0
    encrypted = _read_parquet(enc)
    assert encrypted.schema.names == ["id", "name", "kmsbeam_record"]
    assert encrypted.schema.field("kmsbeam_record").type == pa.binary()
    assert encrypted.schema.field("id").type == pa.int64()
    assert cli("decrypt", enc, plain).code == 0
    decrypted = _read_parquet(plain)
    assert decrypted.schema.equals(pq.read_schema(parquet_file), check_metadata=True)
    assert _by_id(decrypted) == _parquet_rows()


def _encodings(directory: Path) -> dict[str, tuple[set[str], str]]:
    """Column path -> (encodings, compression) over every shard and row group."""
    found: dict[str, tuple[set[str], str]] = {}
    for shard in sorted(directory.glob("part-*.parquet")):
        meta = pq.ParquetFile(shard).metadata
        for g in range(meta.num_row_groups):
            for c in range(meta.num_columns):
                col = meta.row_group(g).column(c)
                prev = found.get(col.path_in_schema, (set(), col.compression))
                found[col.path_in_schema] = (prev[0] | set(col.encodings), col.compression)
    return found


def test_parquet_encrypted_columns_are_delta_encoded_and_snappy(cli, parquet_file: Path, tmp_path: Path) -> None:
    enc = tmp_path / "enc"
    assert cli("encrypt", parquet_file, enc, "--fields", "ssn,address.zip").code == 0
    found = _encodings(enc)
    for path in ("ssn", "address.zip"):
        assert "DELTA_BYTE_ARRAY" in found[path][0], found[path]
        assert not {"RLE_DICTIONARY", "PLAIN_DICTIONARY"} & found[path][0]
    assert "RLE_DICTIONARY" in found["name"][0]  # the other columns keep the defaults
    assert {compression for _, compression in found.values()} == {"SNAPPY"}
    rec = tmp_path / "rec"
    assert cli("encrypt", parquet_file, rec, "--mode", "record", "--keep", "id,name").code == 0
    assert "DELTA_BYTE_ARRAY" in _encodings(rec)["kmsbeam_record"][0]


def test_summary_counts_one_data_key_for_a_1000_record_job(cli, customers: Path, tmp_path: Path) -> None:
    r = cli("encrypt", customers, tmp_path / "enc", "--fields", FIELDS)
    assert r.code == 0
    assert table_value(r.out, "records in") == "1,000"
    assert table_value(r.out, "records out") == "1,000"
    assert table_value(r.out, "values encrypted") == "3,000"
    assert table_value(r.out, "data keys generated") == "1"
    assert table_value(r.out, "KMS calls: GenerateDataKey") == "1"
    assert table_value(r.out, "dead letters") == "0"
    assert table_value(r.out, "bytes in").endswith("KiB")
    assert "records/s" in table_value(r.out, "rate")
    r = cli("decrypt", tmp_path / "enc", tmp_path / "plain")
    assert table_value(r.out, "values decrypted") == "3,000"
    assert table_value(r.out, "KMS calls: Decrypt") == "1"
    assert table_value(r.out, "data keys generated") == "0"


def test_max_records_per_key_and_quiet(cli, customers: Path, tmp_path: Path) -> None:
    r = cli("encrypt", customers, tmp_path / "enc", "--fields", "ssn", "--max-records-per-key", "300")
    assert table_value(r.out, "data keys generated") == "4"
    r = cli("decrypt", tmp_path / "enc", tmp_path / "plain", "--quiet")
    assert r.code == 0 and r.out == ""


def test_decrypt_a_glob_without_manifest_given_fields(cli, customers: Path, tmp_path: Path) -> None:
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn").code == 0
    (enc / "_kmsbeam.json").unlink()
    r = cli("decrypt", str(enc / "part-*.jsonl"), tmp_path / "plain", "--fields", "ssn")
    assert r.code == 0, r.err
    assert sorted(shard_lines(tmp_path / "plain")) == sorted(customers.read_text("utf-8").splitlines())


def test_multi_processing_round_trip(cli, customers: Path, tmp_path: Path) -> None:
    mp = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
    r = cli("encrypt", customers, tmp_path / "enc", "--fields", FIELDS, *mp)
    assert r.code == 0, r.err
    assert table_value(r.out, "values encrypted") == "3,000"
    r = cli("decrypt", tmp_path / "enc", tmp_path / "plain", *mp)
    assert r.code == 0, r.err
    assert sorted(shard_lines(tmp_path / "plain")) == sorted(customers.read_text("utf-8").splitlines())


def test_portable_runner_round_trip(cli, customers: Path, tmp_path: Path) -> None:
    portable = ["--runner", "PortableRunner", "--job_endpoint", "embed", "--environment_type", "LOOPBACK"]
    r = cli("encrypt", customers, tmp_path / "enc", "--fields", "ssn", *portable)
    assert r.code == 0, r.err
    assert table_value(r.out, "values encrypted") == "1,000"
    assert cli("decrypt", tmp_path / "enc", tmp_path / "plain", *portable).code == 0
    assert sorted(shard_lines(tmp_path / "plain")) == sorted(customers.read_text("utf-8").splitlines())
