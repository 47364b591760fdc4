"""Cell-encrypted columns in Beam: ``EncryptCells`` and ``DecryptCells`` over Arrow tables.

The elements are ``pyarrow.Table`` (or ``RecordBatch``) batches, as ``ReadFromParquetBatched``
and ``ReadEncryptedParquet(as_tables=True)`` give them: each table is encrypted column by
column with one AES-GCM pass per column (``kmsbeam.formats.parquet.CellEncryptor``), with no
conversion to and from per-row dicts. Write the result with ``WriteToParquetBatched`` (the
output schema is ``cells_schema``), or turn cells into any other format: each cell is a
field value v1 that ``DecryptFields`` also decrypts.

Caveats:
- Dead letters are rows (dicts): on the decrypt side each row with a cell that does not
  authenticate (or whose data key the key source does not have). count in = rows out + dead
  letters. A key-source failure (no data key, access denied, key disabled, source down) is
  never a dead letter: it fails the bundle (the runner retries it) and then the job.
- One data key per bundle in batch, kept across bundles when streaming (and within the
  ``DataKeyPolicy`` caps), as for ``EncryptFields``.
- Both take the key first, then the columns: ``EncryptCells(key, columns)``,
  ``DecryptCells(key, columns=None)``. Create a ``local:alias/`` key first
  (``create_local_keys``): ``expand()`` calls no key source.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import apache_beam as beam
import pyarrow as pa

from kmsbeam import DataKeyPolicy, KmsBeamError, check_context, open_key_source
from kmsbeam.formats.parquet import CellDecryptor, CellEncryptor, CellFormat, cells_schema
from kmsbeam.keys.budget import KmsBudget
from kmsbeam.transforms._base import DEAD_LETTER, KmsDoFn, KmsTransform
from kmsbeam.transforms._options import cache_ttl, key_uri, policy_for, policy_with_age, required_keys, vault_of

__all__ = ["DecryptCells", "EncryptCells", "cells_schema"]


class _CellsFn(KmsDoFn):
    """Tables through one cell engine: a whole table, or each row with a bad cell, fails."""

    def __init__(self, label: str, key: str, options: dict[str, Any], budget: KmsBudget | None = None,
                 ttl: float | None = None, required: tuple[str, ...] = ()) -> None:  # fmt: skip
        super().__init__(label, budget)
        self._key, self._options, self._ttl, self._required = key, options, ttl, required

    def _run(self, table: pa.Table) -> tuple[pa.Table, list[tuple[int, KmsBeamError]]]:
        raise NotImplementedError

    def start_bundle(self) -> None:
        if self._engine is None:
            self._open()
        elif hasattr(self._engine, "reset"):
            self._engine.reset()  # a new bundle: a new data key (or the shelf's: across_bundles)

    def finish_bundle(self) -> None:
        if hasattr(self._engine, "reset"):
            self._engine.reset()
        super().finish_bundle()

    def process(self, table: Any) -> Iterator[Any]:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if not isinstance(table, pa.Table):
            raise TypeError(f"{self._label} takes pyarrow.Table elements, not {type(table).__name__}")
        self._counters.records.inc(table.num_rows)
        before = self._engine.values
        whole: KmsBeamError | None = None
        try:
            out, failed = self._run(table)
        except KmsBeamError as exc:
            whole = exc
        finally:
            self._counters.values(self.kind, self._engine.values - before)
        if whole is not None:  # handled outside the except block: no chain to the table
            if self._fails_job(whole):
                yield self._dead(None, whole)  # raises: the key source's failure, not the rows'
            for row in table.to_pylist():
                yield self._dead(row, whole)
            return
        for _, error in failed:  # a key-source failure fails the bundle before any dead letter
            if self._fails_job(error):
                yield self._dead(None, error)  # raises
        for index, error in failed:
            yield self._dead(table.slice(index, 1).to_pylist()[0], error)
        if out.num_rows:
            yield out


class _EncryptCellsFn(_CellsFn):
    kind = "encrypt"

    def _build(self) -> CellEncryptor:
        opts = dict(self._options)  # the CellFormat, context and policy
        return opts.pop("format").encryptor(open_key_source(self._key), on_generate=self._counters.generated,
                                            **opts)  # fmt: skip

    def _run(self, table: pa.Table) -> tuple[pa.Table, list[tuple[int, KmsBeamError]]]:
        return self._engine.encrypt_table(table), []


class _DecryptCellsFn(_CellsFn):
    kind = "decrypt"

    def _build(self) -> CellDecryptor:
        return self._options["format"].decryptor(
            open_key_source(self._key), context=self._options["context"],
            cache=self._unwrap_cache(self._ttl, self._required), on_call=self._counters.unwrap_call)  # fmt: skip

    def _run(self, table: pa.Table) -> tuple[pa.Table, list[tuple[int, KmsBeamError]]]:
        out, failed = self._engine.decrypt_table(table)
        return out, list(failed)


class _Cells(KmsTransform):
    _fn: type[_CellsFn]

    def __init__(self, key: str, options: dict[str, Any], label: str | None, kms_qps: float | None,
                 ttl: float | None = None, required: tuple[str, ...] = ()) -> None:  # fmt: skip
        super().__init__(label, kms_qps)
        self._key = key_uri(key)
        options["context"] = check_context(options.get("context"))
        self._options, self._ttl, self._required = options, ttl, required

    def _steps(self, pcoll: Any) -> tuple[Any, Any]:
        options = dict(self._options)
        if "policy" in options:  # encrypting
            options["policy"] = policy_for(options["policy"], pcoll)
        fn = self._fn(self.label, self._key, options, self._budget, self._ttl, self._required)
        out = pcoll | "Apply" >> beam.ParDo(fn).with_outputs(DEAD_LETTER, main="tables")
        return out.tables, out[DEAD_LETTER]

    def _shown(self) -> dict[str, Any]:
        fmt = self._options["format"]
        return {"key": self._key, "columns": ",".join(c.name for c in fmt.columns),
                "bind": ",".join(b.name for b in fmt.bind),
                "context_keys": ",".join(sorted(self._options["context"])),
                **({"key_vault": fmt.vault.uri} if fmt.vault is not None else {})}  # fmt: skip


class EncryptCells(_Cells):
    """Encrypt columns of ``pyarrow.Table`` elements into binary cells (field values v1).

    Args:
        key: key URI (create a ``local:alias/`` key first: ``create_local_keys``).
        columns: dotted column paths (into structs).
        context: encryption context; give the same one to ``DecryptCells``.
        bind: cleartext columns identifying the row, bound into every cell's AAD.
        policy: ``DataKeyPolicy`` caps. encrypt_none: encrypt nulls too.
        data_key_max_age: seconds a data key may be used (replaces ``policy.max_age_seconds``;
            default 300): the revocation latency of encryption.
        kms_qps: remote KMS calls per second allowed to each worker process (``None``: no
            limit; ``kmsbeam.keys.budget``).
        key_vault: a key vault prefix: cells are field values v2, their data keys in the
            vault (as ``EncryptFields(key_vault=)``); ``DecryptCells`` takes the same.
    """

    _fn = _EncryptCellsFn

    def __init__(self, key: str, columns: Iterable[str] | str, *, context: Mapping[str, str] | None = None,
                 bind: Iterable[str] | str = (), policy: DataKeyPolicy | None = None,
                 encrypt_none: bool = False, label: str | None = None,
                 kms_qps: float | None = None, data_key_max_age: float | None = None,
                 key_vault: str | None = None) -> None:  # fmt: skip
        options = {"format": CellFormat(columns, bind=bind, encrypt_none=encrypt_none, vault=vault_of(key_vault)),
                   "context": context,
                   "policy": policy_with_age(policy, data_key_max_age)}  # fmt: skip
        super().__init__(key, options, label, kms_qps)


class DecryptCells(_Cells):
    """Decrypt cell columns of ``pyarrow.Table`` elements back to their original types.

    Args:
        key: a key URI of the key source that wrapped the data keys.
        columns: default: every column the table's ``kmsbeam.cells`` metadata lists.
        context, bind: as given to ``EncryptCells``.
        schema: the original schema, for tables that lost their ``kmsbeam.cells`` metadata.
        kms_qps: as for ``EncryptCells``.
        require_keys: strict mode (``kmsbeam.keys.strict``): other master keys are dead letters.
        key_cache_ttl: seconds an unwrapped data key is reused in a worker process (default
            60): the revocation latency of decryption.
    """

    _fn = _DecryptCellsFn

    def __init__(self, key: str, columns: Iterable[str] | str | None = None, *,
                 context: Mapping[str, str] | None = None, bind: Iterable[str] | str = (),
                 schema: pa.Schema | None = None, label: str | None = None,
                 kms_qps: float | None = None, require_keys: Iterable[str] = (),
                 key_cache_ttl: float | None = None, key_vault: str | None = None) -> None:  # fmt: skip
        options = {"format": CellFormat(columns or None, bind=bind, schema=schema, vault=vault_of(key_vault)),
                   "context": context}
        super().__init__(key, options, label, kms_qps, cache_ttl(key_cache_ttl), required_keys(require_keys))
