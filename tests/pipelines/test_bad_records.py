"""One bad record is one dead letter with a stable reason; the job goes on (issue 14, 0e).

Real CLI jobs on the FnApiRunner with a local key (KMSBEAM_HOME in tmp): records in = records
out + dead letters, and every good record comes back exactly.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from kmsbeam.formats.codec import MAX_DEPTH, write_varint
from kmsbeam.formats.envelope import FIELD_V1, Sealer, from_text, parse, to_text
from kmsbeam.pipelines._fns import MAX_RECORD_BYTES
from tests.pipelines.conftest import shard_lines, table_value

KEY = "local:alias/bad-records"


def _letters(directory: Path) -> list[dict[str, Any]]:
    """The dead letters, encrypt-side ones unsealed (they are sealed under the job's key)."""
    from kmsbeam.pipelines.sealed import unseal

    return unseal([json.loads(line) for line in shard_lines(directory / "_dead_letters")], KEY, {})


def _counts(out: str) -> tuple[int, int, int]:
    dead = table_value(out, "dead letters").split()[0]
    return (int(table_value(out, "records in")), int(table_value(out, "records out")), int(dead))


def _nested_json(depth: int) -> str:
    return '{"id": 99, "ssn": ' + "[" * depth + "1" + "]" * depth + "}"


def test_jsonl_bad_lines_are_dead_letters_and_the_rest_round_trips(cli, tmp_path: Path) -> None:
    good = [{"id": i, "ssn": f"900-00-{i:04d}", "note": "ü"} for i in range(6)]
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in good]
    bad = [
        b'{"id": 50, "ssn": "\xff\xfe"}',  # not UTF-8
        _nested_json(MAX_DEPTH).encode(),  # 65 levels with the record: one past the limit
        _nested_json(500).encode(),  # parses, but deeper than the codec's limit
        _nested_json(5_000).encode(),  # json.loads itself raises RecursionError
        b'{"id": 51, "ssn": ' + b"9" * 5_000 + b"}",  # an int over Python's int<->str limit
        b'{"id": 52, "ssn": "\\ud800"}',  # a lone surrogate: no UTF-8 form
    ]
    lines.append(b'{"id": 6, "ssn": "\\ud83d\\ude00 pair"}')  # a surrogate pair is fine
    good.append({"id": 6, "ssn": "\U0001f600 pair"})
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"\n".join(lines[:3] + bad + lines[3:]) + b"\r\n")
    enc = tmp_path / "enc"
    r = cli("encrypt", source, enc, "--fields", "ssn", "--key", KEY)
    assert r.code in (0, 3), r.err  # 3: dead letters over the budget (if one is configured)
    assert "Traceback" not in r.err
    assert _counts(r.out) == (13, 7, 6)
    reasons = sorted(d["reason"] for d in _letters(enc))
    too_deep = f"JSON nested too deep: objects and arrays nest at most {MAX_DEPTH} levels"
    assert reasons == sorted([
        "not valid UTF-8", too_deep, too_deep, too_deep, "not valid JSON",
        "not valid Unicode: a \\u escape names a lone surrogate",
    ])  # fmt: skip
    utf8 = next(d for d in _letters(enc) if d["reason"] == "not valid UTF-8")
    assert utf8["record"] == '{"id": 50, "ssn": "\\xff\\xfe"}'
    dec = tmp_path / "dec"
    r = cli("decrypt", enc, dec, "--key", KEY)
    assert r.code == 0, r.err
    assert sorted((json.loads(x) for x in shard_lines(dec)), key=lambda d: d["id"]) == good


