"""Reading and writing the job formats (JSONL, CSV, Parquet) and the Parquet schema changes.

======== ============================= ============================================ ==========
format   extensions                    records                                      encoding
======== ============================= ============================================ ==========
jsonl    .jsonl .json .ndjson          ``json.loads`` per line; written compactly    text
csv      .csv                          dict of strings per row (header required)     text
parquet  .parquet                      ``ReadFromParquet`` dicts; exact Arrow types  bytes
======== ============================= ============================================ ==========

JSONL and CSV are read by ``_read`` (not Beam's ``ReadFromText``): linear in line length, a
bad line or row (not UTF-8, not JSON, nested too deep, over ``_read.MAX_RECORD_BYTES``) is a
dead letter, and a quoted CSV field may span lines.

The jobs move records in lists (``read_record_batches`` -> ``write_record_batches``: up to
``_fns.BATCH_SIZE`` records per element, one write per list); ``read_records`` and
``write_records`` are the same with one record per element.

Caveats: a CSV file is read by one worker (JSONL files are split into ranges). Parquet timestamps with nanosecond precision are not supported (Python's
datetime holds microseconds).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from kmsbeam.pipelines import _fns, _read, paths
from kmsbeam.pipelines._inputs import match_input
from kmsbeam.pipelines._parquet import FitParquet, WriteParquet
from kmsbeam.transforms import DEAD_LETTER

from kmsbeam import ConfigurationError, FormatError

__all__ = [
    "ENCODINGS",
    "FORMATS",
    "csv_header",
    "detect_format",
    "encrypted_schema",
    "input_files",
    "parquet_schema",
    "read_record_batches",
    "read_records",
    "record_schema",
    "write_record_batches",
    "write_records",
]

FORMATS = ("jsonl", "csv", "parquet")
SUFFIX = {"jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet"}
ENCODINGS = {"jsonl": "text", "csv": "text", "parquet": "bytes"}
_EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv",
               ".parquet": "parquet"}  # fmt: skip


def match_files(pattern: str) -> list[str]:
    """The files a path or glob names (sorted, any filesystem: ``kmsbeam.pipelines.paths``),
    or a ConfigurationError saying what to do."""
    files = paths.match(pattern)
    if not files:
        raise ConfigurationError(
            f"no input file matches {pattern}; give an existing file or a glob such as 'data/*.jsonl'"
        )
    return files


def input_files(spec: Any) -> list[str]:
    """A job's input files: ``spec.files`` when given (a watch's window), else what
    ``spec.input`` names (``match_files``)."""
    return list(spec.files) if spec.files is not None else match_files(spec.input)


def detect_format(files: Sequence[str], explicit: str | None) -> str:
    """The format named by ``--format`` or by the files' extension."""
    if explicit:
        if explicit not in FORMATS:
            raise ConfigurationError(f"unknown format {explicit!r}: use one of {', '.join(FORMATS)}")
        return explicit
    found = {_EXTENSIONS.get(os.path.splitext(paths.basename(f))[1].lower()) for f in files}
    if None in found or len(found) != 1:
        raise ConfigurationError(
            "cannot tell the input format from the file extension; name the files .jsonl, .csv "
            "or .parquet, or pass --format jsonl|csv|parquet"
        )
    return str(found.pop())


def csv_header(files: Sequence[str]) -> list[str]:
    """The header row shared by all the CSV files."""
    header: list[str] | None = None
    for name in files:
        with paths.open_read(name) as raw:
            f = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
            row = next(csv.reader(f), None)  # (rows after it may hold bytes that are not UTF-8)
        if not row:
            raise ConfigurationError(f"{name} has no CSV header row; add one naming the columns")
        if any(map(_read.ESCAPED.search, row)):
            raise ConfigurationError(f"the CSV header of {name} is not UTF-8 text; fix its first line")
        if header is not None and row != header:
            raise ConfigurationError(f"{name} has another CSV header than {files[0]}")
        header = row
    assert header is not None
    if len(set(header)) != len(header):
        raise ConfigurationError(f"the CSV header of {files[0]} names a column twice")
    return header


