"""Parquet files in Beam: ``ReadEncryptedParquet`` reads PME-encrypted (or plain) files.

The reader matches files, lists their row groups, reshuffles them, and reads each row group in
batches with the reader's keys, never touching column chunk metadata (which can abort the
process for an encrypted column). A file or row group that cannot be read is a dead letter; a
key source that fails (down, denied, the key disabled) fails the job.

Caveats:
- PME's plaintext KEKs and DEKs stay in pyarrow's caches for ``cache_lifetime_seconds``
  (default 60 s, as the data-key cache; ``key_cache_ttl`` sets the same): that is PME's
  revocation latency on read.
- External key material is read from next to a local file only; a remote file must hold its
  key material inside.
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
from kmsbeam.formats.parquet import PmeDecryption, iter_row_group, open_parquet
from kmsbeam.keys.budget import KmsBudget
from kmsbeam.keys.cache import DEFAULT_KEY_CACHE_TTL, check_ttl
from kmsbeam.transforms._base import DEAD_LETTER, KmsDoFn, KmsTransform
from kmsbeam.transforms._parquet import report_kms_calls

__all__ = ["ReadEncryptedParquet"]


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
