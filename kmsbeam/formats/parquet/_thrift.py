"""A small reader for Thrift's compact protocol: enough to read Parquet footers by hand.

``kmsbeam inspect`` must not ask pyarrow about encrypted column metadata (that can abort the
process), so it reads the footer bytes itself. A struct becomes a dict of field id -> value:
integers, bools, floats, bytes (binary and strings), lists, dicts (structs) and lists of
(key, value) pairs (maps). Malformed or hostile input raises ``FormatError``; sizes are
checked against the bytes left and nesting is bounded, so no input makes it allocate much.
"""

from __future__ import annotations

import struct
from typing import Any

from kmsbeam.errors import FormatError

__all__ = ["read_struct"]

_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY = range(9)
_LIST, _SET, _MAP, _STRUCT = 9, 10, 11, 12
_MAX_DEPTH = 32


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise FormatError("the Parquet footer is truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise FormatError("the Parquet footer holds a malformed integer")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise FormatError("the Parquet footer is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def size(self) -> int:
        n = self.varint()
        if n > len(self.data) - self.pos:  # every element takes at least one byte
            raise FormatError("the Parquet footer is truncated")
        return n

    def value(self, kind: int, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise FormatError("the Parquet footer nests too deeply")
        if kind in (_TRUE, _FALSE):  # only inside lists and maps: one byte each
            return self.byte() == 1
        if kind == _BYTE:
            b = self.byte()
            return b - 256 if b > 127 else b
        if kind in (_I16, _I32, _I64):
            return self.zigzag()
        if kind == _DOUBLE:
            return struct.unpack("<d", self.take(8))[0]
        if kind == _BINARY:
            return self.take(self.size())
        if kind in (_LIST, _SET):
            head = self.byte()
            n = head >> 4
            if n == 15:
                n = self.size()
            return [self.value(head & 0x0F, depth + 1) for _ in range(n)]
        if kind == _MAP:
            n = self.size()
            if not n:
                return []
            types = self.byte()
            return [(self.value(types >> 4, depth + 1), self.value(types & 0x0F, depth + 1))
                    for _ in range(n)]  # fmt: skip
        if kind == _STRUCT:
            return self.struct(depth + 1)
        raise FormatError("the Parquet footer holds an unknown Thrift type")

    def struct(self, depth: int) -> dict[int, Any]:
        out: dict[int, Any] = {}
        last = 0
        while True:
            head = self.byte()
            kind = head & 0x0F
            if kind == _STOP:
                return out
            delta = head >> 4
            last = last + delta if delta else self.zigzag()
            if kind in (_TRUE, _FALSE):
                out[last] = kind == _TRUE
            else:
                out[last] = self.value(kind, depth)


def read_struct(data: bytes, pos: int = 0) -> tuple[dict[int, Any], int]:
    """Read one compact-protocol struct at ``pos``; returns it and the offset after it.

    Raises:
        FormatError: the bytes are not a well-formed struct.
    """
    reader = _Reader(data, pos)
    return reader.struct(0), reader.pos
