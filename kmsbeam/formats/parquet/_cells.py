"""Cell-encrypted columns: chosen Arrow columns become binary columns of field values v1.

(The reader's side is ``_cell_decryptor``.)

Each cell is exactly a kmsbeam field value v1 in binary form (``docs/FORMAT.md``) whose name
is the column path, so a cell taken out of the table (into JSON, Avro, a database) decrypts
with ``FieldDecryptor`` like any field value, with the same AAD rules: the path, the data
key's commitment and, with ``bind``, the row's identity fields.

Encryption is vectorised as far as AES-GCM allows: per table and column, the plaintexts are
encoded in one pass and sealed with one ``map`` over the cipher (``Sealer.seal_column``).

The encrypted table's schema carries ``kmsbeam.cells`` metadata (JSON): format version,
columns, bind fields, the key URI and the original Arrow schema, so decryption restores the
original types without being told. Null cells stay null unless ``encrypt_none``.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from kmsbeam.formats._binding import bindings_of, check_paths
from kmsbeam.formats._keys import Sealing
from kmsbeam.formats.codec import STR_TAG, encode_value
from kmsbeam.formats.envelope import FIELD_V1
from kmsbeam.vault import KeyVault
from kmsbeam.errors import ConfigurationError, FormatError, RecordError
from kmsbeam.keys.source import KeySource
from kmsbeam.formats.parquet._arrow import (
    binary_array,
    check_cell_type,
    column_at,
    field_at,
    replace_at,
    scatter,
    with_type_at,
)
from kmsbeam.formats.paths import FieldPath, Paths
from kmsbeam.keys.policy import DataKeyPolicy

__all__ = [
    "CELLS_KEY",
    "SLICE_ROWS",
    "CellEncryptor",
    "bindings",
    "cells_metadata",
    "cells_schema",
    "original_from",
    "original_schema",
]

CELLS_KEY = b"kmsbeam.cells"
CELLS_VERSION = 1
SLICE_ROWS = 65536
_STRINGS = (pa.types.is_string, pa.types.is_large_string)
_STR_TAG = pa.scalar(STR_TAG, pa.binary())
_EMPTY = pa.scalar(b"", pa.binary())


def cells_metadata(schema: pa.Schema) -> dict[str, Any] | None:
    """The ``kmsbeam.cells`` entry of a schema, or None.

    Raises:
        FormatError: the entry is there but is not a version this kmsbeam reads, or its
            fields have the wrong types.
    """
    raw = (schema.metadata or {}).get(CELLS_KEY)
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past the stack
        raise FormatError("the kmsbeam.cells schema metadata is not JSON") from exc
    if not isinstance(meta, dict) or meta.get("kmsbeam_cells") != CELLS_VERSION:
        raise FormatError(f"the kmsbeam.cells schema metadata is not version {CELLS_VERSION}")
    names = [meta.get("columns", []), meta.get("bind", [])]
    if not all(isinstance(n, list) and all(isinstance(x, str) for x in n) for n in names) or not all(
        isinstance(meta.get(k, ""), str) for k in ("format", "key", "arrow_schema")
    ):
        raise FormatError(
            "the kmsbeam.cells schema metadata is malformed: columns and bind must be lists of "
            "names, format, key and arrow_schema strings"
        )
    return meta


def original_schema(schema: pa.Schema) -> pa.Schema | None:
    """The schema a cell-encrypted table had before encryption (from its metadata), or None."""
    meta = cells_metadata(schema)
    return None if meta is None else original_from(meta)


def original_from(meta: Mapping[str, Any]) -> pa.Schema:
    """The original Arrow schema recorded in ``kmsbeam.cells`` metadata.

    Raises:
        FormatError: there is none, or it does not read as an Arrow IPC schema.
    """
    try:
        return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(meta["arrow_schema"], validate=True)))
    except (KeyError, ValueError, TypeError, OSError, pa.ArrowException) as exc:
        # OSError: pyarrow reports a damaged IPC message ("Invalid flatbuffers message") so
        raise FormatError("the kmsbeam.cells metadata holds no readable Arrow schema") from exc


def bindings(table: pa.Table, bind: tuple[FieldPath, ...]) -> list[bytes] | None:
    """Each row's binding, exactly as ``kmsbeam.formats.fields.binding_for`` computes it."""
    if not bind:
        return None
    ordered = sorted(bind, key=lambda p: p.name)
    columns = [column_at(table, p.name).to_pylist() for p in ordered]
    return bindings_of([p.name for p in ordered], zip(*columns))


def cells_schema(
    schema: pa.Schema,
    columns: Iterable[str] | str,
    key: str,
    bind: Iterable[str] | str = (),
    vault: str | None = None,
) -> pa.Schema:
    """The schema of ``schema``'s tables with ``columns`` as cells: those columns become
    binary and the ``kmsbeam.cells`` metadata is added (``key`` is recorded as a hint; with
    ``vault``, the cells are field values v2 and the vault's prefix is recorded, a hint too).

    Raises:
        ConfigurationError: an unknown column, one whose type cannot be a cell, or a table
            that already holds cells.
    """
    paths, bound = check_paths(columns, bind, "columns")
    if cells_metadata(schema) is not None:
        raise ConfigurationError("these columns already hold kmsbeam cells")
    for path in bound + paths:
        check_cell_type(field_at(schema, path.name).type, path.name)
    out = schema
    for path in paths:
        out = with_type_at(out, path.name, pa.binary())
    meta = {"kmsbeam_cells": CELLS_VERSION, "format": "field value v2" if vault else "field value v1",
            "columns": [p.name for p in paths], "bind": [p.name for p in bound], "key": key,
            "arrow_schema": base64.b64encode(schema.serialize().to_pybytes()).decode(),
            **({"key_vault": vault} if vault else {})}  # fmt: skip
    return out.with_metadata({**(schema.metadata or {}), CELLS_KEY: json.dumps(meta)})


