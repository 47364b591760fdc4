"""Record identity for the AAD (bind fields) and the checks shared by the field engines."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kmsbeam.formats.codec import CodecError, encode_value
from kmsbeam.errors import ConfigurationError, KmsBeamError, RecordError
from kmsbeam.formats.paths import FieldPath

__all__ = [
    "MISSING", "NONE", "binding_for", "check_bind", "column_of", "copies", "encoded", "outcome",
    "plan_of", "without_none",
]  # fmt: skip

MISSING = object()
NONE = type(None)


def binding_for(record: Mapping[str, Any], bind: tuple[FieldPath, ...]) -> bytes:
    """The record-identity bytes for the AAD: the codec encoding of the bound fields, sorted."""
    if not bind:
        return b""
    values = {p.name: p.get(record) for p in sorted(bind, key=lambda p: p.name)}
    try:
        return encode_value(values)
    except TypeError as exc:
        raise RecordError(f"wrong type: a bind field holds a type with no encoding ({exc})") from None
    except CodecError as exc:
        raise RecordError(f"{exc.kind} (bind fields): {exc.rule}") from None


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


def check_bind(fields: tuple[FieldPath, ...], bind: tuple[FieldPath, ...]) -> None:
    for b in bind:
        for f in fields:
            if b.overlaps(f):
                raise ConfigurationError(f"bind field {b.name!r} cannot also be encrypted")


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


def without_none(values: list[Any]) -> tuple[list[int] | None, list[Any]]:
    """(the positions of the values that are not None, those values); (None, values) when
    there is no None."""
    if NONE not in set(map(type, values)):
        return None, values
    rows = [j for j, v in enumerate(values) if v is not None]
    return rows, [values[j] for j in rows]


def copies(
    records: Sequence[Mapping[str, Any]], bind: tuple[FieldPath, ...]
) -> tuple[list[dict[str, Any]], list[bytes] | None]:
    """A batch's output records (shallow copies the caller owns) and their bindings (None:
    nothing is bound)."""
    outs = [r.copy() if type(r) is dict else dict(r) for r in records]
    return outs, ([binding_for(r, bind) for r in records] if bind else None)


def outcome(run: Callable[[Mapping[str, Any]], Any], record: Mapping[str, Any]) -> Any:
    """``run(record)``, or the kmsbeam error it raised (a batch's per-record fallback).

    The error is cut from the batch's own failure (``__context__``, whose traceback holds the
    whole batch's records): it reaches this record's frames only."""
    try:
        return run(record)
    except KmsBeamError as exc:
        exc.__context__ = None
        exc.__suppress_context__ = True
        return exc
