"""The value codec's reader: accepts exactly what ``kmsbeam.formats.codec.encode_value`` writes.

Depth-bounded (never past ``MAX_DEPTH`` levels of recursion), positions instead of slices (no
copies of nested payloads), one error (``CodecError``) whatever the bytes.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from kmsbeam.formats._codec_rules import (
    _DECIMAL_EXPONENTS,
    _FLOAT,
    _MAX_DATE_CHARS,
    KEPT,
    MAX_DECIMAL_CHARS,
    MAX_DEPTH,
    MAX_INT_BYTES,
    CodecError,
    _invalid,
    _too_deep,
)

__all__ = ["decode"]


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while pos < end and shift <= 56:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and shift:
                raise _invalid("a varint is not minimal")
            return result, pos
        shift += 7
    raise _invalid("a varint is truncated or longer than 9 bytes")


def _utf8(buf: bytes, pos: int, end: int) -> str:
    try:
        return buf[pos:end].decode("utf-8")
    except UnicodeDecodeError:
        raise _invalid("text is not UTF-8") from None


def _decode_int(buf: bytes, pos: int, end: int) -> int:
    n = end - pos
    if n > MAX_INT_BYTES:
        raise CodecError("value too large", f"an int holds at most {MAX_INT_BYTES} bytes")
    if n and (
        (buf[pos] == 0 and (n == 1 or buf[pos + 1] < 0x80))
        or (buf[pos] == 0xFF and n > 1 and buf[pos + 1] >= 0x80)
    ):
        raise _invalid("an int is not in its minimal length")
    return int.from_bytes(buf[pos:end], "big", signed=True)


def _canonical(parse: Callable[[str], Any], show: Callable[[Any], str], what: str,
               buf: bytes, pos: int, end: int) -> Any:  # fmt: skip
    if end - pos > _MAX_DATE_CHARS:
        raise _invalid(f"a {what} is not in its canonical form")
    text = _utf8(buf, pos, end)
    try:
        value = parse(text)
    except ValueError:
        raise _invalid(f"a {what} is not in its canonical form") from None
    if show(value) != text:
        raise _invalid(f"a {what} is not in its canonical form")
    return value


def _decode_decimal(buf: bytes, pos: int, end: int) -> Decimal:
    if end - pos > MAX_DECIMAL_CHARS:
        raise CodecError("value too large", f"a decimal has at most {MAX_DECIMAL_CHARS} characters")
    text = _utf8(buf, pos, end)
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise _invalid("a decimal is not in its canonical form") from None
    if str(value) != text:
        raise _invalid("a decimal is not in its canonical form")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent not in _DECIMAL_EXPONENTS:
        raise CodecError("value too large", "a decimal's exponent is from -6176 to 6111")
    return value


def _empty(value: Any) -> Callable[[bytes, int, int], Any]:
    def dec(buf: bytes, pos: int, end: int) -> Any:
        if pos != end:
            raise _invalid("a None, bool or kept marker has a payload")
        return value

    return dec


def _float(buf: bytes, pos: int, end: int) -> float:
    if end - pos != 8:
        raise _invalid("a float is not 8 bytes")
    return float(_FLOAT.unpack_from(buf, pos)[0])


_LEAVES: dict[int, Callable[[bytes, int, int], Any]] = {
    0x00: _empty(None),
    0x01: _empty(False),
    0x02: _empty(True),
    0x03: _decode_int,
    0x04: _float,
    0x05: _utf8,
    0x06: lambda buf, pos, end: buf[pos:end],
    0x07: lambda buf, pos, end: _canonical(
        _dt.date.fromisoformat, _dt.date.isoformat, "date", buf, pos, end),
    0x08: lambda buf, pos, end: _canonical(
        _dt.datetime.fromisoformat, _dt.datetime.isoformat, "datetime", buf, pos, end),
    0x09: _decode_decimal,
}  # fmt: skip


def _decode(buf: bytes, pos: int, end: int, depth: int, kept: bool) -> Any:
    """The value encoded in ``buf[pos:end]``, inside ``depth`` lists and maps; ``kept``: the
    kept marker is allowed here (a value of a record payload's top-level map)."""
    if pos >= end:
        raise _invalid("an encoding is empty")
    tag = buf[pos]
    leaf = _LEAVES.get(tag)
    if leaf is not None:
        return leaf(buf, pos + 1, end)
    pos += 1
    if tag == 0x0C:
        if pos != end:
            raise _invalid("a None, bool or kept marker has a payload")
        if not kept:
            raise _invalid("the kept marker is only a value of a record payload's top-level map")
        return KEPT
    if tag not in (0x0A, 0x0B):
        raise _invalid("unknown tag")
    if depth >= MAX_DEPTH:
        raise _too_deep()
    count, pos = _varint(buf, pos, end)
    out: Any = [] if tag == 0x0A else {}
    for _ in range(count):
        if tag == 0x0B:
            size, pos = _varint(buf, pos, end)
            if size > end - pos:
                raise _invalid("a length runs past the end")
            key = _utf8(buf, pos, pos + size)
            if key in out:
                raise _invalid("a map key appears twice")
            pos += size
        size, pos = _varint(buf, pos, end)
        if size > end - pos:
            raise _invalid("a length runs past the end")
        item = _decode(buf, pos, pos + size, depth + 1, kept and depth == 0)
        pos += size
        if tag == 0x0A:
            out.append(item)
        else:
            out[key] = item
    if pos != end:
        raise _invalid("bytes follow the last item")
    return out


def decode(buf: bytes, kept: bool) -> Any:
    """The value encoded in ``buf`` (see ``kmsbeam.formats.codec.decode_value``)."""
    if kept and buf[:1] != b"\x0b":
        raise _invalid("a record payload is a map")
    try:
        return _decode(buf, 0, len(buf), 0, kept)
    except RecursionError:  # only when the caller is already near the recursion limit
        raise _too_deep() from None
