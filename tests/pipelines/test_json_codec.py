"""The JSONL job codec (``pipelines/_json.py``): the bytes and types of the standard library.

``reference_parse`` and ``reference_dumps`` are the job's JSON code before the codec (``json``
with the same checks, copied here as the specification). Every line parses, and every record
dumps, exactly as they do: pinned records first, then seeded random ones.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import re
from decimal import Decimal
from typing import Any

import pytest

from kmsbeam.formats.codec import MAX_DEPTH
from kmsbeam.pipelines._json import TOO_DEEP, Rejected, _json_default, dumps, parse_line

_LONE = "not valid Unicode: a \\u escape names a lone surrogate"
_SURROGATE = re.compile("[\ud800-\udfff]")


def reference_dumps(record: Any) -> str:
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_json_default)
    if _SURROGATE.search(line):
        line = json.dumps(record, separators=(",", ":"), default=_json_default)
    return line


def _deeper(value: Any, limit: int) -> bool:
    if limit < 1:
        return True
    children = value.values() if isinstance(value, dict) else value
    return any(_deeper(c, limit - 1) for c in children if isinstance(c, (dict, list)))


def reference_parse(line: bytes) -> Any:
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
    if re.search(r"\\u[dD][89a-fA-F]", text) and _SURROGATE.search(json.dumps(record, ensure_ascii=False)):
        return Rejected(_LONE, text)
    if _deeper(record, MAX_DEPTH):
        return Rejected(TOO_DEEP, text)
    return record


def typed(value: Any) -> Any:
    """``value`` with every leaf as (type, repr): 1 != 1.0 != True, -0.0 != 0.0, nan == nan."""
    if isinstance(value, dict):
        return ("dict", [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, repr(value))


class _Float(float):
    pass


class _Str(str):
    pass


# (record, its line): the output rules of a JSONL job, pinned
PINNED: list[tuple[Any, str]] = [
    ({"id": 1, "name": "Zoë Ångström", "ok": True, "no": False, "none": None},
     '{"id":1,"name":"Zoë Ångström","ok":true,"no":false,"none":null}'),
    ({"nested": {"a": [1, {"b": [[], {}]}], "c": {"d": {"e": "f"}}}, "z": 0},
     '{"nested":{"a":[1,{"b":[[],{}]}],"c":{"d":{"e":"f"}}},"z":0}'),
    ({"text": "line\u2028sep\u2029para\x7fdel \x00\x01\x1f tab\t nl\n cr\r bs\b ff\f quote\" backslash\\ slash/ é 😀 ✓"},
     '{"text":"line\u2028sep\u2029para\x7fdel \\u0000\\u0001\\u001f tab\\t nl\\n cr\\r bs\\b ff\\f quote\\" backslash\\\\ slash/ é 😀 ✓"}'),
    ({"floats": [1e-07, 1e-05, 0.0001, 1e16, 1e16 + 2, 1.5, -0.0, 0.0, 5.0, 1e300, 5e-324,
                 1.7976931348623157e308, 0.1, 123456.789]},
     '{"floats":[1e-07,1e-05,0.0001,1e+16,1.0000000000000002e+16,1.5,-0.0,0.0,5.0,1e+300,5e-324,'
     '1.7976931348623157e+308,0.1,123456.789]}'),
    ({"nan": math.nan, "inf": math.inf, "-inf": -math.inf}, '{"nan":NaN,"inf":Infinity,"-inf":-Infinity}'),
    ({"ints": [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 123456789012345678901234567890,
               -123456789012345678901234567890, 0, -1]},
     '{"ints":[9223372036854775807,9223372036854775808,18446744073709551615,18446744073709551616,'
     '-9223372036854775808,-9223372036854775809,123456789012345678901234567890,'
     '-123456789012345678901234567890,0,-1]}'),
    ({"lone": "\ud800", "pair": "\U0001f600"}, '{"lone":"\\ud800","pair":"\\ud83d\\ude00"}'),
    ({"bytes": b"\x00\xff\xfe", "date": dt.date(2026, 12, 3), "at": dt.datetime(2026, 12, 3, 14, 5, 6, 7),
      "aware": dt.datetime(2026, 12, 3, tzinfo=dt.timezone.utc), "time": dt.time(23, 59),
      "money": Decimal("12.50"), "big": Decimal("-1E+30"), "dnan": Decimal("NaN")},
     '{"bytes":"AP/+","date":"2026-12-03","at":"2026-12-03T14:05:06.000007","aware":"2026-12-03T00:00:00+00:00",'
     '"time":"23:59:00","money":"12.50","big":"-1E+30","dnan":"NaN"}'),
    ({"tuple": (1, "two"), "set": {3}}, '{"tuple":[1,"two"],"set":[3]}'),
    ({"a float in a set": {1e-06}}, '{"a float in a set":[1e-06]}'),
    ({"a float subclass": _Float(1e-06), "a str subclass": _Str("s")}, '{"a float subclass":1e-06,"a str subclass":"s"}'),
    ({"1e-7 as text": "e-6 0.00001 null", "x": 2.5}, '{"1e-7 as text":"e-6 0.00001 null","x":2.5}'),
    ({1: "int key", None: "null key", 2.5: "float key", False: "bool key"},
     '{"1":"int key","null":"null key","2.5":"float key","false":"bool key"}'),
    ("a dead letter's text record", '"a dead letter\'s text record"'),
]  # fmt: skip


@pytest.mark.parametrize(("record", "line"), PINNED)
def test_pinned_records_dump_as_the_standard_library(record: Any, line: str) -> None:
    assert dumps(record) == line == reference_dumps(record)


@pytest.mark.parametrize(("record", "line"), [p for p in PINNED if isinstance(p[0], dict) and all(isinstance(k, str) for k in p[0])])
def test_pinned_lines_parse_to_the_types_of_the_standard_library(record: Any, line: str) -> None:
    data = line.encode("utf-8", "surrogatepass")
    assert typed(parse_line(data)) == typed(reference_parse(data))


def test_deep_nesting_dumps_and_fails_as_the_standard_library() -> None:
    deep: list[Any] = []
    inner = deep
    for _ in range(300):  # deeper than orjson writes
        inner.append([])
        inner = inner[0]
    assert dumps({"d": deep}) == reference_dumps({"d": deep}) == '{"d":' + "[" * 301 + "]" * 301 + "}"
    circular: dict[str, Any] = {}
    circular["self"] = circular
    with pytest.raises(ValueError, match="Circular reference"):
        dumps(circular)


LINES: list[tuple[bytes, Any]] = [
    (b'{"a":1,"b":2,"a":3}', {"a": 3, "b": 2}),  # duplicate keys: the last value, the first place
    (b' {"a" : [1 , 2] }\r\r', {"a": [1, 2]}),
    (b'{"n":-0,"f":-0.0,"e":1E5,"x":1e-400,"i":18446744073709551616,"j":-9223372036854775809}',
     {"n": 0, "f": -0.0, "e": 100000.0, "x": 0.0, "i": 18446744073709551616, "j": -9223372036854775809}),
    (b'{"nan":NaN,"inf":Infinity,"ninf":-Infinity,"big":1e400}',
     {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "big": math.inf}),
    (b'{"pair":"\\ud83d\\ude00","esc":"\\u00e9\\/\\n","raw":"\xc3\xa9\xe2\x80\xa8\x7f","k\\u0000":null}',
     {"pair": "😀", "esc": "é/\n", "raw": "é\u2028\x7f", "k\x00": None}),
    (b'{"n":' + b"7" * 4300 + b"}", {"n": int("7" * 4300)}),
    (b'{"deep":' + b"[" * (MAX_DEPTH - 1) + b"]" * (MAX_DEPTH - 1) + b"}", None),
    (b'{"a":1}', {"a": 1}),
    # dead letters
    (b'{"a":"\xff"}', Rejected("not valid UTF-8", '{"a":"\\xff"}')),
    (b'{"a":"\xed\xa0\x80"}', Rejected("not valid UTF-8", '{"a":"\\xed\\xa0\\x80"}')),
    (b"\xef\xbb\xbf{}", Rejected("not valid JSON", "\ufeff{}")),  # a BOM not at the file's start
    (b"{not json", Rejected("not valid JSON", "{not json")),
    (b'{"a":1,}', Rejected("not valid JSON", '{"a":1,}')),
    (b'{"a":"\tx"}', Rejected("not valid JSON", '{"a":"\tx"}')),
    (b'{"a":1}\x00', Rejected("not valid JSON", '{"a":1}\x00')),
    (b'{"n":' + b"7" * 4301 + b"}", Rejected("not valid JSON", '{"n":' + "7" * 4301 + "}")),
    (b"[1]", Rejected("not a JSON object", "[1]")),
    (b'"x"', Rejected("not a JSON object", '"x"')),
    (b"null", Rejected("not a JSON object", "null")),
    (b'{"a":"\\ud800"}', Rejected(_LONE, '{"a":"\\ud800"}')),
    (b'{"a":"\\udc00\\ud800"}', Rejected(_LONE, '{"a":"\\udc00\\ud800"}')),
    (b'{"a":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}", Rejected(TOO_DEEP, None)),
    (b'{"a":' + b'{"b":' * MAX_DEPTH + b"1" + b"}" * MAX_DEPTH + b"}", Rejected(TOO_DEEP, None)),
    (b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}", Rejected(TOO_DEEP, None)),  # RecursionError
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), LINES, ids=[f"line{i}" for i in range(len(LINES))])
def test_lines_parse_and_dead_letter_as_the_standard_library(line: bytes, expected: Any) -> None:
    got = parse_line(line)
    assert typed(got) == typed(reference_parse(line))
    if isinstance(expected, Rejected):
        assert isinstance(got, Rejected) and got.reason == expected.reason
        assert got.shown == (expected.shown if expected.shown is not None else line.decode("utf-8"))
    elif expected is not None:
        assert typed(got) == typed(expected)
        assert all(type(got[k]) is type(v) for k, v in expected.items())


def _string(rnd: random.Random) -> str:
    pool = ["a", "Z", " ", "é", "Ω", "渡", "😀", "\u2028", "\u2029", "\x7f", "\x00", "\x1f", "\t", "\n", '"', "\\",
            "/", "e-", "0.0000", "null", "NaN", "\ufeff", "\ud800", "\udfff"]  # fmt: skip
    return "".join(rnd.choice(pool) for _ in range(rnd.randint(0, 8)))


def _float(rnd: random.Random) -> float:
    kind = rnd.randint(0, 5)
    if kind == 0:
        return rnd.choice([math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324, 1.7976931348623157e308])
    if kind == 1:
        return rnd.choice([1.0, 1.5, 2.25, 9.875]) * 10.0 ** rnd.randint(-12, 22)
    if kind == 2:
        return rnd.uniform(-1e6, 1e6)
    return rnd.choice([-1, 1]) * rnd.random() * 10.0 ** rnd.randint(-320, 308)


def _int(rnd: random.Random) -> int:
    edge = rnd.choice([0, 2**31, 2**53, 2**63, 2**64, 10**30])
    return rnd.choice([-1, 1]) * (edge + rnd.randint(-2, 2)) if rnd.random() < 0.5 else rnd.randint(-1000, 1000)


def _value(rnd: random.Random, depth: int) -> Any:
    kind = rnd.randint(0, 12 if depth < 4 else 9)
    if kind <= 2:
        return _string(rnd)
    if kind <= 4:
        return _float(rnd)
    if kind <= 6:
        return _int(rnd)
    if kind == 7:
        return rnd.choice([True, False, None])
    if kind == 8:
        return rnd.choice([b"\x00\xff", dt.date(2020, 2, 29), dt.datetime(2020, 1, 2, 3, 4, 5), Decimal("-0.10"),
                           (1, 1e-07), dt.time(1, 2)])  # fmt: skip
    if kind == 9:
        return rnd.randint(-9, 9) * 10.0 ** -rnd.randint(4, 10)  # around the exponent rules
    if kind == 10:
        return [_value(rnd, depth + 1) for _ in range(rnd.randint(0, 3))]
    return _record(rnd, depth + 1)


def _record(rnd: random.Random, depth: int = 0) -> dict[str, Any]:
    return {_string(rnd): _value(rnd, depth) for _ in range(rnd.randint(0, 5))}


def test_random_records_dump_and_parse_as_the_standard_library() -> None:
    rnd = random.Random(20261203)
    for _ in range(3000):
        record = _record(rnd)
        line = dumps(record)
        assert line == reference_dumps(record), record
        data = line.encode("utf-8")  # a lone surrogate is an ASCII escape: always encodes
        assert typed(parse_line(data)) == typed(reference_parse(data)), data
        spaced = json.dumps(record, ensure_ascii=rnd.random() < 0.5, default=_json_default).encode("utf-8", "surrogatepass")
        assert typed(parse_line(spaced)) == typed(reference_parse(spaced)), spaced


_ATOMS = [b"{", b"}", b"[", b"]", b",", b":", b'"', b'"a"', b'"\\ud800"', b'"\\udc00"', b'"\\ud83d\\ude00"', b"\\u",
          b"d800", b"\\", b"1", b"-", b"0", b".", b"e", b"E", b"+", b"1e400", b"NaN", b"Infinity", b"-Infinity",
          b"true", b"null", b" ", b"\t", b"\r", b"\x00", b"\x7f", b"\xc3\xa9", b"\xff", b"\xed\xa0\x80",
          b"\xef\xbb\xbf", b"18446744073709551616", b'"\xe2\x80\xa8"', b"\x0c", b"\xc2\xa0", b'"\\x"', b"9" * 30]  # fmt: skip


def test_random_bytes_parse_and_dead_letter_as_the_standard_library() -> None:
    rnd = random.Random(17)
    seeds = [b'{"a":1}', b'{"a":[1,2,{"b":"c"}],"d":{"e":null}}', b'{"a":"\\ud83d\\ude00","b":1.5e-7,"c":-0}']
    for _ in range(20000):
        if rnd.random() < 0.5:
            line = b"".join(rnd.choice(_ATOMS) for _ in range(rnd.randint(1, 12)))
            line = b'{"k":' + line + b"}" if rnd.random() < 0.7 else line
        else:
            edited = bytearray(rnd.choice(seeds))
            for _ in range(rnd.randint(1, 3)):
                at = rnd.randint(0, len(edited))
                if rnd.random() < 0.5:
                    edited[at:at] = rnd.choice(_ATOMS)
                else:
                    del edited[at : at + rnd.randint(1, 3)]
            line = bytes(edited)
        assert typed(parse_line(line)) == typed(reference_parse(line)), line
