from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from decimal import Decimal
from typing import Any

import pytest

from kmsbeam import MalformedValueError, RecordError, decode_value, encode_value
from kmsbeam.formats.codec import KEPT, MAX_DEPTH, CodecError, read_varint, write_varint
from tests.core.test_vectors import untyped

VALUES: list[Any] = [
    None, True, False, 0, 1, -1, 127, 128, -128, -129, 2**70, -(2**70), 0.0, -0.0, 1.5,
    float("inf"), float("-inf"), 1e-300, "", "ssn 123-45-6789", "ünïcødé ✓", b"", b"\x00\xff",
    dt.date(2026, 11, 23), dt.datetime(2026, 11, 23, 12, 30, 1, 123456),
    dt.datetime(2026, 11, 23, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=8))),
    Decimal("12.50"), Decimal("-0.000001"), Decimal("1E+10"),
    [], [1, "a", None, [2.5, {"x": b"y"}]], {}, {"a": 1, "b": {"c": [True, Decimal("1.0")]}},
]  # fmt: skip


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_round_trip_keeps_value_and_type(value: Any) -> None:
    back = decode_value(encode_value(value))
    assert back == value and type(back) is type(value)
    if isinstance(value, float):
        assert math.copysign(1, back) == math.copysign(1, value)
    if isinstance(value, Decimal):
        assert str(back) == str(value)


def test_nan_and_order_survive() -> None:
    assert math.isnan(decode_value(encode_value(float("nan"))))
    assert decode_value(encode_value(Decimal("NaN"))).is_nan()
    assert list(decode_value(encode_value({"z": 1, "a": 2}))) == ["z", "a"]


def test_tuples_become_lists_and_subclasses_encode() -> None:
    assert decode_value(encode_value((1, 2))) == [1, 2]

    class Name(str):
        pass

    assert decode_value(encode_value(Name("x"))) == "x"


@pytest.mark.parametrize("bad", [{1, 2}, object(), {1: "int key"}, [object()], complex(1, 2)])
def test_unsupported_types_raise_type_error(bad: Any) -> None:
    with pytest.raises(TypeError):
        encode_value(bad)


@pytest.mark.parametrize(
    "data", [b"", b"\xff", b"\x00x", b"\x04abc", b"\x05\xff", b"\x0a\x05", b"\x0b\x01\x09a", b"\x07nope"]
)
def test_malformed_encodings_raise(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_value(data)


def test_kept_marker_and_varints() -> None:
    payload = encode_value({"id": KEPT, "x": 1}, kept=True)
    assert decode_value(payload, kept=True) == {"id": KEPT, "x": 1}
    for n in (0, 1, 127, 128, 300, 2**35, 2**63 - 1):
        assert read_varint(write_varint(n), 0) == (n, len(write_varint(n)))
    for bad in (b"\x80\x00", b"\xff\x00", b"\x80" * 9 + b"\x01", b"\x80"):
        with pytest.raises(MalformedValueError):
            read_varint(bad, 0)


# ---- limits and reader strictness (docs/FORMAT.md, "Value codec") ----------------------

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "codec_v1.json").read_text())


@pytest.mark.parametrize("case", VECTORS["accept"], ids=lambda c: c["hex"][:24])
def test_vectors_accepted_values_encode_and_decode_exactly(case: dict[str, Any]) -> None:
    value = untyped(case["value"])
    assert encode_value(value).hex() == case["hex"]
    back = decode_value(bytes.fromhex(case["hex"]))
    assert back == value or (isinstance(value, Decimal) and value.is_nan() and back.is_nan())
    assert encode_value(back).hex() == case["hex"]


@pytest.mark.parametrize("case", VECTORS["refuse"], ids=lambda c: c["case"])
def test_vectors_refused_encodings_raise_one_codec_error(case: dict[str, Any]) -> None:
    with pytest.raises(CodecError) as info:
        decode_value(bytes.fromhex(case["hex"]))
    assert info.value.kind == case["error"]
    assert isinstance(info.value, RecordError)  # one record's failure, not an authentication error
    assert not isinstance(info.value, MalformedValueError)


