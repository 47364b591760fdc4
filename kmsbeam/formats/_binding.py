"""What the engines of dict records and cells share: their paths and kept fields checked
once (``check_paths``, ``kept_names``), the record identity bound into the AAD
(``binding_for``, ``bindings_of``), and the batch helpers of the field engines."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kmsbeam.formats.codec import CodecError, encode_value
from kmsbeam.errors import ConfigurationError, RecordError
from kmsbeam.formats.paths import FieldPath, Paths, parse_paths

__all__ = [
    "MISSING", "NONE", "binding_for", "bindings_of", "check_paths", "column_of", "copies",
    "encoded", "is_text", "kept_names", "plan_of", "without_none",
]  # fmt: skip

MISSING = object()
NONE = type(None)


def binding_for(record: Mapping[str, Any], bind: Sequence[FieldPath], what: str = "bind fields") -> bytes:
    """The record-identity bytes for the AAD: the codec encoding of the bound fields, sorted
    by name (``docs/FORMAT.md``, "Binding"); empty when nothing is bound.

    Raises:
        RecordError: a bound field is missing, holds a type with no encoding, or breaks a
            codec limit.
    """
    if not bind:
        return b""
    return _identity({p.name: p.get(record) for p in sorted(bind, key=lambda p: p.name)}, what)


def bindings_of(names: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[bytes]:
    """``binding_for`` of many rows given as the values of the bound fields ``names`` (sorted
    by name), one sequence per row: the column-wise form (Arrow tables)."""
    return [_identity(dict(zip(names, row)), "bind fields") for row in rows]


def _identity(values: dict[str, Any], what: str) -> bytes:
    try:
        return encode_value(values)
    except TypeError as exc:
        raise RecordError(f"wrong type: a {what[:-1]} holds a type with no encoding ({exc})") from None
    except CodecError as exc:
        raise RecordError(f"{exc.kind} ({what}): {exc.rule}") from None


def encoded(value: Any, name: str) -> bytes:
    """``encode_value(value)`` for field ``name``; a value it refuses is a fresh per-record
    error naming the field, never the value.

    Raises:
        RecordError: no encoding for the type (``wrong type``), or over a codec limit.
    """
    try:
        return encode_value(value)
    except TypeError as exc:
        raise RecordError(f"wrong type: field {name}: {exc}") from None
    except CodecError as exc:
        raise exc.for_field(name) from None


def check_paths(
    fields: Paths, bind: Paths = (), what: str = "fields",
    *, required: bool = True,
) -> tuple[tuple[FieldPath, ...], tuple[FieldPath, ...]]:  # fmt: skip
    """The encrypted paths and the bind fields, parsed and checked (the one check every
    engine and format of fields and cells makes).

    Raises:
        ConfigurationError: no path named (when ``required``), overlapping paths, or a bind
            field that is also encrypted.
    """
    paths, bound = parse_paths(fields, what), parse_paths(bind, "bind fields")
    if required and not paths:
        raise ConfigurationError(f"name at least one {what.rstrip('s')}")
    for b in bound:
        for f in paths:
            if b.overlaps(f):
                raise ConfigurationError(f"bind field {b.name!r} cannot also be encrypted")
    return paths, bound


def is_text(encoding: str) -> bool:
    """Whether an encrypt engine writes text (``"text"``: URL-safe base64 str, for JSON/CSV)
    or binary values (``"bytes"``: binary sinks).

    Raises:
        ConfigurationError: any other encoding.
    """
    if encoding not in ("text", "bytes"):
        raise ConfigurationError(f"encoding must be 'text' or 'bytes', not {encoding!r}")
    return encoding == "text"


def kept_names(keep: Iterable[str] | str, payload_field: str) -> tuple[str, ...]:
    """The kept (cleartext, bound) fields of a record format, checked with its payload field.

    Raises:
        ConfigurationError: a kept field is not a top-level name or is named twice, or the
            payload field is empty or also kept.
    """
    if isinstance(keep, str):
        keep = [k.strip() for k in keep.split(",") if k.strip()]
    names = tuple(keep)
    for n in names:
        if not isinstance(n, str) or not n or "." in n:
            raise ConfigurationError(f"kept fields are top-level field names, not {n!r}")
    if len(set(names)) != len(names):
        raise ConfigurationError("a kept field is named twice")
    if not payload_field or not isinstance(payload_field, str):
        raise ConfigurationError("payload_field must be a non-empty field name")
    if payload_field in names:
        raise ConfigurationError("the payload field cannot also be a kept field")
    return names


def plan_of(fields: tuple[FieldPath, ...]) -> tuple[tuple[str, FieldPath | None], ...]:
    """(name, None) for top-level fields, (name, path) for nested ones: the hot loops' plan."""
    return tuple((p.name, p if len(p.parts) > 1 else None) for p in fields)


def column_of(records: Sequence[dict[str, Any]], name: str, path: FieldPath | None) -> list[Any]:
    """The values of one field in many records (``path`` None: the top-level field ``name``).

    Raises:
        RecordError: some record lacks the field.
    """
    if path is not None:
        return [path.get(r) for r in records]
    try:
        return [r[name] for r in records]
    except KeyError:
        raise RecordError(f"missing field: {name}") from None


def without_none(values: list[Any]) -> tuple[list[int] | None, list[Any], set[type]]:
    """(the positions of the values that are not None, those values, their types); None for
    the positions when there is no None."""
    kinds = set(map(type, values))
    if NONE not in kinds:
        return None, values, kinds
    kinds.discard(NONE)
    rows = [j for j, v in enumerate(values) if v is not None]
    return rows, [values[j] for j in rows], kinds


def copies(
    records: Sequence[Mapping[str, Any]], bind: tuple[FieldPath, ...]
) -> tuple[list[dict[str, Any]], list[bytes] | None]:
    """A batch's output records (shallow copies the caller owns) and their bindings (None:
    nothing is bound)."""
    outs = [r.copy() if type(r) is dict else dict(r) for r in records]
    return outs, ([binding_for(r, bind) for r in records] if bind else None)
