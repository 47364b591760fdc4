"""Parquet output with per-column encodings, and the ``--parquet-mode pme|cells`` jobs.

Encrypted values of one data key share their header (format byte, wrapped key), so in a
Parquet page they differ only after it. ``DELTA_BYTE_ARRAY`` stores each value as the length
of the prefix it shares with the previous one plus the rest: the header costs nothing after
the first value. Dictionary encoding cannot help (every value is unique) and is turned off for
those columns; the other columns keep pyarrow's defaults. Measured in ``benchmarks/``.

Beam's ``WriteToParquet`` takes neither ``column_encoding`` nor ``use_dictionary``, so this
module writes through ``kmsbeam.transforms.parquet_sink``, which passes them to
``pq.ParquetWriter``.

The Parquet modes read Arrow tables (one per row group) and never convert rows to dicts::

    pme    ReadFromParquetBatched -> WriteEncryptedParquet            (decrypt: ReadEncryptedParquet)
    cells  ReadFromParquetBatched -> EncryptCells -> WriteParquetTables (decrypt: DecryptCells)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from kmsbeam.pipelines import _fns
from kmsbeam.pipelines.spec import data_key_policy
from kmsbeam.transforms.parquet_sink import ParquetSink, WriteParquetFiles


__all__ = ["CODEC", "FitParquet", "WriteParquet", "WriteParquetTables", "build_parquet_job",
           "leaf_paths"]  # fmt: skip

CODEC = "snappy"
_ENCRYPTED_ENCODING = "DELTA_BYTE_ARRAY"


def leaf_paths(schema: pa.Schema) -> list[str]:
    """The dotted Parquet column paths of ``schema``'s leaves (``s.e``, ``l.list.element``)."""
    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink, use_compliant_nested_type=True)
    meta = pq.ParquetFile(pa.BufferReader(sink.getvalue())).schema
    return [meta.column(i).path for i in range(len(meta))]


class WriteParquet(WriteParquetFiles):
    """Dict records to snappy Parquet shards whose ``encrypted`` binary columns use
    DELTA_BYTE_ARRAY.

    Args:
        prefix, schema, suffix: as for Beam's ``WriteToParquet``.
        encrypted: dotted paths of binary columns holding encrypted values; paths that are
            not binary leaves of ``schema`` are ignored.
    """

    def __init__(
        self, prefix: str, schema: pa.Schema, suffix: str, encrypted: Sequence[str] = ()
    ) -> None:
        super().__init__(_sink(prefix, schema, suffix, encrypted, compliant=False))


class WriteParquetTables(WriteParquetFiles):
    """``WriteParquet`` for ``pyarrow.Table`` elements (lists as compliant nested types)."""

    def __init__(
        self, prefix: str, schema: pa.Schema, suffix: str, encrypted: Sequence[str] = ()
    ) -> None:
        super().__init__(_sink(prefix, schema, suffix, encrypted, compliant=True))


def _sink(prefix: str, schema: pa.Schema, suffix: str, encrypted: Sequence[str],
          compliant: bool) -> ParquetSink:  # fmt: skip
    """A sink writing ``encrypted`` binary leaves with DELTA_BYTE_ARRAY and no dictionary."""
    options: dict[str, Any] = {"use_compliant_nested_type": compliant}
    leaves = leaf_paths(schema)
    binary = [p for p in encrypted if p in leaves and _is_binary(schema, p)]
    if binary:
        options["use_dictionary"] = [p for p in leaves if p not in binary]
        options["column_encoding"] = dict.fromkeys(binary, _ENCRYPTED_ENCODING)
    return ParquetSink(prefix, schema, codec=CODEC, file_name_suffix=suffix, writer_options=options)


def _is_binary(schema: pa.Schema | pa.StructType, path: str) -> bool:
    head, _, rest = path.partition(".")
    index = schema.get_field_index(head)
    if index < 0:
        return False
    field_type = schema.field(index).type
    if rest:
        return pa.types.is_struct(field_type) and _is_binary(field_type, rest)
    return bool(pa.types.is_binary(field_type) or pa.types.is_large_binary(field_type))


