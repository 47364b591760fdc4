"""Decrypting cell columns of Arrow tables: the reader's twin of ``CellEncryptor``.

Each column is opened with one AES-GCM ``map`` per data key (``Opener.open_many``); string and
binary columns are rebuilt from the plaintexts without a Python object per value, other types
through the value codec. A cell that does not authenticate fails its row only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from kmsbeam.formats._binding import check_paths
from kmsbeam.formats._keys import Unwrapping
from kmsbeam.keys.cache import DataKeyCache
from kmsbeam.formats.codec import decode_value
from kmsbeam.formats.envelope import FIELD_V1, Opener
from kmsbeam.vault import KeyVault
from kmsbeam.formats.paths import Paths
from kmsbeam.errors import ConfigurationError, KmsBeamError, RecordError
from kmsbeam.keys.source import KeySource
from kmsbeam.formats.parquet._arrow import column_at, field_at, from_python, replace_at, scatter, tagged_array
from kmsbeam.formats.parquet._cells import (
    CELLS_KEY,
    SLICE_ROWS,
    bindings,
    cells_metadata,
    original_from,
)

__all__ = ["CellDecryptor"]

_CELL_TYPES = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)


class CellDecryptor:
    """Decrypts cell columns of Arrow tables. Thread-safe when the cache is.

    Each column is opened with one AES-GCM ``map`` per data key (``Opener.open_many``), and
    string and binary columns are rebuilt without a Python object per value.

    Args:
        columns: the columns to decrypt; default: all listed in the table's metadata.
        source, context, bind, cache, on_call: as for ``FieldDecryptor``.
        schema: the original schema, for tables without ``kmsbeam.cells`` metadata (else
            the values' types are inferred).
    """

    def __init__(
        self,
        columns: Paths | None,
        source: KeySource,
        *,
        context: Mapping[str, str] | None = None,
        bind: Paths = (),
        schema: pa.Schema | None = None,
        cache: DataKeyCache | None = None,
        on_call: Callable[[], None] | None = None,
        vault: KeyVault | None = None,
    ) -> None:
        named, self.bind = check_paths(columns or (), bind, "columns", required=False)
        self._columns = named or None
        self._keys = Unwrapping(source, context, cache, on_call, vault)
        self._schema = schema
        self.values = 0

    def _plan(self, schema: pa.Schema) -> tuple[tuple[str, ...], pa.Schema | None, dict[str, Any] | None]:
        meta = cells_metadata(schema)
        original = self._schema or (original_from(meta) if meta else None)
        if self._columns is not None:
            names = tuple(p.name for p in self._columns)
        elif meta is not None:
            names = tuple(meta.get("columns", ()))
        else:
            raise ConfigurationError("the table has no kmsbeam.cells metadata: name the columns")
        for name in names:
            t = field_at(schema, name).type
            if not any(test(t) for test in _CELL_TYPES):
                raise ConfigurationError(f"column {name!r} ({t}) holds no kmsbeam cells")
        return names, original, meta

    def _open_column(
        self, name: str, values: list[Any], binds: list[bytes] | None
    ) -> tuple[list[Any], dict[int, KmsBeamError]]:
        """Each value's plaintext (None where it failed) and the failures by position."""
        errors: dict[int, KmsBeamError] = {}
        if values and type(values[0]) is bytes:  # the common case: one data key for them all
            try:
                first, _ = self._keys.opener(values[0], FIELD_V1)
            except KmsBeamError:
                first = None
            n = len(first.header) if first is not None else 0
            if first is not None and {v[:n] for v in values} == {first.header}:
                bodies = [v[n:] for v in values]
                try:
                    return first.open_many(bodies, name, binds or [b""] * len(bodies)), errors
                except KmsBeamError:
                    pass  # some value is bad: the slow path says which
        out: list[Any] = [None] * len(values)
        groups: dict[int, tuple[Opener, list[int], list[bytes]]] = {}
        current: Opener | None = None
        for j, value in enumerate(values):
            try:
                body = current.body_of(value) if current is not None else None
                if body is None:
                    current, body = self._keys.opener(value, FIELD_V1)
            except KmsBeamError as exc:
                errors[j] = exc
                continue
            assert current is not None and body is not None
            group = groups.setdefault(id(current), (current, [], []))
            group[1].append(j)
            group[2].append(body)
        for opener, index, bodies in groups.values():
            these = [b""] * len(index) if binds is None else [binds[j] for j in index]
            for j, body, b in zip(index, bodies, these):
                try:
                    out[j] = opener.open(body, name, b)
                except KmsBeamError as exc:
                    errors[j] = exc
        return out, errors

    def decrypt_table(
        self, table: pa.Table | pa.RecordBatch
    ) -> tuple[pa.Table, list[tuple[int, KmsBeamError]]]:
        """The table with the columns decrypted, without the rows that failed, and the
        failures as (row index in the input, error); ``error.field`` names the column."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        if table.num_rows <= SLICE_ROWS:
            return self._decrypt(table)
        parts, failures = [], []
        for start in range(0, table.num_rows, SLICE_ROWS):
            part, failed = self._decrypt(table.slice(start, SLICE_ROWS))
            parts.append(part)
            failures += [(start + i, exc) for i, exc in failed]
        return pa.concat_tables(parts), failures

    def _decrypt(self, table: pa.Table) -> tuple[pa.Table, list[tuple[int, KmsBeamError]]]:
        names, original, meta = self._plan(table.schema)
        n = table.num_rows
        binds_of_rows = bindings(table, self.bind)
        failed: dict[int, KmsBeamError] = {}
        for name in names:
            column = column_at(table, name)
            rows = pc.indices_nonzero(column.is_valid()).to_pylist() if column.null_count else list(range(n))
            values = column.drop_null().to_pylist() if column.null_count else column.to_pylist()
            binds = None if binds_of_rows is None else [binds_of_rows[r] for r in rows]
            plains, errors = self._open_column(name, values, binds)
            good_rows = rows
            if errors:
                for j, exc in errors.items():
                    exc.field = name
                    failed.setdefault(rows[j], exc)
                good_rows = [r for j, r in enumerate(rows) if j not in errors]
                plains = [p for j, p in enumerate(plains) if j not in errors]
            self.values += len(plains)
            target = field_at(original, name).type if original is not None else None
            dense = tagged_array(plains, target)
            if dense is not None:
                decrypted = scatter(dense, None if len(good_rows) == n else good_rows, n)
            else:
                decrypted = _decoded(plains, good_rows, n, target, name, failed)
            table = replace_at(table, name, decrypted)
        table = table.replace_schema_metadata(_metadata(names, original, meta))
        if failed:
            table = table.filter(pa.array([i not in failed for i in range(n)]))
        return table, sorted(failed.items())


def _decoded(plains: list[bytes], rows: list[int], n: int, t: pa.DataType | None, name: str,
             failed: dict[int, KmsBeamError]) -> pa.Array:  # fmt: skip
    """Plaintexts decoded one by one into an array of ``n`` values of type ``t`` (null
    elsewhere); the rows whose value does not decode or fit ``t`` are added to ``failed``."""
    values: list[Any] = [None] * n
    for r, plain in zip(rows, plains):
        try:
            values[r] = decode_value(plain)
        except KmsBeamError as exc:
            exc.field = name
            failed.setdefault(r, exc)
    try:
        return from_python(values, t)
    except (pa.ArrowException, TypeError, ValueError):
        pass
    for r in rows:
        try:
            from_python([values[r]], t)
        except (pa.ArrowException, TypeError, ValueError):
            failed.setdefault(r, RecordError(f"wrong type: a value of {name} does not fit {t}"))
            values[r] = None
    return from_python(values, t)


def _metadata(names: tuple[str, ...], original: pa.Schema | None, meta: dict[str, Any] | None) -> Any:
    """The decrypted table's schema metadata: the original's, plus kmsbeam.cells for the
    cell columns that stay encrypted."""
    left = [c for c in (meta or {}).get("columns", []) if c not in names]
    base = dict(original.metadata or {}) if original is not None else {}
    if meta is not None and left:
        base[CELLS_KEY] = json.dumps({**meta, "columns": left})
    return base or None
