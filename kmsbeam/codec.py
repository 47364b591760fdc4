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

Varints are unsigned LEB128. Tuples encode as lists; dict keys must be ``str``. Anything
else raises ``TypeError`` (so a pipeline can dead-letter the record with a reason).
"""

from __future__ import annotations

import datetime as _dt
import struct
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from kmsbeam.errors import MalformedValueError

__all__ = ["KEPT", "STR_TAG", "decode_value", "encode_value", "read_varint", "write_varint"]

_FLOAT = struct.Struct(">d")
STR_TAG = b"\x05"  # the tag of a str value, for encoders with a fast path


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
    """Read an unsigned LEB128 at ``pos``; return (value, next position)."""
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise MalformedValueError()
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _int(v: int) -> bytes:
    if v == 0:
        return b"\x03"
    return b"\x03" + v.to_bytes((v + (v < 0)).bit_length() // 8 + 1, "big", signed=True)


def _list(v: list[Any] | tuple[Any, ...]) -> bytes:
    parts = [b"\x0a", write_varint(len(v))]
    for item in v:
        enc = encode_value(item)
        parts += (write_varint(len(enc)), enc)
    return b"".join(parts)


def _dict(v: dict[Any, Any]) -> bytes:
    parts = [b"\x0b", write_varint(len(v))]
    for key, item in v.items():
        if not isinstance(key, str):
            raise TypeError(f"dict keys must be str to be encrypted, not {type(key).__name__}")
        k = key.encode("utf-8")
        enc = encode_value(item)
        parts += (write_varint(len(k)), k, write_varint(len(enc)), enc)
    return b"".join(parts)


_ENCODERS: dict[type, Callable[[Any], bytes]] = {
    type(None): lambda v: b"\x00",
    bool: lambda v: b"\x02" if v else b"\x01",
    int: _int,
    float: lambda v: b"\x04" + _FLOAT.pack(v),
    str: lambda v: STR_TAG + v.encode("utf-8"),
    bytes: lambda v: b"\x06" + v,
    bytearray: lambda v: b"\x06" + bytes(v),
    memoryview: lambda v: b"\x06" + v.tobytes(),
    _dt.date: lambda v: b"\x07" + v.isoformat().encode("ascii"),
    _dt.datetime: lambda v: b"\x08" + v.isoformat().encode("ascii"),
    Decimal: lambda v: b"\x09" + str(v).encode("ascii"),
    list: _list,
    tuple: _list,
    dict: _dict,
    _Kept: lambda v: b"\x0c",
}
# Subclasses (IntEnum, OrderedDict, numpy-free str subclasses...) fall back on isinstance,
# most specific first: bool before int, datetime before date.
_FALLBACK: tuple[tuple[type, type], ...] = (
    (bool, bool), (int, int), (float, float), (str, str), (bytes, bytes),
    (_dt.datetime, _dt.datetime), (_dt.date, _dt.date), (Decimal, Decimal),
    (list, list), (tuple, tuple), (dict, dict),
)  # fmt: skip


def encode_value(v: Any) -> bytes:
    """Encode a value as tag byte + payload.

    Raises:
        TypeError: the value (or something nested in it) has no encoding.
    """
    enc = _ENCODERS.get(type(v))
    if enc is None:
        for cls, as_cls in _FALLBACK:
            if isinstance(v, cls):
                enc = _ENCODERS[as_cls]
                break
        else:
            raise TypeError(f"values of type {type(v).__name__} cannot be encrypted")
    return enc(v)


def _text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedValueError() from exc


def _decode_list(p: bytes) -> list[Any]:
    n, pos = read_varint(p, 0)
    out = []
    for _ in range(n):
        size, pos = read_varint(p, pos)
        if pos + size > len(p):
            raise MalformedValueError()
        out.append(decode_value(p[pos : pos + size]))
        pos += size
    if pos != len(p):
        raise MalformedValueError()
    return out


def _decode_dict(p: bytes) -> dict[str, Any]:
    n, pos = read_varint(p, 0)
    out: dict[str, Any] = {}
    for _ in range(n):
        ksize, pos = read_varint(p, pos)
        key = _text(p[pos : pos + ksize])
        pos += ksize
        size, pos = read_varint(p, pos)
        if pos + size > len(p):
            raise MalformedValueError()
        out[key] = decode_value(p[pos : pos + size])
        pos += size
    if pos != len(p):
        raise MalformedValueError()
    return out


def _empty(value: Any) -> Callable[[bytes], Any]:
    def dec(p: bytes) -> Any:
        if p:
            raise MalformedValueError()
        return value

    return dec


def _float(p: bytes) -> float:
    if len(p) != 8:
        raise MalformedValueError()
    return float(_FLOAT.unpack(p)[0])


_DECODERS: dict[int, Callable[[bytes], Any]] = {
    0x00: _empty(None),
    0x01: _empty(False),
    0x02: _empty(True),
    0x03: lambda p: int.from_bytes(p, "big", signed=True),
    0x04: _float,
    0x05: _text,
    0x06: bytes,
    0x07: lambda p: _dt.date.fromisoformat(_text(p)),
    0x08: lambda p: _dt.datetime.fromisoformat(_text(p)),
    0x09: lambda p: Decimal(_text(p)),
    0x0A: _decode_list,
    0x0B: _decode_dict,
    0x0C: _empty(KEPT),
}


def decode_value(data: bytes) -> Any:
    """Decode tag byte + payload back to the value.

    Raises:
        MalformedValueError: unknown tag or a payload that does not parse.
    """
    if not data:
        raise MalformedValueError()
    dec = _DECODERS.get(data[0])
    if dec is None:
        raise MalformedValueError()
    try:
        return dec(data[1:])
    except MalformedValueError:
        raise
    except (ValueError, ArithmeticError) as exc:
        raise MalformedValueError() from exc
