"""Parquet Modular Encryption in Beam: ``WriteEncryptedParquet`` (the reader: ``_parquet_read``).

Beam's own Parquet IO takes no encryption properties, so the writer is a
``kmsbeam.transforms.parquet_sink.ParquetSink`` that builds fresh ``FileEncryptionProperties``
per file from the worker process's one ``CryptoFactory`` (``kmsbeam.formats.parquet``);
sharding, temp files and the final ``PREFIX-SSSSS-of-NNNNN.parquet`` names are Beam's.

Caveats:
- Records (dicts) are gathered into Arrow tables of up to ``row_group_buffer_size`` bytes per
  bundle before writing (memory stays bounded); ``pyarrow.Table`` elements are written as
  they come. Each table becomes one or more row groups.
- With external key material, ``_KEY_MATERIAL_FOR_<file>.json`` is written next to Beam's
  temp file and renamed with it; the path must be one pyarrow's filesystems can write
  (local, HDFS, S3, GCS).
- PME's plaintext KEKs and DEKs stay in pyarrow's caches for ``cache_lifetime_seconds``: that
  is PME's revocation latency (default 300 s on write, as ``DataKeyPolicy.max_age_seconds``;
  ``data_key_max_age`` sets the same).
- A retried bundle writes a new temp file with new data keys; Beam discards the old one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from kmsbeam.keys.cache import check_ttl
from kmsbeam.keys.policy import DEFAULT_MAX_AGE
from kmsbeam.formats.parquet import PmeEncryption, key_material_path, take_pending_calls
from kmsbeam.keys.budget import KmsBudget, install_kms_budget, kms_budget, uninstall_kms_budget
from kmsbeam.transforms._metrics import Counters
from kmsbeam.transforms.parquet_sink import OpenShard, ParquetSink, WriteParquetFiles

__all__ = ["WriteEncryptedParquet", "report_kms_calls"]

def report_kms_calls(counters: Counters) -> None:
    """Move this process's pending PME key-source calls into the Beam counters."""
    calls = take_pending_calls()
    if calls.generate:
        counters.keys.inc(calls.generate)
        counters.generate_calls.inc(calls.generate)
    if calls.decrypt:
        counters.decrypt_calls.inc(calls.decrypt)
    counters.report_budget()


class _PmeSink(ParquetSink):
    """Parquet shards with PME: fresh encryption properties (new file keys) per file."""

    def __init__(self, prefix: str, schema: pa.Schema, encryption: PmeEncryption, codec: str,
                 suffix: str, num_shards: int, template: str | None,
                 budget: KmsBudget | None = None) -> None:  # fmt: skip
        super().__init__(prefix, schema, codec=codec, file_name_suffix=suffix, num_shards=num_shards,
                         shard_name_template=template,
                         writer_options={"use_compliant_nested_type": True})  # fmt: skip
        self._encryption = encryption
        self._budget = budget  # installed from open() to close() of each file (on the worker)
        self._columns = sum(len(v) for v in encryption.column_map(schema).values())
        self._counters: Counters | None = None

    def _count(self) -> Counters:
        if self._counters is None:
            self._counters = Counters()
        return self._counters

    def file_options(self, temp_path: str) -> dict[str, Any]:
        props = self._encryption.properties(self.schema, temp_path)
        report_kms_calls(self._count())
        return {"encryption_properties": props}

    def companions(self, path: str) -> list[str]:
        if not self._encryption.external_key_material:
            return []
        directory, name = FileSystems.split(path)
        return [FileSystems.join(directory, key_material_path(name).name)]

    def open(self, temp_path: str) -> OpenShard:
        if self._budget is not None:
            install_kms_budget(self._budget)
        try:
            return super().open(temp_path)
        except BaseException:
            if self._budget is not None:
                uninstall_kms_budget(self._budget)
            raise

    def write_record(self, opened: OpenShard, table: pa.Table | pa.RecordBatch) -> None:
        super().write_record(opened, table)
        counters = self._count()
        counters.records.inc(table.num_rows)
        counters.encrypted.inc(table.num_rows * self._columns)

    def close(self, opened: OpenShard) -> None:
        try:
            super().close(opened)
            report_kms_calls(self._count())
        finally:
            if self._budget is not None:
                uninstall_kms_budget(self._budget)


