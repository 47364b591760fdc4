"""Parquet output with per-column encodings: encrypted binary columns as DELTA_BYTE_ARRAY.

Encrypted values of one data key share their header (format byte, wrapped key), so in a
Parquet page they differ only after it. ``DELTA_BYTE_ARRAY`` stores each value as the length
of the prefix it shares with the previous one plus the rest: the header costs nothing after
the first value. Dictionary encoding cannot help (every value is unique) and is turned off for
those columns; the other columns keep pyarrow's defaults. Measured in ``benchmarks/``.

Beam's ``WriteToParquet`` takes neither ``column_encoding`` nor ``use_dictionary``, so this
module swaps in a subclass of its (private) sink that passes them to ``pq.ParquetWriter``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import filebasedsink, parquetio

__all__ = ["CODEC", "WriteParquet", "leaf_paths"]

CODEC = "snappy"
_ENCRYPTED_ENCODING = "DELTA_BYTE_ARRAY"


def leaf_paths(schema: pa.Schema) -> list[str]:
    """The dotted Parquet column paths of ``schema``'s leaves (``s.e``, ``l.list.element``)."""
    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink, use_compliant_nested_type=True)
    meta = pq.ParquetFile(pa.BufferReader(sink.getvalue())).schema
    return [meta.column(i).path for i in range(len(meta))]


class _Sink(parquetio._ParquetSink):
    """Beam's Parquet sink, with ``use_dictionary`` and ``column_encoding`` per column."""

    def __init__(self, *args: Any, dictionary: list[str], encodings: dict[str, str]) -> None:
        super().__init__(*args)
        self._dictionary = dictionary
        self._encodings = encodings

    def open(self, temp_path: str) -> Any:
        self._file_handle = filebasedsink.FileBasedSink.open(self, temp_path)
        return pq.ParquetWriter(
            self._file_handle,
            self._schema,
            compression=self._codec,
            use_deprecated_int96_timestamps=self._use_deprecated_int96_timestamps,
            use_compliant_nested_type=self._use_compliant_nested_type,
            use_dictionary=self._dictionary,
            column_encoding=self._encodings,
        )


class WriteParquet(parquetio.WriteToParquet):
    """``WriteToParquet`` (snappy) whose ``encrypted`` binary columns use DELTA_BYTE_ARRAY.

    Args:
        prefix, schema, suffix: as for ``WriteToParquet``.
        encrypted: dotted paths of binary columns holding encrypted values; paths that are
            not binary leaves of ``schema`` are ignored.
    """

    def __init__(
        self, prefix: str, schema: pa.Schema, suffix: str, encrypted: Sequence[str] = ()
    ) -> None:
        super().__init__(prefix, schema, codec=CODEC, file_name_suffix=suffix)
        leaves = leaf_paths(schema)
        binary = [p for p in encrypted if p in leaves and _is_binary(schema, p)]
        if binary:
            s = self._sink
            self._sink = _Sink(
                s.file_path_prefix, schema, CODEC, s._use_deprecated_int96_timestamps,
                s._use_compliant_nested_type, s.file_name_suffix, s.num_shards,
                s.shard_name_template, s.mime_type, s.triggering_frequency,
                dictionary=[p for p in leaves if p not in binary],
                encodings=dict.fromkeys(binary, _ENCRYPTED_ENCODING),
            )  # fmt: skip


def _is_binary(schema: pa.Schema | pa.StructType, path: str) -> bool:
    head, _, rest = path.partition(".")
    index = schema.get_field_index(head)
    if index < 0:
        return False
    field_type = schema.field(index).type
    if rest:
        return pa.types.is_struct(field_type) and _is_binary(field_type, rest)
    return bool(pa.types.is_binary(field_type) or pa.types.is_large_binary(field_type))