class CellEncryptor:
    """Encrypts columns of Arrow tables into cells. One per worker thread; not thread-safe.

    Args:
        columns: dotted column paths (list, or one comma-separated string).
        source, context, policy, clock, on_generate: as for ``FieldEncryptor``.
        bind: cleartext columns identifying the row, bound into every cell's AAD.
        encrypt_none: encrypt null cells too (by default they stay null).
        vault: a key vault: cells are field values v2, their data keys in the vault.
    """

    def __init__(
        self,
        columns: Paths,
        source: KeySource,
        *,
        context: Mapping[str, str] | None = None,
        bind: Paths = (),
        policy: DataKeyPolicy | None = None,
        encrypt_none: bool = False,
        clock: Callable[[], float] = time.monotonic,
        on_generate: Callable[[], None] | None = None,
        vault: KeyVault | None = None,
    ) -> None:
        self.columns, self.bind = check_paths(columns, bind, "columns")
        self._sealing = Sealing(source, FIELD_V1, context, policy, clock=clock, on_generate=on_generate,
                                vault=vault)  # fmt: skip
        self.keys = self._sealing.keys
        self._uri = source.uri
        self._vault_uri = vault.uri if vault is not None else None
        self._encrypt_none = encrypt_none
        self._schemas: dict[pa.Schema, pa.Schema] = {}
        self.values = 0

    def reset(self) -> None:
        """A bundle boundary: the next table gets a fresh data key (or, with
        ``DataKeyPolicy(across_bundles=True)``, one this process kept)."""
        self._sealing.reset()

    def schema_for(self, schema: pa.Schema) -> pa.Schema:
        """The schema of encrypted tables (``cells_schema`` for this encryptor)."""
        out = self._schemas.get(schema)
        if out is None:
            names, bound = [p.name for p in self.columns], [p.name for p in self.bind]
            out = self._schemas[schema] = cells_schema(schema, names, self._uri, bound, self._vault_uri)
        return out

    def _plaintexts(self, table: pa.Table, path: FieldPath) -> tuple[list[int] | None, list[bytes]]:
        """The rows that get a cell (None: all) and their codec plaintexts."""
        column = column_at(table, path.name)
        strings = any(t(column.type) for t in _STRINGS)
        rows: list[int] | None = None
        if column.null_count and not self._encrypt_none:
            rows = pc.indices_nonzero(column.is_valid()).to_pylist()
            if strings:
                column = column.drop_null()
        if strings and not column.null_count:  # tag 0x05 || UTF-8, without str objects
            tagged = pc.binary_join_element_wise(_STR_TAG, column.cast(pa.binary()), _EMPTY)
            return rows, tagged.to_pylist()
        values = column.to_pylist()
        if rows is not None:
            values = [v for v in values if v is not None]
        try:
            return rows, [encode_value(v) for v in values]
        except TypeError as exc:
            raise RecordError(f"wrong type: column {path.name}: {exc}") from exc

    def encrypt_table(self, table: pa.Table | pa.RecordBatch) -> pa.Table:
        """``table`` with the columns encrypted (a new table; the input is not changed).

        Works through ``SLICE_ROWS`` rows at a time, so the Python objects of one slice at
        most are alive at once.

        Raises:
            ConfigurationError: see ``schema_for``. KeySourceError: no data key.
        """
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if table.num_rows <= SLICE_ROWS:
            return self._encrypt(table)
        return pa.concat_tables(
            [self._encrypt(table.slice(i, SLICE_ROWS)) for i in range(0, table.num_rows, SLICE_ROWS)]
        )

    def _encrypt(self, table: pa.Table) -> pa.Table:
        schema = self.schema_for(table.schema)
        n = table.num_rows
        binds_of_rows = bindings(table, self.bind)
        plan = [(p.name, *self._plaintexts(table, p)) for p in self.columns]
        sealed: list[list[bytes]] = [[] for _ in plan]
        runs = self._sealing.runs(n, [rows for _, rows, _ in plan], [plains for _, _, plains in plan])
        for sealer, start, stop, spans in runs:
            for out, (name, rows, plains), (a, b) in zip(sealed, plan, spans):
                if binds_of_rows is None:
                    binds = None
                elif rows is None:
                    binds = binds_of_rows[a:b]
                else:
                    binds = [binds_of_rows[r] for r in rows[a:b]]
                out += sealer.seal_column(name, plains[a:b], binds)
                self.values += b - a
        for (name, rows, _), cells in zip(plan, sealed):
            table = replace_at(table, name, scatter(binary_array(cells), rows, n))
        return table.replace_schema_metadata(schema.metadata)


