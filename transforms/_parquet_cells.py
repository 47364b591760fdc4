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
- One data key per bundle (and per ``DataKeyPolicy`` caps), as for ``EncryptFields``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue

from kmsbeam import (
    ConfigurationError,
    DataKeyPolicy,
    KmsBeamError,
    check_context,
    failure_reason,
    open_key_source,
    parse_key_uri,
    parse_paths,
    shared_cache,
)
from kmsbeam.transforms._transforms import cache_ttl, policy_with_age
from kmsbeam.formats.parquet import CellDecryptor, CellEncryptor
from kmsbeam.reasons import fails_job, job_error
from kmsbeam.formats.parquet import cells_schema as _cells_schema
from kmsbeam.transforms._dofns import DEAD_LETTER
from kmsbeam.keys.budget import KmsBudget, kms_budget
from kmsbeam.transforms._budgeted import BudgetedDoFn
from kmsbeam.transforms._metrics import Counters
from kmsbeam.transforms._key_versions import key_use, report_key_versions
from kmsbeam.keys.strict import KeyRequirement
from kmsbeam.transforms._parquet import create_local_aliases

__all__ = ["DecryptCells", "EncryptCells", "cells_schema"]


def _names(value: Iterable[str] | str | None) -> tuple[str, ...]:
    if value is None:
        return ()
    return tuple(n.strip() for n in value.split(",") if n.strip()) if isinstance(value, str) else tuple(value)


def _check_paths(columns: tuple[str, ...], bind: tuple[str, ...]) -> None:
    paths, bound = parse_paths(columns, "columns"), parse_paths(bind, "bind fields")
    if not paths:
        raise ConfigurationError("name at least one column to encrypt")
    if any(b.overlaps(p) for b in bound for p in paths):
        raise ConfigurationError("a bind field cannot also be encrypted")


def cells_schema(schema: pa.Schema, columns: Iterable[str] | str, key: str,
                 bind: Iterable[str] | str = ()) -> pa.Schema:  # fmt: skip
    """The schema ``EncryptCells(columns, key, bind=bind)`` gives tables of ``schema``
    (for ``WriteToParquetBatched``)."""
    return _cells_schema(schema, columns, key, bind)


class _CellsFn(BudgetedDoFn):
    def __init__(
        self, encrypt: bool, key: str, options: dict[str, Any], label: str, dead_letters: bool,
        budget: KmsBudget | None = None,
    ) -> None:
        self._encrypt = encrypt
        self._key = key
        self._options = options
        self._label = label
        self._dead_letters = dead_letters
        self._budget = budget

    def setup(self) -> None:
        self._counters = Counters()
        self._engine: Any = None
        self._install_budget()

    def finish_bundle(self) -> None:
        self._counters.report_budget()
        self._report_calls()
        report_key_versions(getattr(self, "_key_use", None))

    def _build(self) -> None:
        """Build the engine; a source that cannot be opened fails the bundle, not the rows."""
        failed: KmsBeamError | None = None
        try:
            source = open_key_source(self._key)
            opts = dict(self._options)
            ttl = opts.pop("cache_ttl", None)  # key_cache_ttl: this process's cache of that TTL
            if not self._encrypt:
                opts["cache"] = shared_cache(ttl)
            if self._encrypt:
                self._engine = CellEncryptor(
                    opts.pop("columns"), source, on_generate=self._counters.generated, **opts
                )
            else:
                self._key_use = opts["cache"] = key_use(opts)  # require_keys; versions used
                self._engine = CellDecryptor(
                    opts.pop("columns"), source, on_call=self._counters.unwrap_call, **opts
                )
        except KmsBeamError as exc:
            self._engine = None
            failed = job_error(self._label, exc)
        if failed is not None:  # raised outside the handler: no chain
            raise failed

    def start_bundle(self) -> None:
        if self._engine is None:
            self._build()
        elif self._encrypt:
            self._engine.reset()

    def _report_calls(self) -> None:
        """Count failed GenerateDataKey calls too (successful ones: ``on_generate``)."""
        failed = getattr(getattr(self._engine, "keys", None), "failed_calls", 0)
        before = getattr(self, "_failed_before", 0)
        if failed > before:
            self._counters.generate_calls.inc(failed - before)
        self._failed_before = failed

    def _dead(self, rows: list[dict[str, Any]], exc: KmsBeamError) -> Iterator[Any]:
        if fails_job(exc, "encrypt" if self._encrypt else "decrypt"):
            self._report_calls()
            raise job_error(self._label, exc)  # the key source's failure, not the rows'
        reason = failure_reason(exc)
        if not self._dead_letters:
            raise KmsBeamError(f"{self._label}: {reason}")
        self._counters.dead_letters.inc(len(rows))
        for row in rows:
            letter = {"transform": self._label, "reason": reason, "record": row}
            yield pvalue.TaggedOutput(DEAD_LETTER, letter)

    def process(self, table: Any) -> Iterator[Any]:
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if not isinstance(table, pa.Table):
            raise TypeError(f"{self._label} takes pyarrow.Table elements, not {type(table).__name__}")
        self._counters.records.inc(table.num_rows)
        if self._engine is None:
            self._build()
        before = self._engine.values
        whole: KmsBeamError | None = None
        try:
            if self._encrypt:
                out, failed = self._engine.encrypt_table(table), []
            else:
                out, failed = self._engine.decrypt_table(table)
        except KmsBeamError as exc:
            whole = exc
        finally:
            self._counters.values("encrypt" if self._encrypt else "decrypt", self._engine.values - before)
        if whole is not None:  # handled outside the except block: no chain to the table
            yield from self._dead(table.to_pylist(), whole)
            return
        for _, error in failed:  # a key-source failure fails the bundle before any dead letter
            if fails_job(error, "decrypt"):
                yield from self._dead([], error)
        for index, error in failed:
            yield from self._dead(table.slice(index, 1).to_pylist(), error)
        if out.num_rows:
            yield out


