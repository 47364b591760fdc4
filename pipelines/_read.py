"""Reading JSONL and CSV input: linear in line length, lists of records, one dead letter per
bad record.

Beam's ``ReadFromText`` is not used for job input: it decodes each line as strict UTF-8 (one
bad byte fails the whole job), grows its buffer by concatenation (a line of n bytes costs
O(n^2 / 8 KiB): minutes for a 50 MB line) and cuts CSV rows at quoted newlines.

- **JSONL**: each file is cut into ranges of ``RANGE_BYTES``; a range reads the lines that
  *start* in it (the line running across its start belongs to the previous range), so a large
  file is read by many workers. Compressed files (``.gz``, ``.bz2``, ... by extension) are one
  range. Lines end in ``\\n`` (a ``\\r`` before it is dropped).
- **CSV**: one worker reads a whole file with ``csv.reader``, so a quoted field may span lines
  (files are the unit of parallelism). The header row is skipped.
- **Output**: the good records of a range or file in lists of up to ``BATCH_SIZE`` (one
  element each), each dead letter one element on ``DEAD_LETTER``; ``records_read`` counts both,
  once per range or file.
- **Limits**: a line (JSONL) or row (CSV) longer than ``max_bytes`` (default
  ``MAX_RECORD_BYTES``, 16 MiB) is a dead letter
  (``record too large``; the record is ``{"file", "offset"|"line"}``, not the data); an
  over-long JSONL line is skipped without being held in memory, a CSV row's lines are held
  while it is parsed. JSON nested deeper than the value codec's ``MAX_DEPTH`` is a dead letter
  (``JSON nested too deep``). Bytes that are not UTF-8 are a dead letter (``not valid UTF-8``,
  the record shown with ``\\xNN`` escapes).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from itertools import islice
from typing import Any, BinaryIO

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from kmsbeam.pipelines._fns import BATCH_SIZE, MAX_RECORD_BYTES, NAMESPACE, _dead, csv_line, too_large
from kmsbeam.pipelines._json import Rejected, parse_line

__all__ = ["MAX_RECORD_BYTES", "RANGE_BYTES", "ReadCsvFiles", "ReadJsonlRanges", "ranges",
           "read_lines"]  # fmt: skip

RANGE_BYTES = 64 * 2**20  # JSONL files are read in ranges of this size
_CHUNK = 2**20
ESCAPED = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of bytes that are not UTF-8


def ranges(meta: Any, size: int = RANGE_BYTES) -> Iterator[tuple[str, int, int]]:
    """``(path, start, end)`` byte ranges covering a file (``FileMetadata``); one range for a
    compressed or empty file (``end`` -1: to the end)."""
    path, total = meta.path, meta.size_in_bytes
    if CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED or total <= size:
        yield path, 0, -1
        return
    for start in range(0, total, size):
        yield path, start, -1 if start + size >= total else start + size


def read_lines(f: BinaryIO, start: int = 0, end: int = -1, limit: int | None = None,
               keep_ends: bool = False, chunk: int = _CHUNK) -> Iterator[tuple[int, bytes | None]]:  # fmt: skip
    """``(offset, line)`` for each line of ``f`` that starts in ``[start, end)`` (``end`` -1:
    to the end of the file), in linear time, reading ``chunk`` bytes at a time.

    ``line`` is the line's bytes (without ``\\n`` and a ``\\r`` before it, unless
    ``keep_ends``), or ``None`` when it is longer than ``limit`` bytes (``None``: no limit):
    such a line is skipped without being held in memory.
    """
    offset = 0  # the file offset of the line being read
    if start > 0:
        f.seek(start - 1)
        offset = start - 1
    mine = start == 0  # the line through the first "\n" at or after start - 1 is not ours
    parts: list[bytes] = []  # the bytes read so far of a line that has not ended yet
    held = 0  # their length, also once dropped (over the limit, or not ours)
    keep = mine  # the line's bytes are kept (ours and within the limit so far)
    cap = -1 if limit is None else limit + 1
    while True:
        data = f.read(chunk)
        if not data:
            break
        pieces = data.split(b"\n")
        tail = pieces.pop()  # after the chunk's last "\n": a line that has not ended
        if pieces:
            first = pieces[0]
            size = held + len(first)
            if mine:
                yield offset, _line(b"".join(parts) + first if keep else None, size, limit, keep_ends)
            offset += size + 1
            if 0 <= end <= offset:
                return
            mine, parts, held, keep = True, [], 0, True
            for piece in islice(pieces, 1, None):  # whole lines: the common case, inline
                size = len(piece)
                if limit is not None and size > limit:
                    yield offset, None
                elif keep_ends:
                    yield offset, piece + b"\n"
                elif piece.endswith(b"\r"):
                    yield offset, piece[:-1]
                else:
                    yield offset, piece
                offset += size + 1
                if 0 <= end <= offset:
                    return
        held += len(tail)
        if keep and 0 <= cap < held:  # too long: what we hold is dropped
            parts, keep = [], False
        elif keep and tail:
            parts.append(tail)
    if mine and held:  # the last line, without a "\n"
        yield offset, _line(b"".join(parts) if keep else None, held, limit, keep_ends, b"")


def _line(line: bytes | None, size: int, limit: int | None, keep_ends: bool, ending: bytes = b"\n") -> bytes | None:
    """A line as ``read_lines`` gives it: ``line`` is its bytes without ``ending`` (or None
    when they were dropped) and ``size`` their length."""
    if line is None or (limit is not None and size > limit):
        return None
    if keep_ends:
        return line + ending
    return line[:-1] if line.endswith(b"\r") else line


def _shown(line: bytes) -> str:
    return line.decode("utf-8", "backslashreplace")


class _Batches:
    """Collects records into lists of ``BATCH_SIZE``; dead letters pass; counts both."""

    def __init__(self) -> None:
        self.read = 0
        self._batch: list[Any] = []

    def add(self, outs: Iterator[Any]) -> Iterator[Any]:
        """Take one record's outputs (its record or its dead letter); yield what is ready."""
        self.read += 1
        for out in outs:
            if isinstance(out, pvalue.TaggedOutput):
                yield out
                continue
            self._batch.append(out)
            if len(self._batch) >= BATCH_SIZE:
                yield self._batch
                self._batch = []

    def rest(self) -> Iterator[list[Any]]:
        if self._batch:
            yield self._batch
            self._batch = []


