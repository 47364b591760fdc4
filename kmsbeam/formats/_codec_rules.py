"""The value codec's shared rules: its limits, its one error, the kept marker and varints.

See ``kmsbeam.formats.codec`` (the public face) and ``docs/FORMAT.md``, "Value codec".
"""

from __future__ import annotations

import struct

from kmsbeam.errors import MalformedValueError, RecordError

__all__ = [
    "KEPT", "MAX_DECIMAL_CHARS", "MAX_DEPTH", "MAX_INT_BYTES", "STR_TAG", "CodecError",
    "read_varint", "write_varint",
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
