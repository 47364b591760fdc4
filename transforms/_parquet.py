"""Parquet Modular Encryption in Beam: ``WriteEncryptedParquet`` and ``ReadEncryptedParquet``.

Beam's own Parquet IO takes no encryption properties, so the writer is a
``kmsbeam.transforms.parquet_sink.ParquetSink`` that builds fresh ``FileEncryptionProperties``
per file from the worker process's one ``CryptoFactory`` (``kmsbeam.formats.parquet``);
sharding, temp files and the final ``PREFIX-SSSSS-of-NNNNN.parquet`` names are Beam's. The
reader matches files, lists their row groups, reshuffles them, and reads each row group in
batches with the reader's keys, never touching column chunk metadata (which can abort the
process for an encrypted column).

Caveats:
- Records (dicts) are gathered into Arrow tables of up to ``row_group_buffer_size`` bytes per
  bundle before writing (memory stays bounded); ``pyarrow.Table`` elements are written as
  they come. Each table becomes one or more row groups.
- With external key material, ``_KEY_MATERIAL_FOR_<file>.json`` is written next to Beam's
  temp file and renamed with it; the path must be one pyarrow's filesystems can write
  (local, HDFS, S3, GCS).
- PME's plaintext KEKs and DEKs stay in pyarrow's caches for ``cache_lifetime_seconds``: that
  is PME's revocation latency. Defaults: 300 s on write (as ``DataKeyPolicy.max_age_seconds``),
  60 s on read (as the data-key cache); ``data_key_max_age`` / ``key_cache_ttl`` set the same.
- A retried bundle writes a new temp file with new data keys; Beam discards the old one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems

from kmsbeam import ConfigurationError, FormatError, KmsBeamError
from kmsbeam.keys.cache import DEFAULT_KEY_CACHE_TTL, check_ttl
from kmsbeam.keys.policy import DEFAULT_MAX_AGE
from kmsbeam.formats.parquet import (
    PmeDecryption,
    PmeEncryption,
    iter_row_group,
    key_material_path,
    open_parquet,
    take_pending_calls,
)
from kmsbeam.keys.budget import KmsBudget, install_kms_budget, kms_budget, uninstall_kms_budget
from kmsbeam.transforms._base import DEAD_LETTER, KmsDoFn, KmsTransform
from kmsbeam.transforms._metrics import Counters
from kmsbeam.transforms.parquet_sink import OpenShard, ParquetSink, WriteParquetFiles

__all__ = ["ReadEncryptedParquet", "WriteEncryptedParquet"]

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


def _is_local(path: str) -> bool:
    return "://" not in path


def _open(path: str, decryption: PmeDecryption | None) -> tuple[pq.ParquetFile, Any]:
    if _is_local(path):
        return open_parquet(path, path, decryption, path), None
    handle = FileSystems.open(path)
    try:
        # no local path: key material must be inside the file (external material is local-only)
        return open_parquet(handle, path, decryption, None), handle
    except BaseException:
        handle.close()
        raise


class _FileFn(KmsDoFn):
    """Shared by the reader's two steps: the KMS-call counters, and a file that cannot be read
    is a dead letter (a key source that fails is the job's failure)."""

    def __init__(self, decryption: PmeDecryption | None, label: str,
                 budget: KmsBudget | None = None) -> None:  # fmt: skip
        super().__init__(label, budget)
        self._decryption = decryption

    def _fails_job(self, exc: BaseException) -> bool:
        return not isinstance(exc, (FormatError, ConfigurationError)) and super()._fails_job(exc)

    def _reason(self, exc: BaseException) -> str:
        return f"unreadable file: {exc}" if isinstance(exc, FormatError) else super()._reason(exc)

    def _fail(self, where: dict[str, Any], exc: KmsBeamError) -> Iterator[Any]:
        report_kms_calls(self._counters)
        yield self._dead(where, exc)


class _RowGroups(_FileFn):
    def process(self, meta: Any) -> Iterator[Any]:
        path = meta.path
        failed: KmsBeamError | None = None
        try:
            pf, handle = _open(path, self._decryption)
            groups = pf.metadata.num_row_groups  # row-group counts only: never column chunks
            if handle is not None:
                handle.close()
        except KmsBeamError as exc:
            failed = exc
        if failed is not None:  # outside the handler: no chain
            yield from self._fail({"file": path}, failed)
            return
        report_kms_calls(self._counters)
        for index in range(groups):
            yield path, index


class _ReadRowGroup(_FileFn):
    def __init__(self, decryption: PmeDecryption | None, label: str,
                 columns: list[str] | None, as_tables: bool, batch_size: int,
                 budget: KmsBudget | None = None) -> None:  # fmt: skip
        super().__init__(decryption, label, budget)
        self._columns = columns
        self._as_tables = as_tables
        self._batch_size = batch_size

    def process(self, element: tuple[str, int]) -> Iterator[Any]:
        path, index = element
        handle = None
        failed: KmsBeamError | None = None
        try:
            pf, handle = _open(path, self._decryption)
            batches = list(iter_row_group(pf, index, path, self._columns, self._batch_size))
        except KmsBeamError as exc:
            failed = exc
        finally:
            if handle is not None:
                handle.close()
        if failed is not None:  # outside the handler: no chain
            yield from self._fail({"file": path, "row_group": index}, failed)
            return
        report_kms_calls(self._counters)
        rows = sum(b.num_rows for b in batches)
        self._counters.records.inc(rows)
        if self._as_tables:
            if batches:
                yield pa.Table.from_batches(batches)
        else:
            for batch in batches:
                yield from batch.to_pylist()


class ReadEncryptedParquet(KmsTransform):
    """Read PME-encrypted (or plain) Parquet files as dict records or ``pyarrow.Table``\\ s.

    Args:
        keys: the key URIs trusted to open the files (footer and column keys); ``()`` for
            plaintext files and plaintext-footer files read for their plaintext columns.
        file_pattern: a path or glob (any Beam filesystem).
        context: the encryption context the writer used.
        key_map: master key id -> key URI, for keys whose URI changed since writing.
        columns: read only these columns (default all).
        as_tables: emit one ``pyarrow.Table`` per row group instead of dicts.
        batch_size: rows per decoded batch.
        kms_qps: remote KMS calls per second allowed to each worker process (``None``: no
            limit; ``kmsbeam.keys.budget``).
        cache_lifetime_seconds: how long pyarrow keeps unwrapped keys (default 60 s, the
            revocation latency); ``key_cache_ttl``, the name other decrypting transforms use,
            sets the same and wins when given.

    ``.with_dead_letters()`` returns ``(records, dead_letters)``: a file or row group that
    cannot be read (not Parquet, truncated, wrong or missing key, disabled key, tampered)
    becomes one dead letter ``{"transform", "reason", "record": {"file", "row_group"}}``.
    """

    def __init__(self, keys: Iterable[str] | str, file_pattern: str, *,
                 context: Mapping[str, str] | None = None, key_map: Mapping[str, str] | None = None,
                 columns: Iterable[str] | None = None, as_tables: bool = False,
                 batch_size: int = 65536, cache_lifetime_seconds: float = DEFAULT_KEY_CACHE_TTL,
                 label: str | None = None, kms_qps: float | None = None,
                 key_cache_ttl: float | None = None) -> None:  # fmt: skip
        super().__init__(label, kms_qps)
        if key_cache_ttl is not None:
            cache_lifetime_seconds = check_ttl(key_cache_ttl, "the key cache TTL")
        keys = (keys,) if isinstance(keys, str) else tuple(keys)
        self._decryption = (PmeDecryption(keys, context or {}, key_map or {}, cache_lifetime_seconds)
                            if keys or key_map else None)  # fmt: skip
        self._pattern = file_pattern
        self._columns = list(columns) if columns is not None else None
        self._as_tables = as_tables
        self._batch_size = batch_size

    def _steps(self, pbegin: Any) -> tuple[Any, Any]:
        groups = _RowGroups(self._decryption, self.label, self._budget)
        reader = _ReadRowGroup(self._decryption, self.label, self._columns, self._as_tables,
                               self._batch_size, self._budget)  # fmt: skip
        files = (pbegin | "Pattern" >> beam.Create([self._pattern]) | "Match" >> fileio.MatchAll()
                 | "RowGroups" >> beam.ParDo(groups).with_outputs(DEAD_LETTER, main="groups"))  # fmt: skip
        read = (files.groups | "Reshuffle" >> beam.Reshuffle()
                | "Read" >> beam.ParDo(reader).with_outputs(DEAD_LETTER, main="rows"))  # fmt: skip
        return read.rows, (files[DEAD_LETTER], read[DEAD_LETTER]) | "DeadLetters" >> beam.Flatten()

    @staticmethod
    def failure(letter: dict[str, Any]) -> str:
        return f"{letter['transform']}: {letter['record']['file']}: {letter['reason']}"

    def _shown(self) -> dict[str, Any]:
        d = self._decryption
        return {"file_pattern": self._pattern, "keys": ", ".join(d.keys) if d else "",
                "context_keys": ",".join(sorted(d.context)) if d else "",
                "as_tables": self._as_tables}  # fmt: skip