def _deep(depth: int, inner: Any = None) -> Any:
    for _ in range(depth):
        inner = [inner]
    return inner


def _deep_bytes(depth: int) -> bytes:
    enc = b"\x00"
    for _ in range(depth):
        enc = b"\x0a\x01" + write_varint(len(enc)) + enc
    return enc


def test_nesting_depth_is_a_limit_on_both_sides() -> None:
    assert decode_value(encode_value(_deep(MAX_DEPTH))) == _deep(MAX_DEPTH)
    mixed = {"a": _deep(MAX_DEPTH - 1)}  # a map is a level too
    assert decode_value(encode_value(mixed)) == mixed
    for too_deep in (_deep(MAX_DEPTH + 1), {"a": _deep(MAX_DEPTH)}, _deep(5_000)):
        with pytest.raises(CodecError, match="value too deep"):
            encode_value(too_deep)
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(CodecError, match="value too deep"):
        encode_value(cycle)
    for depth in (MAX_DEPTH + 1, 2_000, 20_000):  # crafted: far deeper than Python's stack
        with pytest.raises(CodecError, match="value too deep"):
            decode_value(_deep_bytes(depth))


def test_size_limits_on_both_sides() -> None:
    assert decode_value(encode_value(2**8191 - 1)) == 2**8191 - 1
    for big in (2**8191, -(2**8191) - 1, 10**300_000):  # a 1 MB-ish int
        with pytest.raises(CodecError, match="value too large"):
            encode_value(big)
    with pytest.raises(CodecError, match="value too large"):
        decode_value(b"\x03" + b"\x01" * 1_000_000)
    for dec in (Decimal("1" * 1025), Decimal("1E+6112"), Decimal("1E-6177")):
        with pytest.raises(CodecError, match="value too large"):
            encode_value(dec)
    with pytest.raises(CodecError, match="value too large"):
        decode_value(b"\x09" + b"9" * 1_000_000)
    assert decode_value(encode_value(Decimal("9" * 1024))) == Decimal("9" * 1024)


def test_kept_marker_only_in_a_record_payloads_top_level_map() -> None:
    for bad in (KEPT, [KEPT], {"a": KEPT}):
        with pytest.raises(TypeError):
            encode_value(bad)
    with pytest.raises(TypeError):  # nested in a record payload
        encode_value({"a": {"b": KEPT}}, kept=True)
    with pytest.raises(CodecError, match="kept marker"):
        decode_value(b"\x0c")
    with pytest.raises(CodecError, match="kept marker"):  # a record payload read as a field value
        decode_value(encode_value({"id": KEPT}, kept=True))
    with pytest.raises(CodecError, match="kept marker"):
        decode_value(bytes.fromhex("0b01016106" "0b010162010c"), kept=True)
    with pytest.raises(CodecError, match="record payload is a map"):
        decode_value(b"\x0a\x00", kept=True)


def test_text_that_is_not_unicode_is_refused_per_value() -> None:
    for bad in ("\ud800", ["ok", "x\udfff"], {"\udc80": 1}):
        with pytest.raises(CodecError, match="invalid text"):
            encode_value(bad)


def test_codec_error_names_the_field_without_the_value() -> None:
    with pytest.raises(CodecError) as info:
        encode_value(10**5000)
    named = info.value.for_field("amount")
    assert str(named) == "value too large (field amount): an int holds at most 1024 bytes"
    assert "1000" not in str(named)


def test_writer_output_is_canonical_for_subclasses() -> None:
    class Stamp(dt.datetime):
        def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
            return super().isoformat() + "000"  # like pandas' nanoseconds

    stamp = Stamp(2026, 1, 2, 3, 4, 5, 6)
    assert decode_value(encode_value(stamp)) == dt.datetime(2026, 1, 2, 3, 4, 5, 6)
