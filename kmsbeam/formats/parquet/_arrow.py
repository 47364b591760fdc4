"""Arrow columns <-> the Python values of kmsbeam's value codec, and dotted column paths.

A cell column holds one field value v1 per row. What gets encrypted is the codec encoding of
the Python value pyarrow gives for the cell (``to_pylist``), and decryption builds the column
back with the original Arrow type. Supported types (``check_cell_type``):

- bool, (u)int8..64, float16/32/64, string, large_string, string_view, binary,
  large_binary, binary_view, fixed_size_binary, date32, date64, decimal128, decimal256;
- timestamp with unit s, ms or us, with or without a time zone (ns does not fit Python's
  datetime);
- list, large_list, fixed_size_list, struct and map of supported types; dictionary of a
  supported value type (it comes back dictionary-encoded again).

Not supported: time32/64, duration, intervals, timestamp[ns], null, unions, extension types.
Paths are dotted field names into structs (``contact.email``), as field values name them.
"""

from __future__ import annotations

import array
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from kmsbeam.errors import ConfigurationError

__all__ = [
    "binary_array",
    "check_cell_type",
    "column_at",
    "field_at",
    "from_python",
    "replace_at",
    "scatter",
    "tagged_array",
    "with_type_at",
]

_SIMPLE = (
    pa.types.is_boolean, pa.types.is_integer, pa.types.is_floating, pa.types.is_string,
    pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary,
    pa.types.is_fixed_size_binary, pa.types.is_date, pa.types.is_decimal,
    pa.types.is_string_view, pa.types.is_binary_view,
)  # fmt: skip


