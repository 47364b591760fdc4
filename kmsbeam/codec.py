"""The typed plaintext codec: how a Python value becomes the bytes that get encrypted.

Every encoding is one tag byte followed by a payload (see ``docs/FORMAT.md``, "Value codec"):

====  ==========  ==========================================================================
tag   type        payload
====  ==========  ==========================================================================
0x00  None        empty
0x01  False       empty
0x02  True        empty
0x03  int         signed big-endian two's complement, minimal length (0 is empty)
0x04  float       IEEE 754 binary64, big-endian (8 bytes)
0x05  str         UTF-8
0x06  bytes       the bytes
0x07  date        ISO 8601 text ``YYYY-MM-DD``
0x08  datetime    ISO 8601 text from ``isoformat()`` (naive stays naive; aware keeps its offset)
0x09  Decimal     ``str(Decimal)`` text (keeps exponent, NaN, Infinity)
0x0A  list        varint count, then per item: varint length, item encoding
0x0B  dict        varint count, then per entry: varint length, UTF-8 key, varint length, value
0x0C  kept        empty: a field left in cleartext by the record format (record format only)
====  ==========  ==========================================================================

Varints are unsigned LEB128. Tuples encode as lists; dict keys must be ``str``. A type with no
encoding raises ``TypeError``.

Limits and strictness (the same on both sides, so a writer never produces what a reader
refuses): lists and maps nest at most ``MAX_DEPTH`` levels, ints hold at most
``MAX_INT_BYTES`` bytes, decimals at most ``MAX_DECIMAL_CHARS`` characters with an exponent in
IEEE 754 decimal128's range; the kept marker appears only as a value of a record payload's
top-level map. The reader accepts only what the writer produces: minimal varints and ints,
valid UTF-8, no duplicate map keys, canonical date, datetime and decimal text, no trailing
bytes. A value breaking a rule raises ``CodecError`` (a ``RecordError``: one record's
failure, never the job's), and nothing else.
"""

from __future__ import annotations

import datetime as _dt
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from kmsbeam.errors import MalformedValueError, RecordError

__all__ = [
    "KEPT", "MAX_DECIMAL_CHARS", "MAX_DEPTH", "MAX_INT_BYTES", "STR_TAG", "CodecError",
    "decode_value", "encode_value", "read_varint", "write_varint",
]  # fmt: skip

_FLOAT = struct.Struct(">d")
STR_TAG = b"\x05"  # the tag of a str value, for encoders with a fast path

MAX_DEPTH = 64  # lists and maps nest at most this deep (the outermost one is level 1)
MAX_INT_BYTES = 1024  # an int's payload: |v| < 2**8191, well inside int<->str limits
MAX_DECIMAL_CHARS = 1024  # a decimal's text
_DECIMAL_EXPONENTS = range(-6176, 6112)  # IEEE 754 decimal128: -6176 <= exponent <= 6111
_MAX_DATE_CHARS = 64  # longer date or datetime text is never canonical


class CodecError(RecordError):
    """A value the codec refuses: too deep, too large, or (decoding) not a writer's encoding.

    ``str(error)`` is ``"<kind>: <rule>"``; ``for_field(name)`` names the field in between,
    as dead-letter reasons do. Neither ever holds any part of the value.
    """

    def __init__(self, kind: str, rule: str) -> None:
        super().__init__(f"{kind}: {rule}")
        self.kind = kind
        self.rule = rule

    def for_field(self, name: str) -> RecordError:
        """A fresh error naming the field: ``"<kind> (field NAME): <rule>"``."""
        return RecordError(f"{self.kind} (field {name}): {self.rule}")


def _too_deep() -> CodecError:
    return CodecError("value too deep", f"lists and maps nest at most {MAX_DEPTH} levels")


def _invalid(rule: str) -> CodecError:
    return CodecError("invalid value encoding", rule)


class _Kept:
    """Marker for a field the record format leaves in cleartext (tag 0x0C)."""

    _instance: _Kept | None = None

    def __new__(cls) -> _Kept:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "KEPT"

    def __reduce__(self) -> str:
        return "KEPT"


KEPT = _Kept()


