"""Parquet Modular Encryption in Beam: ``WriteEncryptedParquet`` and ``ReadEncryptedParquet``.

Beam's own Parquet IO takes no encryption properties, so the writer is Beam's Parquet sink
with an ``open()`` that builds fresh ``FileEncryptionProperties`` per file from the worker
process's one ``CryptoFactory`` (``kmsbeam.formats.parquet``); sharding, temp files and the final
``PREFIX-SSSSS-of-NNNNN.parquet`` names are Beam's. The reader matches files, lists their row
groups, reshuffles them, and reads each row group in batches with the reader's keys, never
touching column chunk metadata (which can abort the process for an encrypted column).

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

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam import pvalue
from apache_beam.io import fileio, filebasedsink, parquetio
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from kmsbeam import ConfigurationError, FormatError, KmsBeamError, failure_reason, open_key_source
from kmsbeam.keys.cache import DEFAULT_KEY_CACHE_TTL, check_ttl
from kmsbeam.keys.policy import DEFAULT_MAX_AGE
from kmsbeam.reasons import fails_job, job_error
from kmsbeam.formats.parquet import (
    PmeDecryption,
    PmeEncryption,
    iter_row_group,
    key_material_path,
    open_parquet,
    take_pending_calls,
)
from kmsbeam.transforms._dofns import DEAD_LETTER
from kmsbeam.keys.budget import KmsBudget, install_kms_budget, kms_budget, uninstall_kms_budget
from kmsbeam.transforms._budgeted import BudgetedDoFn
from kmsbeam.transforms._metrics import Counters

__all__ = ["ReadEncryptedParquet", "WriteEncryptedParquet"]

_LOG = logging.getLogger(__name__)


def report_kms_calls(counters: Counters) -> None:
    """Move this process's pending PME key-source calls into the Beam counters."""
    calls = take_pending_calls()
    if calls.generate:
        counters.keys.inc(calls.generate)
        counters.generate_calls.inc(calls.generate)
    if calls.decrypt:
        counters.decrypt_calls.inc(calls.decrypt)
    counters.report_budget()


def create_local_aliases(uris: Iterable[str]) -> None:
    """Create ``local:alias/`` keys at pipeline construction (driver), never on workers."""
    for uri in uris:
        if uri.startswith("local:alias/") and getattr(open_key_source(uri, create=True), "created", False):
            _LOG.warning("kmsbeam: created key %s in the local keystore", uri)


class _Open:
    __slots__ = ("handle", "writer")

    def __init__(self, writer: pq.ParquetWriter, handle: Any) -> None:
        self.writer = writer
        self.handle = handle


class _PmeSink(parquetio._ParquetSink):
    """Beam's Parquet sink writing PME-encrypted files (one set of file keys per file)."""

    def __init__(self, prefix: str, schema: pa.Schema, encryption: PmeEncryption, codec: str,
                 suffix: str, num_shards: int, template: str | None,
                 budget: KmsBudget | None = None) -> None:  # fmt: skip
        super().__init__(prefix, schema, codec, False, True, suffix, num_shards, template,
                         "application/x-parquet", None)  # fmt: skip
        self._encryption = encryption
        self._budget = budget  # installed from open() to close() of each file (on the worker)
        self._columns = sum(len(v) for v in encryption.column_map(schema).values())
        self._counters: Counters | None = None

    def _count(self) -> Counters:
        if self._counters is None:
            self._counters = Counters()
        return self._counters

    def open(self, temp_path: str) -> _Open:
        budget = getattr(self, "_budget", None)
        if budget is not None:
            install_kms_budget(budget)
        try:
            props = self._encryption.properties(self._schema, temp_path)
            report_kms_calls(self._count())
            handle = filebasedsink.FileBasedSink.open(self, temp_path)
            writer = pq.ParquetWriter(handle, self._schema, compression=self._codec,
                                      use_compliant_nested_type=True, encryption_properties=props)  # fmt: skip
        except BaseException:
            if budget is not None:
                uninstall_kms_budget(budget)
            raise
        return _Open(writer, handle)

    def write_record(self, opened: _Open, table: pa.Table) -> None:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        opened.writer.write_table(table)
        counters = self._count()
        counters.records.inc(table.num_rows)
        counters.encrypted.inc(table.num_rows * self._columns)

    def close(self, opened: _Open) -> None:
        try:
            opened.writer.close()
            opened.handle.close()
            report_kms_calls(self._count())
        finally:
            budget = getattr(self, "_budget", None)
            if budget is not None:
                uninstall_kms_budget(budget)

    def _check_state_for_finalize_write(
        self, writer_results: Any, num_shards: int, window: Any = None
    ) -> Any:
        """Beam's check, plus: move each temp file's external key material next to the
        final file name now, before the temp directory goes away."""
        state = super()._check_state_for_finalize_write(writer_results, num_shards, window)
        if self._encryption.external_key_material:
            src_files, dst_files = state[0], state[1]
            moves = [(_material(s), _material(d)) for s, d in zip(src_files, dst_files)]
            moves = [(s, d) for s, d in moves if FileSystems.exists(s)]
            if moves:
                FileSystems.rename([s for s, _ in moves], [d for _, d in moves])
        return state

    def display_data(self) -> dict[str, Any]:
        return {"codec": self._codec, "schema": str(self._schema)}


