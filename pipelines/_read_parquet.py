"""Reading Parquet input through Beam's filesystems, one row group per element, so that a
damaged or truncated file fails the job with one sentence naming the file and the reason.

Beam's ``ReadFromParquet`` fails with pyarrow's bare ``OSError`` (the CLI could only say "the
pipeline failed (OSError)"). Here each file's footer is read first (its row groups become
elements, spread over the workers), then each row group is read as one ``pyarrow.Table``;
a pyarrow error at either step raises ``FormatError("the Parquet file F cannot be read: it is
truncated ...")``. The reason is chosen from a fixed list, never pyarrow's text (which may
quote bytes of the file).

::

    tables = p | ReadParquetTables("oss://lake/raw/*.parquet")          # pyarrow.Table each
    lists = p | ReadParquetTables(pattern) | beam.FlatMap(table_batches) # lists of dicts
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from kmsbeam import FormatError
from kmsbeam.pipelines._inputs import match_input

__all__ = ["ReadParquetTables", "table_batches", "unreadable"]

_TRUNCATED = ("end of stream", "eof", "file size", "truncated", "out of bounds", "magic bytes",
              "unexpected end")  # fmt: skip


def unreadable(path: str, exc: BaseException) -> FormatError:
    """One sentence naming ``path`` and why pyarrow could not read it (a fixed reason)."""
    text = str(exc).lower()
    if any(word in text for word in _TRUNCATED):
        reason = "it is truncated or its footer is damaged"
    else:
        reason = f"a page or its metadata is damaged ({type(exc).__name__})"
    return FormatError(f"the Parquet file {path} cannot be read: {reason}; replace it or leave "
                       "it out of the input")  # fmt: skip


def _open(path: str) -> Any:
    return FileSystems.open(path, compression_type="uncompressed")


class _RowGroups(beam.DoFn):
    """A file's metadata -> ``(path, row group index)`` for each of its row groups."""

    def process(self, meta: Any) -> Iterator[tuple[str, int]]:
        path = meta.path
        failed: FormatError | None = None
        groups = 0
        try:
            with _open(path) as f:
                groups = pq.ParquetFile(f).metadata.num_row_groups
        except (OSError, pa.ArrowException) as exc:
            failed = unreadable(path, exc)
        if failed is not None:  # raised outside the handler: no pyarrow text chained
            raise failed
        for index in range(groups):
            yield path, index


class _ReadRowGroup(beam.DoFn):
    def process(self, part: tuple[str, int]) -> Iterator[pa.Table]:
        path, index = part
        failed: FormatError | None = None
        try:
            with _open(path) as f:
                table = pq.ParquetFile(f).read_row_group(index)
        except (OSError, pa.ArrowException) as exc:
            failed = unreadable(path, exc)
        if failed is not None:
            raise failed
        yield table


class ReadParquetTables(beam.PTransform):
    """The files ``pattern`` matches (any Beam filesystem; or a list of the files themselves)
    as one ``pyarrow.Table`` per row group, spread over the workers."""

    def __init__(self, pattern: str | Sequence[str]) -> None:
        super().__init__()
        self._pattern = pattern

    def expand(self, p: Any) -> Any:
        return (p
                | "Match" >> match_input(self._pattern)
                | "RowGroups" >> beam.ParDo(_RowGroups())
                | "Spread" >> beam.Reshuffle()
                | "ReadRowGroup" >> beam.ParDo(_ReadRowGroup()))  # fmt: skip


def table_batches(table: pa.Table, size: int = 512) -> Iterator[list[dict[str, Any]]]:
    """The rows of ``table`` as dicts (the values Beam's ``ReadFromParquet`` gives), in lists
    of up to ``size``."""
    rows = table.to_pylist()
    for start in range(0, len(rows), size):
        yield rows[start : start + size]