def _unsupported(t: pa.DataType) -> str | None:
    """Why values of ``t`` cannot be cells, or None when they can."""
    if any(test(t) for test in _SIMPLE):
        return None
    if pa.types.is_timestamp(t):
        return "nanosecond timestamps do not fit Python's datetime" if t.unit == "ns" else None
    if pa.types.is_dictionary(t):
        return _unsupported(t.value_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _unsupported(t.value_type)
    if pa.types.is_map(t):
        return _unsupported(t.key_type) or _unsupported(t.item_type)
    if pa.types.is_struct(t):
        for i in range(t.num_fields):
            why = _unsupported(t.field(i).type)
            if why:
                return why
        return None
    return f"the value codec has no encoding for {t}"


def check_cell_type(t: pa.DataType, path: str) -> None:
    """Raise ConfigurationError unless values of type ``t`` can be encrypted as cells."""
    why = _unsupported(t)
    if why:
        raise ConfigurationError(f"column {path!r} ({t}) cannot be encrypted as cells: {why}")


def _has_map(t: pa.DataType) -> bool:
    if pa.types.is_map(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return _has_map(t.value_type)
    if pa.types.is_struct(t):
        return any(_has_map(t.field(i).type) for i in range(t.num_fields))
    return False


def _maps_as_tuples(value: Any, t: pa.DataType) -> Any:
    """Map entries come back from the codec as 2-item lists; pyarrow wants tuples."""
    if value is None:
        return None
    if pa.types.is_map(t):
        return [(_maps_as_tuples(k, t.key_type), _maps_as_tuples(v, t.item_type)) for k, v in value]
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return [_maps_as_tuples(v, t.value_type) for v in value]
    if pa.types.is_struct(t) and isinstance(value, dict):
        return {f.name: _maps_as_tuples(value.get(f.name), f.type) for f in t}
    return value


def from_python(values: Sequence[Any], t: pa.DataType | None) -> pa.Array:
    """An Arrow array of ``values`` with type ``t`` (inferred when None).

    Raises:
        pa.ArrowInvalid, pa.ArrowTypeError, TypeError: a value does not fit ``t``.
    """
    if t is not None and _has_map(t):
        values = [_maps_as_tuples(v, t) for v in values]
    return pa.array(values, type=t)


_MAX_CHUNK = 1 << 30


def _packed(values: Sequence[bytes], t: pa.DataType) -> pa.Array:
    offsets = array.array("i", accumulate(map(len, values), initial=0))
    data = pa.py_buffer(b"".join(values))
    return pa.Array.from_buffers(t, len(values), [None, pa.py_buffer(offsets), data])


def binary_array(values: Sequence[bytes], t: pa.DataType = pa.binary()) -> pa.Array | pa.ChunkedArray:
    """``pa.array(values, t)`` for bytes without nulls, built from two buffers (several times
    faster for short values); chunked when the bytes pass 1 GiB (32-bit offsets)."""
    total = sum(map(len, values))
    if total < _MAX_CHUNK:
        return _packed(values, t)
    chunks, start, size = [], 0, 0
    for i, v in enumerate(values):
        if size + len(v) >= _MAX_CHUNK and i > start:
            chunks.append(_packed(values[start:i], t))
            start, size = i, 0
        size += len(v)
    chunks.append(_packed(values[start:], t))
    return pa.chunked_array(chunks, t)


def scatter(dense: pa.Array | pa.ChunkedArray, rows: Sequence[int] | None, n: int) -> Any:
    """``dense`` placed at ``rows`` of an array of ``n`` values, null elsewhere."""
    if rows is None:
        return dense
    index: list[int | None] = [None] * n
    for j, r in enumerate(rows):
        index[r] = j
    return dense.take(pa.array(index, pa.int64()))


_TAGGED = {0x05: pa.string(), 0x06: pa.binary()}
_FAST = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary())


def tagged_array(plaintexts: Sequence[bytes], t: pa.DataType | None) -> pa.Array | None:
    """The decoded values of codec plaintexts as an array of type ``t``, without a Python
    object per value, when they are all str (tag 0x05) or all bytes (0x06) and ``t`` is a
    string or binary type; else None (decode them one by one)."""
    if not plaintexts or (t is not None and t not in _FAST):
        return None
    tag = plaintexts[0][0]
    kind = _TAGGED.get(tag)
    if kind is None or t is not None and (pa.types.is_string(t) or pa.types.is_large_string(t)) != (tag == 5):
        return None
    head = plaintexts[0][:1]
    if any(p[:1] != head for p in plaintexts):
        return None
    out = _packed([p[1:] for p in plaintexts], kind)
    try:
        out.validate(full=True)  # UTF-8 for strings
    except pa.ArrowInvalid:
        return None
    return out if t is None or t == kind else out.cast(t)


def _split(path: str) -> list[str]:
    parts = path.split(".")
    if not path or not all(parts):
        raise ConfigurationError(f"bad column path {path!r}: use names joined by '.'")
    return parts


def field_at(schema: pa.Schema, path: str) -> pa.Field:
    """The field at a dotted path (into structs).

    Raises:
        ConfigurationError: no such field.
    """
    parts = _split(path)
    fields: Any = schema
    found: pa.Field | None = None
    for i, part in enumerate(parts):
        index = fields.get_field_index(part) if fields is not None else -1
        if index < 0:
            where = ".".join(parts[:i]) or "the table"
            raise ConfigurationError(f"unknown column {path!r}: {where} has no field {part!r}")
        found = fields.field(index)
        fields = found.type if pa.types.is_struct(found.type) else None
    assert found is not None
    return found


def column_at(table: pa.Table, path: str) -> pa.ChunkedArray:
    """The values at a dotted path; a null parent struct makes its children null."""
    parts = _split(path)
    column = table.column(parts[0])
    for part in parts[1:]:
        column = pc.struct_field(column, [column.type.get_field_index(part)])
    return column


def _replaced(parent: pa.Array, parts: list[str], new: pa.Array) -> pa.Array:
    """The struct array ``parent`` with the child at ``parts`` replaced by ``new``."""
    t = parent.type
    index = t.get_field_index(parts[0])
    children = [parent.field(i) for i in range(t.num_fields)]
    fields = [t.field(i) for i in range(t.num_fields)]
    if len(parts) == 1:
        children[index] = new
        fields[index] = fields[index].with_type(new.type)
    else:
        children[index] = _replaced(children[index], parts[1:], new)
        fields[index] = fields[index].with_type(children[index].type)
    return pa.StructArray.from_arrays(children, fields=fields, mask=parent.is_null())


def replace_at(table: pa.Table, path: str, new: pa.Array) -> pa.Table:
    """``table`` with the column at ``path`` replaced by ``new`` (one array for all rows)."""
    parts = _split(path)
    index = table.schema.get_field_index(parts[0])
    field = table.schema.field(index)
    if len(parts) == 1:
        return table.set_column(index, field.with_type(new.type), new)
    parent = table.column(index).combine_chunks()
    replaced = _replaced(parent, parts[1:], new)
    return table.set_column(index, field.with_type(replaced.type), replaced)


def with_type_at(schema: pa.Schema, path: str, new_type: pa.DataType) -> pa.Schema:
    """``schema`` with the field at ``path`` changed to ``new_type`` (inside structs)."""
    parts = _split(path)

    def change(field: pa.Field, rest: list[str]) -> pa.Field:
        if not rest:
            return field.with_type(new_type)
        t = field.type
        kids = [t.field(i) for i in range(t.num_fields)]
        kids = [change(k, rest[1:]) if k.name == rest[0] else k for k in kids]
        return field.with_type(pa.struct(kids))

    index = schema.get_field_index(parts[0])
    return schema.set(index, change(schema.field(index), parts[1:]))
