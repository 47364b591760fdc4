"""The data keys a rotation saw: ``(K, master key version before, version after)`` per data key,
named from value headers (``rewrap_paths(..., heads=)``) once per distinct header.

A rewrap collects ``{old header: new header}`` per batch while it rewraps (values of one data
key share one header, so the map holds a few entries); ``key_rows`` names them once per bundle.
Values of records that failed are named from the record itself (``record_rows``): they count
before the rotation, not after. K and versions are public parts of a header: no key material.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from kmsbeam.errors import KmsBeamError
from kmsbeam.formats.envelope import from_text, parse
from kmsbeam.formats.paths import FieldPath
from kmsbeam.keys.registry import wrapped_key_version

__all__ = ["batch_rows", "key_rows", "merge_rows", "record_rows"]

_BODY = bytes(21)  # the shortest body parse() takes: a header alone parses with it
IN_VAULT = "(key vault)"  # the version of a v2 value's key: its header names none


def _version(wrapped: bytes) -> str:
    return wrapped_key_version(wrapped) if wrapped else IN_VAULT


def _name(header: Any, fmt: int) -> tuple[str, str]:
    data = from_text(header) if isinstance(header, str) else bytes(header)
    parsed = parse(data + _BODY, fmt, vault=True)
    return parsed.commitment.hex(), _version(parsed.wrapped)


def key_rows(heads: Mapping[Any, Any], fmt: int) -> list[str]:
    """``{"k": K-hex, "in": version, "out": version}`` JSON lines for ``{old header: new
    header}`` (one line per data key)."""
    rows: dict[str, str] = {}
    for old, new in heads.items():
        k, before = _name(old, fmt)
        after = before if new == old else _name(new, fmt)[1]
        rows[k] = json.dumps({"k": k, "in": before, "out": after}, sort_keys=True)
    return list(rows.values())


def record_rows(record: Mapping[str, Any], paths: Iterable[FieldPath], fmt: int, side: str = "in") -> list[str]:
    """``{"k": K-hex, side: version}`` lines for the values of one record, read from the
    values themselves (a record that failed, a dry run, a re-encryption); values that are not
    values of format ``fmt`` are left out."""
    out = []
    for path in paths:
        try:
            value = path.get(record)
            if value is None:
                continue
            parsed = parse(value, fmt, vault=True)
            k, v = parsed.commitment.hex(), _version(parsed.wrapped)
        except KmsBeamError:
            continue
        out.append(json.dumps({"k": k, side: v}, sort_keys=True))
    return out


def batch_rows(records: Iterable[Mapping[str, Any]], paths: Iterable[FieldPath], fmt: int,
               side: str = "in") -> list[str]:  # fmt: skip
    """The distinct ``record_rows`` lines of many records, in order of first appearance.

    A row depends on a value's header alone, and the values of one data key share their
    header: a text value that starts with the header text of the value named last gives the
    row named then, so only the first value of each run of one data key is parsed.
    """
    paths = tuple(paths)
    rows: dict[str, None] = {}
    last = None  # the header text of the text value named last
    for record in records:
        for path in paths:
            try:
                value = path.get(record)
            except KmsBeamError:
                continue
            if value is None or (last is not None and type(value) is str and value.startswith(last)):
                continue
            try:
                parsed = parse(value, fmt, vault=True)
                row = json.dumps({"k": parsed.commitment.hex(), side: _version(parsed.wrapped)},
                                 sort_keys=True)  # fmt: skip
            except KmsBeamError:
                continue
            rows[row] = None
            last = value[: len(parsed.header) // 3 * 4] if type(value) is str else None
    return list(rows)


def merge_rows(lines: Iterable[str]) -> tuple[dict[str, str], dict[str, str]]:
    """``({K-hex: version before}, {K-hex: version after})`` from ``key_rows`` and
    ``record_rows`` lines (any order, repeats allowed)."""
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    for line in lines:
        row = json.loads(line)
        if "in" in row:
            before[row["k"]] = row["in"]
        if "out" in row:
            after[row["k"]] = row["out"]
    return before, after