def parquet_schema(files: Sequence[str]) -> pa.Schema:
    """The Arrow schema shared by all the Parquet files."""
    schema: pa.Schema | None = None
    for name in files:
        try:
            with paths.open_read(name) as f:
                current = pq.read_schema(f)
        except (OSError, pa.ArrowException) as exc:
            raise FormatError(f"{name} is not a readable Parquet file (its footer is damaged, "
                              "or the file is truncated); replace it or leave it out") from exc  # fmt: skip
        if schema is not None and not current.equals(schema):
            raise ConfigurationError(f"{name} has another Parquet schema than {files[0]}")
        schema = current
    assert schema is not None
    return schema


def _columns(schema: pa.Schema | pa.StructType) -> list[str]:
    return [f.name for f in schema]


def _replace(field: pa.Field, paths: list[list[str]], new_type: pa.DataType, where: str) -> pa.Field:
    if any(not p for p in paths):
        return field.with_type(new_type)
    if not pa.types.is_struct(field.type):
        raise ConfigurationError(
            f"{where}.{paths[0][0]} goes into a {field.type} column; only struct columns have "
            "nested fields"
        )
    children = [field.type.field(i) for i in range(field.type.num_fields)]
    _check_known(children, paths, where)
    new = [_replace(c, [p[1:] for p in paths if p[0] == c.name], new_type, f"{where}.{c.name}")
           if any(p[0] == c.name for p in paths) else c for c in children]  # fmt: skip
    return field.with_type(pa.struct(new))


def _check_known(fields: Sequence[pa.Field], paths: list[list[str]], where: str) -> None:
    names = {f.name for f in fields}
    for p in paths:
        if p[0] not in names:
            field = f"{where}.{p[0]}" if where else p[0]
            raise ConfigurationError(
                f"unknown field {field!r}: the columns are {', '.join(sorted(names))}"
            )


def encrypted_schema(schema: pa.Schema, fields: Sequence[str]) -> pa.Schema:
    """``schema`` with each (dotted) field turned into ``binary`` (nested into structs)."""
    paths = [f.split(".") for f in fields]
    top = list(schema)
    _check_known(top, paths, "")
    new = [_replace(f, [p[1:] for p in paths if p[0] == f.name], pa.binary(), f.name)
           if any(p[0] == f.name for p in paths) else f for f in top]  # fmt: skip
    return pa.schema(new)


def record_schema(schema: pa.Schema, keep: Sequence[str], payload_field: str) -> pa.Schema:
    """The record-mode schema: the kept columns (their types) and the binary payload."""
    _check_known(list(schema), [[k] for k in keep], "")
    return pa.schema([schema.field(k) for k in keep] + [pa.field(payload_field, pa.binary())])


def check_csv_fields(columns: Sequence[str], names: Sequence[str]) -> None:
    for name in names:
        if name not in columns:
            raise ConfigurationError(
                f"unknown field {name!r}: the CSV columns are {', '.join(columns)}"
            )


def read_record_batches(p: Any, fmt: str, pattern: str | Sequence[str], columns: Sequence[str] = (),
                        max_bytes: int = _fns.MAX_RECORD_BYTES) -> tuple[Any, Any]:  # fmt: skip
    """Read records in lists of up to ``_fns.BATCH_SIZE``; returns ``(lists, dead_letters or
    None)``, dead letters one per element. Counts ``records_read``. ``pattern``: a glob, or the
    files themselves (``_inputs.match_input``).

    ``max_bytes``: the largest JSONL line or CSV row; a longer one is a dead letter.
    """
    if fmt == "parquet":
        from kmsbeam.pipelines._read_parquet import ReadParquetTables, table_batches

        lists = (p | "ReadParquet" >> ReadParquetTables(pattern)
                 | "Rows" >> beam.FlatMap(table_batches, _fns.BATCH_SIZE)
                 | "CountRead" >> beam.ParDo(_fns.Count("records_read")))  # fmt: skip
        return lists, None
    files = p | "MatchInput" >> match_input(pattern)
    if fmt == "csv":  # whole files: a quoted field may span lines
        parsed = (files | "SpreadCSV" >> beam.Reshuffle()
                  | "ReadCSV" >> beam.ParDo(_read.ReadCsvFiles(list(columns), max_bytes)).with_outputs(
                      DEAD_LETTER, main="records"))  # fmt: skip
    else:  # byte ranges of RANGE_BYTES: a large file is read by many workers
        parsed = (files | "SplitJSONL" >> beam.FlatMap(_read.ranges) | "SpreadJSONL" >> beam.Reshuffle()
                  | "ReadJSONL" >> beam.ParDo(_read.ReadJsonlRanges(max_bytes)).with_outputs(
                      DEAD_LETTER, main="records"))  # fmt: skip
    return parsed.records, parsed[DEAD_LETTER]


