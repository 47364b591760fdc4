"""Beam Row <-> dict conversion, so the record engines see plain dicts.

Rows come as ``beam.Row`` or, after Beam's schema inference (e.g. ``beam.Create`` of Rows),
as generated NamedTuple classes. Both become dicts on the way in (nested ones too); on the
way out every dict that was a row in the input becomes a ``beam.Row`` (same field order).
Encrypted fields change type (to str or bytes), so the output is a plain ``beam.Row``, not
the input's schema class.
"""

from __future__ import annotations

from typing import Any

import apache_beam as beam


def is_row(value: Any) -> bool:
    """A beam.Row or a schema NamedTuple."""
    return isinstance(value, beam.Row) or (isinstance(value, tuple) and hasattr(value, "_asdict"))


def from_row(row: Any) -> Any:
    """A row (and nested rows) as dicts."""
    if is_row(row):
        return {k: from_row(v) for k, v in row._asdict().items()}
    return row


def to_row(record: Any, like: Any) -> Any:
    """Turn ``record`` back into Rows wherever ``like`` (the input element) had a row."""
    if is_row(like) and isinstance(record, dict):
        shape = like._asdict()
        return beam.Row(**{k: to_row(v, shape.get(k)) for k, v in record.items()})
    return record
