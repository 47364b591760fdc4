"""Envelope formats: the value envelope and codec, field and record encryption, streamed
objects (``kmsbeam.formats.objects``) and Parquet cells and PME (``kmsbeam.formats.parquet``).
Every format is specified in ``docs/FORMAT.md`` and pinned by ``tests/vectors``.

A format is one object (``kmsbeam.formats.base.Format``): encrypt and decrypt engines,
rewrap in place and inspect. ``FieldFormat`` and ``RecordFormat`` are here; ``CellFormat`` and
``PmeFormat`` in ``kmsbeam.formats.parquet.formats``, ``ObjectFormat`` in ``kmsbeam.formats.objects``
(``format_class(name)`` finds any of them without importing pyarrow for the others).
"""

from typing import TYPE_CHECKING, Any

from kmsbeam.formats.base import (
    ALREADY,
    FILTERED,
    FORMAT_NAMES,
    MOVED,
    RESUMED,
    REWRAPPED,
    Format,
    KeyRewrap,
    KeyUse,
    format_class,
    merge_uses,
    outcomes,
)

if TYPE_CHECKING:
    from kmsbeam.formats.dicts import FieldFormat, RecordFormat

__all__ = [
    "ALREADY",
    "FILTERED",
    "FORMAT_NAMES",
    "MOVED",
    "RESUMED",
    "REWRAPPED",
    "FieldFormat",
    "Format",
    "KeyRewrap",
    "KeyUse",
    "RecordFormat",
    "format_class",
    "merge_uses",
    "outcomes",
]


def __getattr__(name: str) -> Any:
    # The engines import kmsbeam.keys, which imports kmsbeam.formats.envelope: load on use.
    if name in ("FieldFormat", "RecordFormat"):
        from kmsbeam.formats import dicts

        return getattr(dicts, name)
    raise AttributeError(f"module 'kmsbeam.formats' has no attribute {name!r}")