def _csv_text(rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


def test_csv_quoted_newlines_are_one_record_and_bad_rows_are_dead_letters(cli, tmp_path: Path) -> None:
    rows = [["id", "ssn", "address"]] + [
        [str(i), f"900-00-{i:04d}", f"{i} Main St\nApt {i}\r\nSpringfield" if i % 2 else "x, \"y\""]
        for i in range(6)
    ]
    text = _csv_text(rows)
    assert text.count("\n") > 7  # quoted newlines: more lines than rows
    source = tmp_path / "in.csv"
    source.write_bytes(text.encode() + b"7,\xff\xfe,bad utf-8\r\n" + b"8,too,many,columns\r\n"
                       + b'9,"x"y,bad quote\r\n' + b'10,"unterminated\r\n')
    enc = tmp_path / "enc"
    r = cli("encrypt", source, enc, "--fields", "ssn,address", "--key", KEY)
    assert r.code in (0, 3), r.err
    assert "Traceback" not in r.err
    assert _counts(r.out) == (10, 6, 4)
    letters = _letters(enc)
    assert sorted(d["reason"] for d in letters) == [
        "not a valid CSV row", "not a valid CSV row", "not valid UTF-8",
        "the row has 4 columns, the header has 3"]  # fmt: skip
    bad_rows = sorted(d["record"]["line"] for d in letters if d["reason"] == "not a valid CSV row")
    assert bad_rows == [text.count("\n") + 3, text.count("\n") + 4]  # physical line numbers
    dec = tmp_path / "dec"
    r = cli("decrypt", enc, dec, "--key", KEY)
    assert r.code == 0, r.err
    back = []
    for shard in sorted(dec.glob("part-*")):
        back += list(csv.reader(io.StringIO(shard.read_bytes().decode("utf-8"), newline="")))[1:]
    assert sorted(back) == sorted(rows[1:])


def test_a_line_over_the_record_limit_is_a_dead_letter(cli, tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    with source.open("wb") as f:
        f.write(b'{"id": 1, "ssn": "a"}\n')
        f.write(b'{"id": 2, "ssn": "' + b"x" * (MAX_RECORD_BYTES + 1) + b'"}\n')
        f.write(b'{"id": 3, "ssn": "c"}')  # no final newline
    enc = tmp_path / "enc"
    r = cli("encrypt", source, enc, "--fields", "ssn", "--key", KEY)
    assert r.code in (0, 3), r.err
    assert _counts(r.out) == (3, 2, 1)
    (letter,) = _letters(enc)
    assert letter["reason"] == f"record too large: a line or row holds at most {MAX_RECORD_BYTES} bytes"
    assert letter["record"] == {"file": str(source), "offset": 22}


def _forge(value_text: str, plaintext: bytes, name: str) -> str:
    """A field value sealed with the real data key of ``value_text``: it authenticates."""
    from kmsbeam import open_key_source

    parsed = parse(from_text(value_text), FIELD_V1)
    dek = open_key_source(KEY).decrypt_data_key(parsed.wrapped)
    return to_text(Sealer(FIELD_V1, dek, parsed.wrapped).seal(plaintext, name))


def _deep_list(depth: int) -> bytes:
    enc = b"\x00"
    for _ in range(depth):
        enc = b"\x0a\x01" + write_varint(len(enc)) + enc
    return enc


FORGED = {
    "deep": (_deep_list(2_000), "value too deep (field ssn): lists and maps nest at most 64 levels"),
    "int": (b"\x03" + b"\x7f" * 1_000_000, "value too large (field ssn): an int holds at most 1024 bytes"),
    "decimal": (b"\x09" + b"9" * 100_000, "value too large (field ssn): a decimal has at most 1024 characters"),
    "kept": (b"\x0c", "invalid value encoding (field ssn): the kept marker is only a value of a record payload's top-level map"),
}  # fmt: skip


def test_decrypt_of_authentic_values_the_codec_refuses(cli, tmp_path: Path) -> None:
    records = [{"id": i, "ssn": f"900-00-{i:04d}"} for i in range(8)]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    enc = tmp_path / "enc"
    assert cli("encrypt", source, enc, "--fields", "ssn", "--key", KEY).code == 0
    shard = next(enc.glob("part-*"))
    encrypted = [json.loads(x) for x in shard.read_text(encoding="utf-8").splitlines()]
    for record, (plaintext, _) in zip(encrypted, FORGED.values()):
        record["ssn"] = _forge(record["ssn"], plaintext, "ssn")
    shard.write_text("".join(json.dumps(r) + "\n" for r in encrypted), encoding="utf-8")
    dec = tmp_path / "dec"
    r = cli("decrypt", enc, dec, "--key", KEY)
    assert r.code in (0, 3), r.err
    assert "Traceback" not in r.err
    assert _counts(r.out) == (8, 4, 4)
    letters = _letters(dec)
    assert sorted(d["reason"] for d in letters) == sorted(reason for _, reason in FORGED.values())
    assert not any(d["reason"].startswith("authentication failed") for d in letters)
    forged_ids = {r["id"] for r in encrypted[: len(FORGED)]}
    assert sorted((json.loads(x) for x in shard_lines(dec)), key=lambda d: d["id"]) == [
        r for r in records if r["id"] not in forged_ids]


@pytest.mark.parametrize("mode", ["fields", "record"])
def test_deep_but_allowed_json_round_trips(cli, tmp_path: Path, mode: str) -> None:
    deepest: Any = 1
    for _ in range(MAX_DEPTH - 1):  # the record is level 1: JSON and codec both at the limit
        deepest = [deepest]
    record = {"id": 1, "ssn": deepest}
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(record) + "\n", encoding="utf-8")
    args = ["--fields", "ssn"] if mode == "fields" else ["--mode", "record", "--keep", "id"]
    enc, dec = tmp_path / "enc", tmp_path / "dec"
    assert cli("encrypt", source, enc, *args, "--key", KEY).code == 0
    r = cli("decrypt", enc, dec, "--key", KEY)
    assert r.code == 0, r.err
    assert [json.loads(x) for x in shard_lines(dec)] == [record]


def test_a_csv_header_that_is_not_utf8_is_a_usage_error(cli, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(b"id,s\xffn\n1,2\n")
    r = cli("encrypt", source, tmp_path / "enc", "--fields", "id", "--key", KEY)
    assert r.code == 2 and "is not UTF-8 text" in r.err and "Traceback" not in r.err


@pytest.mark.parametrize("runner", [
    [], ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"],
    ["--runner", "PortableRunner", "--job_endpoint", "embed", "--environment_type", "LOOPBACK"],
], ids=["in_memory", "multi_processing", "portable"])  # fmt: skip
def test_parquet_decrypt_of_an_authentic_value_of_another_type(cli, tmp_path: Path, runner: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kmsbeam import open_key_source

    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "n": [10, 20, 30], "s": ["a", "b", "c"]}), source)
    enc, dec = tmp_path / "enc", tmp_path / "dec"
    assert cli("encrypt", source, enc, "--fields", "n", "--key", KEY).code == 0
    (shard,) = enc.glob("part-*")
    rows = pq.read_table(shard).to_pylist()
    parsed = parse(rows[1]["n"], FIELD_V1)
    dek = open_key_source(KEY).decrypt_data_key(parsed.wrapped)
    rows[1]["n"] = Sealer(FIELD_V1, dek, parsed.wrapped).seal(b"\x05not an int", "n")  # a str
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(shard)), shard)
    r = cli("decrypt", enc, dec, "--key", KEY, *runner)  # dead letters leave finish_bundle
    assert r.code in (0, 3), r.err
    assert _counts(r.out) == (3, 2, 1)
    (letter,) = _letters(dec)
    assert letter == {"transform": "FormatParquet", "record": {"id": 2, "s": "b"},
                      "reason": "wrong type: a value does not fit its Parquet column's type"}  # fmt: skip
    (out,) = dec.glob("part-*")
    assert pq.read_table(out).to_pylist() == [{"id": 1, "n": 10, "s": "a"}, {"id": 3, "n": 30, "s": "c"}]


