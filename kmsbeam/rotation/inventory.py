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

__all__ = ["key_rows", "merge_rows", "record_rows"]

_BODY = bytes(21)  # the shortest body parse() takes: a header alone parses with it


def _name(header: Any, fmt: int) -> tuple[str, str]:
    data = from_text(header) if isinstance(header, str) else bytes(header)
    parsed = parse(data + _BODY, fmt)
    return parsed.commitment.hex(), wrapped_key_version(parsed.wrapped)


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
            parsed = parse(value, fmt)
            k, v = parsed.commitment.hex(), wrapped_key_version(parsed.wrapped)
        except KmsBeamError:
            continue
        out.append(json.dumps({"k": k, side: v}, sort_keys=True))
    return out


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
