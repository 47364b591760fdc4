"""Records of input files read in the launcher, as the job's readers give them: the preflight's
sample (``kmsbeam.pipelines.preflight``) and the headers ``kmsbeam vault check`` reads
(``kmsbeam.pipelines.vaults``). A JSONL line that is not a JSON object is skipped (the job
dead-letters it)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from kmsbeam import FieldPath

__all__ = ["MISSING", "SAMPLE", "file_records", "get", "sample_records", "value_at"]

#: how many records of the input are sampled
SAMPLE = 100
MISSING: Any = object()  # no value at a path (``get``)


def _lines(path: str) -> Iterator[bytes]:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as f:
        yield from f


def _jsonl(path: str) -> Iterator[Any]:
    for raw in _lines(path):
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):  # a bad line is a dead letter in the job
            continue
        if isinstance(record, dict):
            yield record


def _csv(path: str) -> Iterator[Any]:
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as f:
        text = io.TextIOWrapper(f, encoding="utf-8-sig", errors="replace", newline="")
        yield from csv.DictReader(text)


def _parquet(path: str, n: int) -> Iterator[Any]:
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as f:
        data = f.read()  # ParquetFile needs a seekable file; read_records reads it whole too
    reader = pq.ParquetFile(io.BytesIO(data))
    for batch in reader.iter_batches(batch_size=n):
        yield from batch.to_pylist()


def file_records(path: str, fmt: str, batch: int = SAMPLE) -> Iterator[Any]:
    """The records of one file, lazily, as the job's readers give them (a line that is not a
    JSON object is skipped: the job dead-letters it); Parquet read ``batch`` rows at a time."""
    return _jsonl(path) if fmt == "jsonl" else _csv(path) if fmt == "csv" else _parquet(path, batch)


def sample_records(files: Sequence[str], fmt: str, n: int = SAMPLE) -> list[Any]:
    """The first ``n`` records of ``files`` (in order), as the job's readers give them."""
    out: list[Any] = []
    for path in files:
        for record in file_records(path, fmt, n):
            out.append(record)
            if len(out) >= n:
                return out
    return out


def value_at(record: Any, path: FieldPath) -> Any:
    """The value at ``path`` in ``record``, None when it is missing or null."""
    value = get(record, path)
    return None if value is MISSING else value


def get(record: Any, path: FieldPath) -> Any:
    """The value at ``path`` in ``record``, ``MISSING`` when there is none."""
    node = record
    for part in path.parts:
        if not isinstance(node, Mapping):
            return MISSING
        node = node.get(part, MISSING)
        if node is MISSING:
            return MISSING
    return node
