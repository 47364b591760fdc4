"""The JSON codec of JSONL jobs: one line in (``parse_line``), one line out (``dumps``).

Both are exact fast paths over the standard library's ``json``: a line parses to the same
values and types as ``json.loads`` (and to the same dead-letter reason when it does not), and a
record dumps to the same text as ``json.dumps(record, ensure_ascii=False, separators=(",", ":"),
default=...)``. The fast paths are ``msgspec`` (parse: it keeps integers beyond 64 bits as
``int``) and ``orjson`` (dump); whenever they could differ from the standard library, the
standard library answers:

- parse: a line ``msgspec`` refuses (``NaN``, ``Infinity``, numbers beyond the float range,
  lone surrogate escapes, not UTF-8, not JSON, deep nesting) goes to ``json.loads`` as before,
  which decides the dead letter; a record with a nested object or array is checked for depth;
- dump: ``json`` writes what ``orjson`` refuses (lone surrogates, non-``str`` keys, integers
  beyond 64 bits, sets, subclasses of ``str``/``int``/``float``/``dict``/``list``/``tuple``),
  a record that is not a ``dict``, and a record with a float or container whose line holds
  ``null`` (``orjson`` writes NaN and infinities as ``null``), ``e-`` (``1e-6`` for ``1e-06``)
  or ``0.0000`` (``0.00001`` for ``1e-05``). Enum members are not job values (``orjson`` would
  write their value, ``json`` their ``str``).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import re
from decimal import Decimal
from itertools import chain
from typing import Any, NamedTuple

import msgspec
import orjson

from kmsbeam.formats.codec import MAX_DEPTH

__all__ = ["TOO_DEEP", "Rejected", "dump_lines", "dumps", "parse_line"]

TOO_DEEP = f"JSON nested too deep: objects and arrays nest at most {MAX_DEPTH} levels"
_LONE = "not valid Unicode: a \\u escape names a lone surrogate"
_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # a JSON escape of a surrogate (pairs are fine)
_SURROGATE = re.compile("[\ud800-\udfff]")
_DECODE = msgspec.json.Decoder().decode
_CONTAINERS = frozenset({dict, list})
_FLOATY = frozenset({float, dict, list, tuple})  # what may be or hold a float
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


class Rejected(NamedTuple):
    """A line that is not a record: the dead-letter reason and the line as text."""

    reason: str
    shown: str


def parse_line(line: bytes) -> dict[str, Any] | Rejected:
    """One JSONL line (no line end; a byte order mark already dropped) as a dict, or why not."""
    try:
        record = _DECODE(line)
    except (msgspec.MsgspecError, RecursionError):
        return _parse_exactly(line)
    if type(record) is not dict:
        return Rejected("not a JSON object", line.decode("utf-8"))
    if not _CONTAINERS.isdisjoint(map(type, record.values())):
        return _checked(line.decode("utf-8"), record)
    return record


def _parse_exactly(line: bytes) -> dict[str, Any] | Rejected:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return Rejected("not valid UTF-8", line.decode("utf-8", "backslashreplace"))
    try:
        record = json.loads(text)
    except RecursionError:
        return Rejected(TOO_DEEP, text)
    except ValueError:
        return Rejected("not valid JSON", text)
    if not isinstance(record, dict):
        return Rejected("not a JSON object", text)
    if _ESCAPE.search(text) and _SURROGATE.search(json.dumps(record, ensure_ascii=False)):
        return Rejected(_LONE, text)  # Beam could not even move it between steps
    return _checked(text, record)


def _checked(text: str, record: dict[str, Any]) -> dict[str, Any] | Rejected:
    if text.count("{") + text.count("[") > MAX_DEPTH and _nests_deeper(record, MAX_DEPTH):
        return Rejected(TOO_DEEP, text)
    return record


def _nests_deeper(value: Any, limit: int) -> bool:
    """Whether dicts and lists nest more than ``limit`` levels in ``value`` (iteratively)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        for item in node.values() if isinstance(node, dict) else node:
            if isinstance(item, (dict, list)):
                stack.append((item, depth + 1))
    return False


def dumps(record: Any) -> str:
    """The compact JSON line style of kmsbeam (key order kept, UTF-8 as is). Values JSON has
    no type for (bytes, dates, decimals, decrypted from values another writer encrypted) are
    written as dead letters write them: base64 or ISO text, decimal text. A lone surrogate
    (from a ``\\udXXX`` escape in the input) stays an escape: it has no UTF-8 form."""
    if type(record) is dict:
        try:
            line = _ORJSON(record)
        except TypeError:  # orjson.JSONEncodeError too
            return _dumps_exactly(record)
        if not _floats_differ(record, line):
            return line.decode("utf-8")
    return _dumps_exactly(record)


def dump_lines(records: list[Any]) -> list[bytes] | None:
    """``dumps(record).encode("utf-8")`` of each record of a list, or None when some record is
    not a dict ``orjson`` writes (then call ``dumps`` record by record)."""
    if not {dict}.issuperset(map(type, records)):
        return None
    try:
        lines = list(map(_ORJSON, records))
    except TypeError:  # orjson.JSONEncodeError too
        return None
    if _FLOATY.isdisjoint(map(type, chain.from_iterable(map(dict.values, records)))):
        return lines  # no float anywhere (the common case: one check of every value's type)
    for i, line in enumerate(lines):
        if _floats_differ(records[i], line):
            lines[i] = _dumps_exactly(records[i]).encode("utf-8")
    return lines


def _floats_differ(record: dict[str, Any], line: bytes) -> bool:
    """Whether ``orjson``'s ``line`` may write a float of ``record`` otherwise than ``json``:
    a float or container value, and ``null`` (NaN, infinities), ``e-`` or ``0.0000`` in it."""
    return not _FLOATY.isdisjoint(map(type, record.values())) and (
        b"null" in line or b"e-" in line or b"0.0000" in line)  # fmt: skip


def _dumps_exactly(record: Any) -> str:
    line: str = _EXACT.encode(record)
    if _SURROGATE.search(line):
        line = _ASCII.encode(record)
    return line


def _fast_default(value: Any) -> Any:
    if isinstance(value, (str, int, float, dict, list, tuple, set, frozenset)):
        raise TypeError("the standard library writes it")  # subclasses, and sets (may hold NaN)
    return _json_default(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


_ORJSON = functools.partial(orjson.dumps, default=_fast_default, option=_OPTIONS)
_EXACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_json_default)
_ASCII = json.JSONEncoder(separators=(",", ":"), default=_json_default)