class FitParquet(beam.DoFn):
    """Records that fit the Parquet schema pass; one that does not is a dead letter, not the
    end of the write (a value that authenticated can still hold another type than its column).

    Checked in batches of ``BATCH`` records (one Arrow conversion each), record by record only
    when a batch fails. A dead letter shows only the ``shown`` (cleartext) fields: the others
    were just decrypted.
    """

    BATCH = 1000

    def __init__(self, schema: pa.Schema, shown: Sequence[str]) -> None:
        self._schema = schema
        self._shown = list(shown)
        self._batch: list[Any] = []

    def start_bundle(self) -> None:
        self._batch = []

    def process(self, record: Any) -> Iterator[Any]:
        self._batch.append(record)
        if len(self._batch) >= self.BATCH:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[Any]:
        from apache_beam.transforms.window import GlobalWindow
        from apache_beam.utils.timestamp import MIN_TIMESTAMP
        from apache_beam.utils.windowed_value import WindowedValue

        for out in self._flush():
            if isinstance(out, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(
                    out.tag, WindowedValue(out.value, MIN_TIMESTAMP, (GlobalWindow(),)))
            else:
                yield WindowedValue(out, MIN_TIMESTAMP, (GlobalWindow(),))

    def _fits(self, records: list[Any]) -> bool:
        try:
            pa.Table.from_pylist(records, schema=self._schema)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            return False
        return True

    def _flush(self) -> Iterator[Any]:
        batch, self._batch = self._batch, []
        if not batch or self._fits(batch):
            yield from batch
            return
        for record in batch:
            if self._fits([record]):
                yield record
            else:
                shown = {k: record[k] for k in self._shown if k in record}
                yield _fns._dead("FormatParquet", "wrong type: a value does not fit its Parquet "
                                 "column's type", shown)  # fmt: skip


class _CountRows(beam.DoFn):
    """Counts the rows of ``pyarrow.Table`` elements (``kmsbeam.pipelines`` namespace)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def setup(self) -> None:
        self._counter = Metrics.counter(_fns.NAMESPACE, self._name)

    def process(self, table: Any) -> Iterator[Any]:
        self._counter.inc(table.num_rows)
        yield table


def build_parquet_job(p: Any, plan: Any) -> None:
    """The ``pme`` and ``cells`` jobs of ``kmsbeam encrypt|decrypt`` (see the module doc)."""
    from kmsbeam.transforms import (
        DecryptCells,
        EncryptCells,
        ReadEncryptedParquet,
        WriteEncryptedParquet,
    )

    from kmsbeam.pipelines import paths

    m, prefix = plan.manifest, paths.join(plan.out_dir, "part")
    encrypting = plan.spec.action == "encrypt"
    original = m.schema()
    dead = None
    qps = plan.spec.kms_qps  # the KMS call budget of each worker process (kmsbeam.keys.budget)
    if m.mode == "pme" and not encrypting:
        keys = list(dict.fromkeys([m.footer_key or m.key, *(m.column_keys or {}).values(), m.key]))
        # a file that cannot be opened (key disabled or missing, truncated) fails the job
        tables = p | "ReadParquet" >> ReadEncryptedParquet(
            keys, plan.pattern, context=m.context, as_tables=True, kms_qps=qps,
            key_map=plan.key_map, key_cache_ttl=plan.spec.key_cache_ttl)  # fmt: skip  (PME ids of manifest URIs -> resolved URIs)
    else:
        from kmsbeam.pipelines._read_parquet import ReadParquetTables  # names a damaged file

        tables = p | "ReadParquet" >> ReadParquetTables(plan.pattern)
    tables = tables | "CountRead" >> beam.ParDo(_CountRows("records_read"))
    encrypted: list[str] = []
    if m.mode == "cells" and encrypting:
        policy = data_key_policy(plan.spec)
        tables, dead = tables | "EncryptCells" >> EncryptCells(
            m.key, m.fields, context=m.context, bind=m.bind, policy=policy,
            kms_qps=qps, data_key_max_age=plan.spec.data_key_max_age,
            key_vault=m.key_vault).with_dead_letters()  # fmt: skip
        encrypted = list(m.fields)
    elif m.mode == "cells":
        tables, dead = tables | "DecryptCells" >> DecryptCells(
            m.key, m.fields, context=m.context, bind=m.bind, schema=original,
            kms_qps=qps, require_keys=plan.require_keys,
            key_cache_ttl=plan.spec.key_cache_ttl, key_vault=m.key_vault).with_dead_letters()  # fmt: skip
    tables = tables | "CountWritten" >> beam.ParDo(_CountRows("records_written"))
    if m.mode == "pme" and encrypting:
        tables | "WriteParquet" >> WriteEncryptedParquet(
            m.footer_key, prefix, original, column_keys=m.column_keys,
            plaintext_footer=m.plaintext_footer, context=m.context,
            external_key_material=m.key_material == "external", kms_qps=qps,
            data_key_max_age=plan.spec.data_key_max_age)  # fmt: skip
    else:
        tables | "WriteParquet" >> WriteParquetTables(prefix, plan.out_schema, ".parquet", encrypted)
    if dead is not None:
        from kmsbeam.pipelines.formats import write_dead_letters

        if encrypting:  # never cleartext on disk: sealed under the job's key, reason in clear
            from kmsbeam.pipelines.sealed import seal

            dead = seal(dead, m.key, m.context, across_bundles=bool(plan.spec.across_bundles))
        write_dead_letters([dead], paths.join(plan.dead_dir, "part"))