class ReadJsonlRanges(beam.DoFn):
    """``(path, start, end)`` -> lists of dicts, one per JSON line; every bad line a dead letter."""

    def __init__(self, max_bytes: int = MAX_RECORD_BYTES) -> None:
        self._max = max_bytes

    def setup(self) -> None:
        self._read = Metrics.counter(NAMESPACE, "records_read")

    def process(self, part: tuple[str, int, int]) -> Iterator[Any]:
        path, start, end = part
        read, batch = 0, []  # as _Batches does, inline: a few Python steps per line
        with FileSystems.open(path) as f:
            for offset, line in read_lines(f, start, end, self._max):
                if line is None:
                    read += 1
                    yield _dead("ReadJSONL", too_large(self._max), {"file": path, "offset": offset})
                    continue
                if offset == 0 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]  # a UTF-8 byte order mark
                if not line or line.isspace():  # blank (isspace: the ASCII spaces strip() drops)
                    continue
                read += 1
                parsed = parse_line(line)  # _json.py: its dead-letter reasons, as json.loads had them
                if type(parsed) is Rejected:
                    yield _dead("ParseJSON", *parsed)
                    continue
                batch.append(parsed)
                if len(batch) >= BATCH_SIZE:
                    yield batch
                    batch = []
        if batch:
            yield batch
        self._read.inc(read)


def _csv_line(row: list[str]) -> str:
    return _shown(csv_line(row).encode("utf-8", "surrogateescape"))


class ReadCsvFiles(beam.DoFn):
    """A CSV file's ``FileMetadata`` -> lists of dicts of strings, one per row (header
    skipped); every bad row a dead letter."""

    def __init__(self, columns: list[str], max_bytes: int = MAX_RECORD_BYTES) -> None:
        self._columns = list(columns)
        self._max = max_bytes

    def setup(self) -> None:
        self._read = Metrics.counter(NAMESPACE, "records_read")
        if csv.field_size_limit() < self._max:
            csv.field_size_limit(self._max)  # a process-wide setting: raised, never lowered

    def process(self, meta: Any) -> Iterator[Any]:
        path = meta.path
        with FileSystems.open(path) as f:
            size = [0]  # bytes handed to csv.reader so far

            def lines() -> Iterator[str]:
                for _, line in read_lines(f, limit=None, keep_ends=True):
                    assert line is not None
                    size[0] += len(line)
                    yield line.decode("utf-8", "surrogateescape")

            rows = csv.reader(lines(), strict=True)
            first, batches = True, _Batches()
            while True:
                before, number = size[0], rows.line_num + 1
                try:
                    row = next(rows)
                except StopIteration:
                    break
                except csv.Error:
                    dead = _dead("ParseCSV", "not a valid CSV row", {"file": path, "line": number})
                    yield from batches.add(iter((dead,)))
                    continue
                if first:  # the header (checked when the job started)
                    first = False
                    continue
                if not row:
                    continue  # a blank line
                yield from batches.add(self._row(path, number, row, size[0] - before))
        yield from batches.rest()
        self._read.inc(batches.read)

    def _row(self, path: str, number: int, row: list[str], size: int) -> Iterator[Any]:
        if size > self._max:
            yield _dead("ParseCSV", too_large(self._max), {"file": path, "line": number})
        elif any(map(ESCAPED.search, row)):
            yield _dead("ParseCSV", "not valid UTF-8", _csv_line(row))
        elif len(row) != len(self._columns):
            reason = f"the row has {len(row)} columns, the header has {len(self._columns)}"
            yield _dead("ParseCSV", reason, _csv_line(row))
        else:
            yield dict(zip(self._columns, row))