class _Cells(beam.PTransform):
    _encrypt = True

    def __init__(self, key: str, options: dict[str, Any], label: str | None,
                 kms_qps: float | None = None) -> None:  # fmt: skip
        super().__init__(label)
        self._budget = kms_budget(kms_qps)
        if not isinstance(key, str):
            raise TypeError("key is a key URI string such as 'local:alias/pii'")
        parse_key_uri(key)
        options["context"] = check_context(options.get("context"))
        self._key = key
        self._options = options
        self._dead_letters = False

    def with_dead_letters(self) -> _Cells:
        """Return ``(tables, dead_letters)`` instead of failing on bad rows."""
        self._dead_letters = True
        return self

    def expand(self, pcoll: Any) -> Any:
        if self._encrypt:
            create_local_aliases([self._key])
        fn = _CellsFn(self._encrypt, self._key, self._options, self.label, self._dead_letters,
                      self._budget)  # fmt: skip
        out = pcoll | "Apply" >> beam.ParDo(fn).with_outputs(DEAD_LETTER, main="tables")
        return (out.tables, out[DEAD_LETTER]) if self._dead_letters else out.tables

    def display_data(self) -> dict[str, Any]:
        return {"key": self._key, "columns": ",".join(self._options.get("columns") or ()),
                "bind": ",".join(self._options.get("bind", ())),
                "context_keys": ",".join(sorted(self._options["context"]))}  # fmt: skip


class EncryptCells(_Cells):
    """Encrypt columns of ``pyarrow.Table`` elements into binary cells (field values v1).

    Args:
        columns: dotted column paths (into structs).
        key: key URI (a ``local:alias/`` key is created on first use, on the driver).
        context: encryption context; give the same one to ``DecryptCells``.
        bind: cleartext columns identifying the row, bound into every cell's AAD.
        policy: ``DataKeyPolicy`` caps. encrypt_none: encrypt nulls too.
        data_key_max_age: seconds a data key may be used (replaces ``policy.max_age_seconds``;
            default 300): the revocation latency of encryption.
        kms_qps: remote KMS calls per second allowed to each worker process (``None``: no
            limit; ``kmsbeam.keys.budget``).
    """

    def __init__(self, columns: Iterable[str] | str, key: str, *, context: Mapping[str, str] | None = None,
                 bind: Iterable[str] | str = (), policy: DataKeyPolicy | None = None,
                 encrypt_none: bool = False, label: str | None = None,
                 kms_qps: float | None = None, data_key_max_age: float | None = None) -> None:  # fmt: skip
        names, bound = _names(columns), _names(bind)
        _check_paths(names, bound)
        options = {"columns": names, "context": context, "bind": bound,
                   "policy": policy_with_age(policy, data_key_max_age), "encrypt_none": encrypt_none}  # fmt: skip
        super().__init__(key, options, label, kms_qps)


class DecryptCells(_Cells):
    """Decrypt cell columns of ``pyarrow.Table`` elements back to their original types.

    Args:
        key: a key URI of the key source that wrapped the data keys.
        columns: default: every column the table's ``kmsbeam.cells`` metadata lists.
        context, bind: as given to ``EncryptCells``.
        schema: the original schema, for tables that lost their ``kmsbeam.cells`` metadata.
        kms_qps: as for ``EncryptCells``.
        key_cache_ttl: seconds an unwrapped data key is reused in a worker process (default
            60): the revocation latency of decryption.
    """

    _encrypt = False

    def __init__(self, key: str, columns: Iterable[str] | str | None = None, *,
                 context: Mapping[str, str] | None = None, bind: Iterable[str] | str = (),
                 schema: pa.Schema | None = None, label: str | None = None,
                 kms_qps: float | None = None, require_keys: Iterable[str] = (),
                 key_cache_ttl: float | None = None) -> None:  # fmt: skip
        options = {"columns": _names(columns) or None, "context": context, "bind": _names(bind),
                   "schema": schema, **cache_ttl(key_cache_ttl)}  # fmt: skip
        if require_keys:  # strict mode (kmsbeam.keys.strict): other master keys are dead letters
            keys = (require_keys,) if isinstance(require_keys, str) else tuple(require_keys)
            options["require_keys"] = KeyRequirement(keys).keys
        super().__init__(key, options, label, kms_qps)