class WriteEncryptedParquet(beam.PTransform):
    """Write dict records or ``pyarrow.Table`` elements as PME-encrypted Parquet shards.

    Args:
        file_path_prefix: output prefix; files are ``PREFIX-SSSSS-of-NNNNN.parquet``.
        schema: the Arrow schema of the records.
        column_keys: column path -> key URI (per-column master keys); a struct or list
            column stands for all its leaves.
        footer_key: key URI of the footer key.
        plaintext_footer, double_wrapping, external_key_material, context,
        cache_lifetime_seconds, data_key_bits, algorithm: see ``kmsbeam.formats.parquet.PmeEncryption``.
        codec: Parquet compression (default snappy).
        num_shards, shard_name_template, file_name_suffix: as for Beam's ``WriteToParquet``.
        record_batch_size, row_group_buffer_size: how dict records are gathered into tables.
        kms_qps: remote KMS calls per second allowed to each worker process while it writes a
            file (``None``: no limit; ``kmsbeam.keys.budget``).
        data_key_max_age: the name other encrypting transforms use for
            ``cache_lifetime_seconds`` (wins when given).

    Returns the PCollection of written file names.
    """

    def __init__(self, footer_key: str, file_path_prefix: str, schema: pa.Schema, *,
                 column_keys: Mapping[str, str], plaintext_footer: bool = False, double_wrapping: bool = True,
                 external_key_material: bool = False, context: Mapping[str, str] | None = None,
                 cache_lifetime_seconds: float = DEFAULT_MAX_AGE, data_key_bits: int = 256,
                 algorithm: str = "AES_GCM_V1", codec: str = "snappy",
                 file_name_suffix: str = ".parquet", num_shards: int = 0,
                 shard_name_template: str | None = None, record_batch_size: int = 1000,
                 row_group_buffer_size: int = 64 * 1024 * 1024,
                 label: str | None = None, kms_qps: float | None = None,
                 data_key_max_age: float | None = None) -> None:  # fmt: skip
        super().__init__(label)
        budget = kms_budget(kms_qps)
        if data_key_max_age is not None:
            cache_lifetime_seconds = check_ttl(data_key_max_age, "the data-key max age")
        if not isinstance(schema, pa.Schema):
            raise TypeError("schema is a pyarrow.Schema")
        self._encryption = PmeEncryption(
            footer_key, column_keys, plaintext_footer=plaintext_footer,
            double_wrapping=double_wrapping, external_key_material=external_key_material,
            context=context or {}, cache_lifetime_seconds=cache_lifetime_seconds,
            data_key_bits=data_key_bits, algorithm=algorithm)  # fmt: skip
        self._encryption.column_map(schema)  # unknown columns fail now, not on a worker
        self._sink = _PmeSink(file_path_prefix, schema, self._encryption, codec,
                              file_name_suffix, num_shards, shard_name_template, budget)  # fmt: skip
        self._batching = (record_batch_size, row_group_buffer_size)

    def expand(self, pcoll: Any) -> Any:
        return pcoll | WriteParquetFiles(self._sink, record_batch_size=self._batching[0],
                                         row_group_buffer_size=self._batching[1])  # fmt: skip

    def display_data(self) -> dict[str, Any]:
        e = self._encryption
        return {
            "footer_key": e.footer_key,
            "column_keys": ", ".join(f"{c}={u}" for c, u in sorted(e.column_keys.items())),
            "plaintext_footer": e.plaintext_footer, "double_wrapping": e.double_wrapping,
            "key_material": "external" if e.external_key_material else "internal",
            "context_keys": ",".join(sorted(e.context)), "algorithm": e.algorithm,
            "file_path_prefix": str(self._sink.file_path_prefix),
        }  # fmt: skip