def _material(path: str) -> str:
    directory, name = FileSystems.split(path)
    return FileSystems.join(directory, key_material_path(name).name)


class _ToTables(beam.DoFn):
    """Dict records -> Arrow tables of up to ``max_bytes`` (per bundle); tables pass."""

    def __init__(self, schema: pa.Schema, batch_rows: int, max_bytes: int) -> None:
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

    def __init__(self, file_path_prefix: str, schema: pa.Schema, *, column_keys: Mapping[str, str],
                 footer_key: str, plaintext_footer: bool = False, double_wrapping: bool = True,
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
        self._schema = schema
        self._sink = _PmeSink(file_path_prefix, schema, self._encryption, codec,
                              file_name_suffix, num_shards, shard_name_template, budget)  # fmt: skip
        self._batching = (record_batch_size, row_group_buffer_size)

    def expand(self, pcoll: Any) -> Any:
        create_local_aliases(self._encryption.uris)
        tables = pcoll | "ToTables" >> beam.ParDo(_ToTables(self._schema, *self._batching))
        return tables | "Write" >> beam.io.Write(self._sink)

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


class _FileFn(BudgetedDoFn):
    """Shared by the reader's two steps: dead letters and the KMS-call counters."""

    def __init__(self, decryption: PmeDecryption | None, label: str, dead_letters: bool,
                 budget: KmsBudget | None = None) -> None:  # fmt: skip
        self._decryption = decryption
        self._label = label
        self._dead_letters = dead_letters
        self._budget = budget

    def setup(self) -> None:
        self._counters = Counters()
        self._install_budget()

    def _fail(self, where: dict[str, Any], exc: KmsBeamError) -> Iterator[Any]:
        report_kms_calls(self._counters)
        if not isinstance(exc, (FormatError, ConfigurationError)) and fails_job(exc, "decrypt"):
            raise job_error(self._label, exc)  # the key source's failure, not the file's
        reason = f"unreadable file: {exc}" if isinstance(exc, FormatError) else failure_reason(exc)
        if not self._dead_letters:
            raise KmsBeamError(f"{self._label}: {where['file']}: {reason}")
        self._counters.dead_letters.inc()
        yield pvalue.TaggedOutput(DEAD_LETTER, {"transform": self._label, "reason": reason, "record": where})


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
    def __init__(self, decryption: PmeDecryption | None, label: str, dead_letters: bool,
                 columns: list[str] | None, as_tables: bool, batch_size: int,
                 budget: KmsBudget | None = None) -> None:  # fmt: skip
        super().__init__(decryption, label, dead_letters, budget)
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


class ReadEncryptedParquet(beam.PTransform):
    """Read PME-encrypted (or plain) Parquet files as dict records or ``pyarrow.Table``\\ s.

    Args:
        file_pattern: a path or glob (any Beam filesystem).
        keys: the key URIs trusted to open the files (footer and column keys); none for
            plaintext files and plaintext-footer files read for their plaintext columns.
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

    def __init__(self, file_pattern: str, *, keys: Iterable[str] | str = (),
                 context: Mapping[str, str] | None = None, key_map: Mapping[str, str] | None = None,
                 columns: Iterable[str] | None = None, as_tables: bool = False,
                 batch_size: int = 65536, cache_lifetime_seconds: float = DEFAULT_KEY_CACHE_TTL,
                 label: str | None = None, kms_qps: float | None = None,
                 key_cache_ttl: float | None = None) -> None:  # fmt: skip
        super().__init__(label)
        self._budget = kms_budget(kms_qps)
        if key_cache_ttl is not None:
            cache_lifetime_seconds = check_ttl(key_cache_ttl, "the key cache TTL")
        keys = (keys,) if isinstance(keys, str) else tuple(keys)
        self._decryption = (PmeDecryption(keys, context or {}, key_map or {}, cache_lifetime_seconds)
                            if keys or key_map else None)  # fmt: skip
        self._pattern = file_pattern
        self._columns = list(columns) if columns is not None else None
        self._as_tables = as_tables
        self._batch_size = batch_size
        self._dead_letters = False

    def with_dead_letters(self) -> ReadEncryptedParquet:
        self._dead_letters = True
        return self

    def expand(self, pbegin: Any) -> Any:
        common = (self._decryption, self.label, self._dead_letters)
        groups = _RowGroups(*common, self._budget)
        reader = _ReadRowGroup(*common, self._columns, self._as_tables, self._batch_size,
                               self._budget)  # fmt: skip
        files = (pbegin | "Pattern" >> beam.Create([self._pattern]) | "Match" >> fileio.MatchAll()
                 | "RowGroups" >> beam.ParDo(groups).with_outputs(DEAD_LETTER, main="groups"))  # fmt: skip
        read = (files.groups | "Reshuffle" >> beam.Reshuffle()
                | "Read" >> beam.ParDo(reader).with_outputs(DEAD_LETTER, main="rows"))  # fmt: skip
        if not self._dead_letters:
            return read.rows
        dead = (files[DEAD_LETTER], read[DEAD_LETTER]) | "DeadLetters" >> beam.Flatten()
        return read.rows, dead

    def display_data(self) -> dict[str, Any]:
        d = self._decryption
        return {"file_pattern": self._pattern, "keys": ", ".join(d.keys) if d else "",
                "context_keys": ",".join(sorted(d.context)) if d else "",
                "as_tables": self._as_tables}  # fmt: skip
