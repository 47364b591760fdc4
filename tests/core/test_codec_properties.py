"""Property tests of the value codec: round trips, and any bytes decode or raise CodecError.

The strict reader has one more property: whatever it accepts re-encodes to the very same
bytes (every value has exactly one encoding), so nothing a writer cannot produce gets in.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kmsbeam.formats.codec import KEPT, MAX_DECIMAL_CHARS, MAX_DEPTH, CodecError, decode_value, encode_value

_INT_BOUND = 2**8191
_zones = st.builds(
    dt.timezone, st.integers(-23 * 60 + 1, 23 * 60 - 1).map(lambda m: dt.timedelta(minutes=m))
)
_decimals = st.decimals(allow_nan=True, allow_infinity=True, places=None).filter(
    lambda d: len(str(d)) <= MAX_DECIMAL_CHARS
    and (not d.is_finite() or -6176 <= d.as_tuple().exponent <= 6111)  # type: ignore[operator]
)
SCALARS = (
    st.none() | st.booleans() | st.integers(-_INT_BOUND, _INT_BOUND - 1)
    | st.floats(allow_nan=True) | st.text() | st.binary() | st.dates()
    | st.datetimes(timezones=st.none() | _zones) | _decimals
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=25,
)


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN (compared through the canonical encoding)."""
    return encode_value(a) == encode_value(b)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(VALUES)
def test_round_trip_of_generated_values(value: Any) -> None:
    encoded = encode_value(value)
    back = decode_value(encoded)
    assert _same(back, value)
    assert type(back) is type(value) or isinstance(value, tuple)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=5), VALUES | st.just(KEPT), max_size=5))
def test_round_trip_of_record_payloads(payload: dict[str, Any]) -> None:
    encoded = encode_value(payload, kept=True)
    back = decode_value(encoded, kept=True)
    assert list(back) == list(payload)
    assert encode_value(back, kept=True) == encoded


def _decodes_canonically(data: bytes, kept: bool = False) -> None:
    try:
        value = decode_value(data, kept=kept)
    except CodecError:
        return
    assert encode_value(value, kept=kept) == data  # accepted: exactly the writer's bytes


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64), st.booleans())
@example(b"\x0a" + b"\x01\x02\x0a\x01" * 600, False)  # runs deep, truncated
@example(b"\x03" + b"\x00" * 2000, False)
@example(b"\x09" + b"1E+99999999999999999999", False)
def test_any_bytes_decode_canonically_or_raise_codec_error(data: bytes, kept: bool) -> None:
    _decodes_canonically(data, kept)


@settings(max_examples=200, deadline=None)
@given(VALUES, st.data())
def test_mutated_encodings_decode_canonically_or_raise_codec_error(value: Any, data: Any) -> None:
    encoded = bytearray(encode_value(value))
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.integers(0, len(encoded)))
        action = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if action == "insert" or where == len(encoded):
            encoded.insert(where, data.draw(st.integers(0, 255)))
        elif action == "delete":
            del encoded[where]
        else:
            encoded[where] ^= 1 << data.draw(st.integers(0, 7))
    _decodes_canonically(bytes(encoded))


@settings(max_examples=50, deadline=None)
@given(st.integers(MAX_DEPTH + 1, 3000))
def test_any_nesting_past_the_limit_is_refused_on_both_sides(depth: int) -> None:
    value: Any = None
    for _ in range(depth):
        value = [value] if depth % 2 else {"k": value}
    try:
        encode_value(value)
    except CodecError as exc:
        assert exc.kind == "value too deep"
    else:
        raise AssertionError("encoded a value nested past the limit")


def test_decimal_edges() -> None:
    for text in ("0E-6176", "-0E+6111", "sNaN", "-NaN12", "1.000"):
        assert str(decode_value(encode_value(Decimal(text)))) == text
