from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal
from typing import Any

import pytest

from kmsbeam import MalformedValueError, decode_value, encode_value
from kmsbeam.codec import KEPT, read_varint, write_varint

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
    with pytest.raises(MalformedValueError):
        decode_value(data)


def test_kept_marker_and_varints() -> None:
    assert decode_value(encode_value(KEPT)) is KEPT
    for n in (0, 1, 127, 128, 300, 2**35):
        assert read_varint(write_varint(n), 0) == (n, len(write_varint(n)))