def test_the_record_limit_is_a_parameter_of_reading_and_writing(tmp_path: Path) -> None:
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    from kmsbeam.pipelines import formats
    from kmsbeam.pipelines.jobs import pipeline_options

    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n{"a": "' + "x" * 200 + '"}\n{"a": "' + "y" * 80 + '"}\n')
    options, runner = pipeline_options([])
    with beam.Pipeline(runner=runner, options=options) as p:
        records, dead = formats.read_records(p, "jsonl", str(path), max_bytes=100)
        assert_that(records | beam.Map(lambda r: len(r["a"]) if isinstance(r["a"], str) else 0),
                    equal_to([0, 80]), label="read")  # fmt: skip
        assert_that(dead | beam.Map(lambda d: (d["reason"], d["record"]["offset"])), equal_to(
            [("record too large: a line or row holds at most 100 bytes", 9)]), label="dead")
        # written: {"a":"yyy..."} is 88 bytes, over a 50-byte limit for the output
        out_dead = formats.write_records(records, "jsonl", str(tmp_path / "out" / "part"),
                                         max_bytes=50)  # fmt: skip
        assert_that(out_dead | beam.Map(lambda d: (d["reason"], d["record"])), equal_to(
            [("record too large: a line or row holds at most 50 bytes", {"bytes": 88})]),
            label="written")
    assert [json.loads(x) for x in shard_lines(tmp_path / "out")] == [{"a": 1}]