def write_varint(n: int) -> bytes:
    """Unsigned LEB128."""
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Read a minimal unsigned LEB128 (< 2**63) at ``pos``; return (value, next position).

    Raises:
        MalformedValueError: truncated, longer than 9 bytes, or not minimal (ends in 0x00).
    """
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 56:
            raise MalformedValueError()
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and shift:
                raise MalformedValueError()  # a trailing zero group: not minimal
            return result, pos
        shift += 7


# ---- encoding -------------------------------------------------------------------------


def _int(v: int) -> bytes:
    if v == 0:
        return b"\x03"
    bits = (v + (v < 0)).bit_length()
    if bits >= MAX_INT_BYTES * 8:
        raise CodecError("value too large", f"an int holds at most {MAX_INT_BYTES} bytes")
    return b"\x03" + v.to_bytes(bits // 8 + 1, "big", signed=True)


def _decimal(v: Decimal) -> bytes:
    text = str(v)
    exponent = v.as_tuple().exponent
    if len(text) > MAX_DECIMAL_CHARS or (isinstance(exponent, int) and exponent not in _DECIMAL_EXPONENTS):
        raise CodecError(
            "value too large",
            f"a decimal has at most {MAX_DECIMAL_CHARS} characters and an exponent "
            "from -6176 to 6111",
        )
    return b"\x09" + text.encode("ascii")


_SCALARS: dict[type, Callable[[Any], bytes]] = {
    type(None): lambda v: b"\x00",
    bool: lambda v: b"\x02" if v else b"\x01",
    int: _int,
    float: lambda v: b"\x04" + _FLOAT.pack(v),
    str: lambda v: STR_TAG + v.encode("utf-8"),
    bytes: lambda v: b"\x06" + v,
    bytearray: lambda v: b"\x06" + bytes(v),
    memoryview: lambda v: b"\x06" + v.tobytes(),
    # the base classes' isoformat: a subclass (pandas' Timestamp) may print more digits
    _dt.date: lambda v: b"\x07" + _dt.date.isoformat(v).encode("ascii"),
    _dt.datetime: lambda v: b"\x08" + _dt.datetime.isoformat(v).encode("ascii"),
    Decimal: _decimal,
}
# Subclasses (IntEnum, OrderedDict, str subclasses...) fall back on isinstance, most specific
# first: bool before int, datetime before date.
_FALLBACK: tuple[tuple[type, type], ...] = (
    (bool, bool), (int, int), (float, float), (str, str), (bytes, bytes),
    (_dt.datetime, _dt.datetime), (_dt.date, _dt.date), (Decimal, Decimal),
    (list, list), (tuple, list), (dict, dict),
)  # fmt: skip


def _encode(v: Any, depth: int) -> bytes:
    """``v``'s encoding; ``depth`` = the number of lists and maps around it."""
    kind: type = type(v)
    enc = _SCALARS.get(kind)
    if enc is not None:
        return enc(v)
    if kind is not list and kind is not tuple and kind is not dict:
        for cls, as_cls in _FALLBACK:
            if isinstance(v, cls):
                kind = as_cls
                break
        else:
            raise TypeError(f"values of type {type(v).__name__} cannot be encrypted")
        if kind in _SCALARS:
            return _SCALARS[kind](v)
    if depth >= MAX_DEPTH:
        raise _too_deep()
    if kind is dict:
        return _dict(v, depth + 1, False)
    parts = [b"\x0a", write_varint(len(v))]
    for item in v:
        enc_item = _encode(item, depth + 1)
        parts += (write_varint(len(enc_item)), enc_item)
    return b"".join(parts)


def _dict(v: dict[Any, Any], depth: int, kept: bool) -> bytes:
    parts = [b"\x0b", write_varint(len(v))]
    for key, item in v.items():
        if not isinstance(key, str):
            raise TypeError(f"dict keys must be str to be encrypted, not {type(key).__name__}")
        k = key.encode("utf-8")
        enc = b"\x0c" if kept and item is KEPT else _encode(item, depth)
        parts += (write_varint(len(k)), k, write_varint(len(enc)), enc)
    return b"".join(parts)


def encode_value(v: Any, *, kept: bool = False) -> bytes:
    """Encode a value as tag byte + payload.

    Args:
        kept: ``v`` is a record payload: a dict whose values may be the ``KEPT`` marker.

    Raises:
        TypeError: the value (or something nested in it) has no encoding (``KEPT`` has none
            outside a record payload).
        CodecError: the value breaks a limit (nesting, int or decimal size) or holds text
            that is not Unicode (a lone surrogate).
    """
    try:
        if kept:
            if not isinstance(v, dict):
                raise TypeError("a record payload is a dict")
            return _dict(v, 1, True)
        return _encode(v, 0)
    except UnicodeEncodeError:
        raise CodecError("invalid text", "a string holds a lone surrogate, not Unicode text") from None
    except RecursionError:  # only when the caller is already near the recursion limit
        raise _too_deep() from None


# ---- decoding: only what ``encode_value`` produces --------------------------------------


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


def decode_value(data: bytes, *, kept: bool = False) -> Any:
    """Decode tag byte + payload back to the value.

    Args:
        kept: ``data`` is a record payload: a map whose values may be the ``KEPT`` marker.

    Raises:
        CodecError: not an encoding ``encode_value`` can produce (unknown tag, truncated,
            trailing bytes, non-minimal, duplicate key, non-canonical text, over a limit). It
            is the only error: whatever the bytes, nothing else is raised.
    """
    buf = data if type(data) is bytes else bytes(data)
    if kept and buf[:1] != b"\x0b":
        raise _invalid("a record payload is a map")
    try:
        return _decode(buf, 0, len(buf), 0, kept)
    except RecursionError:  # only when the caller is already near the recursion limit
        raise _too_deep() from None
