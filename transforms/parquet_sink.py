"""Parquet files through Beam's public sink API: ``ParquetSink`` and ``WriteParquetFiles``.

Beam's ``WriteToParquet`` passes no options to ``pyarrow.parquet.ParquetWriter`` (encryption
properties, per-column encodings) and its sink class is private, so kmsbeam writes Parquet
with this ``FileBasedSink``: sharding, the ``beam-temp-*`` folder and the final
``PREFIX-SSSSS-of-NNNNN.parquet`` names stay Beam's; each temp file is a ``ParquetWriter`` over
a ``FileSystems`` handle, so every registered scheme (``oss://`` too) works. Subclasses give
per-file writer options (``file_options``) and files written next to each temp file that
follow it to its final name (``companions``, e.g. PME's external key material).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filebasedsink import FileBasedSink
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

__all__ = ["OpenShard", "ParquetSink", "RecordsToTables", "WriteParquetFiles"]


class OpenShard:
    """One open temp file: the writer and the ``FileSystems`` handle under it."""

    __slots__ = ("handle", "writer")

    def __init__(self, writer: pq.ParquetWriter, handle: Any) -> None:
        self.writer = writer
        self.handle = handle


class ParquetSink(FileBasedSink):
    """Arrow tables (or record batches) to Parquet shards.

    Args:
        file_path_prefix, file_name_suffix, num_shards, shard_name_template: as for Beam's
            ``WriteToParquet``.
        schema: the Arrow schema of every file.
        codec: Parquet compression.
        writer_options: more ``ParquetWriter`` keyword arguments, the same for every file.
    """

    def __init__(self, file_path_prefix: str, schema: pa.Schema, *, codec: str = "snappy",
                 file_name_suffix: str = ".parquet", num_shards: int = 0,
                 shard_name_template: str | None = None,
                 writer_options: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        super().__init__(file_path_prefix, coder=None, file_name_suffix=file_name_suffix,
                         num_shards=num_shards, shard_name_template=shard_name_template,
                         mime_type="application/x-parquet",
                         compression_type=CompressionTypes.UNCOMPRESSED)  # fmt: skip
        self.schema = schema
        self.codec = codec
        self.writer_options = dict(writer_options or {})

    def file_options(self, temp_path: str) -> dict[str, Any]:
        """``ParquetWriter`` options for the one file at ``temp_path`` (none here)."""
        return {}

    def companions(self, path: str) -> list[str]:
        """Files written next to ``path`` that follow it when it is renamed (none here)."""
        return []

    def open(self, temp_path: str) -> OpenShard:
        options = {**self.writer_options, **self.file_options(temp_path)}
        handle = super().open(temp_path)
        writer = pq.ParquetWriter(handle, self.schema, compression=self.codec, **options)
        return OpenShard(writer, handle)

    def write_record(self, opened: OpenShard, table: pa.Table | pa.RecordBatch) -> None:
        opened.writer.write(table)

    def close(self, opened: OpenShard) -> None:
        opened.writer.close()
        opened.handle.close()

    def final_name(self, shard: int, num_shards: int) -> str:
        """The final name of shard ``shard`` of ``num_shards`` (bounded writes)."""
        names = {"shard_num": shard, "num_shards": num_shards, "window": None, "window_utc": None}
        return "".join([self.file_path_prefix.get(), self.shard_name_format % names,
                        self.file_name_suffix.get()])  # fmt: skip

    def finalize_write(self, init_result: Any, writer_results: Any, pre_finalize_results: Any) -> Iterator[str]:
        """Move each temp file's companions next to its final name, then Beam's renames."""
        temps = sorted(writer_results)
        moves: list[tuple[str, str]] = []
        for shard, temp in enumerate(temps):
            sources = self.companions(temp)
            if sources:
                targets = self.companions(self.final_name(shard, len(temps)))
                moves += [(s, d) for s, d in zip(sources, targets) if FileSystems.exists(s)]  # a retry: moved
        if moves:
            FileSystems.rename([s for s, _ in moves], [d for _, d in moves])
        yield from super().finalize_write(init_result, writer_results, pre_finalize_results)

    def display_data(self) -> dict[str, Any]:
        return {**super().display_data(), "codec": self.codec, "schema": str(self.schema)}


class RecordsToTables(beam.DoFn):
    """Dict records -> Arrow tables of up to ``max_bytes`` (per bundle); tables pass."""

    def __init__(self, schema: pa.Schema, batch_rows: int = 1000, max_bytes: int = 64 << 20) -> None:
        self._schema = schema
        self._batch_rows = batch_rows
        self._max_bytes = max_bytes

    def start_bundle(self) -> None:
        self._rows: list[Any] = []
        self._batches: list[pa.RecordBatch] = []
        self._bytes = 0

    def _flush_rows(self) -> None:
        if self._rows:
            batch = pa.RecordBatch.from_pylist(self._rows, schema=self._schema)
            self._batches.append(batch)
            self._bytes += batch.nbytes
            self._rows = []

    def _table(self) -> pa.Table:
        self._flush_rows()
        table = pa.Table.from_batches(self._batches, schema=self._schema)
        self._batches, self._bytes = [], 0
        return table

    def process(self, element: Any) -> Iterator[Any]:
        if isinstance(element, (pa.Table, pa.RecordBatch)):
            yield element
            return
        self._rows.append(element)
        if len(self._rows) >= self._batch_rows:
            self._flush_rows()
            if self._bytes >= self._max_bytes:
                yield self._table()

    def finish_bundle(self) -> Iterator[Any]:
        if self._rows or self._batches:
            yield WindowedValue(self._table(), GlobalWindow().max_timestamp(), (GlobalWindow(),))


class WriteParquetFiles(beam.PTransform):
    """Dict records or ``pyarrow.Table`` elements to ``sink``'s files (bounded input).

    Args:
        sink: the ``ParquetSink`` (its schema converts the records).
        record_batch_size, row_group_buffer_size: how dict records are gathered into tables.

    Returns the PCollection of written file names.
    """

    def __init__(self, sink: ParquetSink, *, record_batch_size: int = 1000,
                 row_group_buffer_size: int = 64 << 20, label: str | None = None) -> None:  # fmt: skip
        super().__init__(label)
        self.sink = sink
        self._batching = (record_batch_size, row_group_buffer_size)

    def expand(self, pcoll: Any) -> Any:
        tables = pcoll | "ToTables" >> beam.ParDo(RecordsToTables(self.sink.schema, *self._batching))
        return tables | "Write" >> beam.io.Write(self.sink)

    def display_data(self) -> dict[str, Any]:
        return {"file_path_prefix": str(self.sink.file_path_prefix)}
