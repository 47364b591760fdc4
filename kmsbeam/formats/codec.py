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
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from kmsbeam.formats._codec_read import decode as _decode
from kmsbeam.formats._codec_rules import (
    _DECIMAL_EXPONENTS,
    _FLOAT,
    KEPT,
    MAX_DECIMAL_CHARS,
    MAX_DEPTH,
    MAX_INT_BYTES,
    STR_TAG,
    CodecError,
    _too_deep,
    read_varint,
    write_varint,
)

__all__ = [
    "KEPT", "MAX_DECIMAL_CHARS", "MAX_DEPTH", "MAX_INT_BYTES", "STR_TAG", "CodecError",
    "decode_value", "encode_value", "read_varint", "write_varint",
]  # fmt: skip


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


def decode_value(data: bytes, *, kept: bool = False) -> Any:
    """Decode tag byte + payload back to the value.

    Args:
        kept: ``data`` is a record payload: a map whose values may be the ``KEPT`` marker.

    Raises:
        CodecError: not an encoding ``encode_value`` can produce (unknown tag, truncated,
            trailing bytes, non-minimal, duplicate key, non-canonical text, over a limit). It
            is the only error: whatever the bytes, nothing else is raised.
    """
    return _decode(data if type(data) is bytes else bytes(data), kept)