def read_records(p: Any, fmt: str, pattern: str | Sequence[str], columns: Sequence[str] = (),
                 max_bytes: int = _fns.MAX_RECORD_BYTES) -> tuple[Any, Any]:  # fmt: skip
    """``read_record_batches`` with one record per element."""
    lists, dead = read_record_batches(p, fmt, pattern, columns, max_bytes)
    return lists | "OnePerElement" >> beam.FlatMap(_fns.records_of), dead


def write_record_batches(
    lists: Any,
    fmt: str,
    prefix: str,
    *,
    columns: Sequence[str] = (),
    schema: pa.Schema | None = None,
    encrypted: Sequence[str] = (),
    fit_shown: Sequence[str] | None = None,
    max_bytes: int = _fns.MAX_RECORD_BYTES,
) -> Any:
    """Write lists of records as ``part-SSSSS-of-NNNNN.<ext>`` shards (JSONL, CSV: one string
    of lines per list); returns dead letters (JSONL, CSV: a record that does not fit the
    format or ``_fns.MAX_RECORD_BYTES``) or None (Parquet). Counts ``records_written``.

    ``encrypted``: the (dotted) fields holding encrypted values, which Parquet stores with
    DELTA_BYTE_ARRAY (see ``_parquet``). ``fit_shown`` (decrypting to Parquet): records are
    checked against ``schema`` first, and one that does not fit is a dead letter showing only
    these fields (``shown_in_dead_letters``). ``max_bytes``: the largest line or row written
    (a record over it is a dead letter: the reader of the output would refuse it).
    """
    suffix = SUFFIX[fmt]
    if fmt == "parquet":  # the Parquet sink takes records one per element
        assert schema is not None
        out, dead = lists | "ParquetRecords" >> beam.FlatMap(_fns.records_of), None
        if fit_shown is not None:
            fitted = out | "FitParquet" >> beam.ParDo(FitParquet(schema, fit_shown)).with_outputs(
                DEAD_LETTER, main="records")
            out, dead = fitted.records, fitted[DEAD_LETTER]
        (out | "CountWritten" >> beam.ParDo(_fns.Count("records_written"))
         | "WriteParquet" >> WriteParquet(prefix, schema, suffix, encrypted))  # fmt: skip
        return dead
    if fmt == "csv":
        formatted = lists | "FormatCSV" >> beam.ParDo(_fns.FormatCsv(columns, max_bytes)).with_outputs(
            DEAD_LETTER, main="lines")
        formatted.lines | "WriteCSV" >> beam.io.WriteToText(
            prefix, file_name_suffix=suffix, header=_fns.csv_line(columns))
    else:
        formatted = lists | "FormatJSONL" >> beam.ParDo(_fns.FormatJsonl(max_bytes)).with_outputs(
            DEAD_LETTER, main="lines")
        formatted.lines | "WriteJSONL" >> beam.io.WriteToText(prefix, file_name_suffix=suffix)
    return formatted[DEAD_LETTER]


def write_records(records: Any, fmt: str, prefix: str, **options: Any) -> Any:
    """``write_record_batches`` of records one per element (a list of one each)."""
    return write_record_batches(records | "InLists" >> beam.Map(lambda r: [r]), fmt, prefix, **options)


def shown_in_dead_letters(manifest: Any, schema: pa.Schema) -> list[str]:
    """The cleartext fields of decrypted records: the kept fields (record mode), or the columns
    no encrypted field path starts in (fields mode)."""
    if manifest.mode != "fields":
        return list(manifest.keep)
    hidden = {f.split(".")[0] for f in manifest.fields}
    return [n for n in schema.names if n not in hidden]


def write_dead_letters(letters: Sequence[Any], prefix: str) -> None:
    """Flatten the dead letters and write them as JSONL shards (nothing when there are none)."""
    merged = tuple(letters) | "DeadLetters" >> beam.Flatten()
    (merged
     | "DeadLetterJSON" >> beam.Map(_fns.dead_letter_line)
     | "CountDead" >> beam.ParDo(_fns.Count("dead_letters_written"))
     | "WriteDeadLetters" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl",
                                                 skip_if_empty=True))  # fmt: skip
