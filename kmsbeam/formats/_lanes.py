"""Reusable scratch buffers for the batch paths of envelope v1: ``Lanes`` (``k`` slots of one
width in one buffer, with a memoryview per slot made once), the per-thread ``nonces`` and
``slices`` of a layout, so a batch builds no per-value nonce or plaintext object in Python.

Nothing here decides a nonce: ``Sealer`` reserves the counters, ``nonces`` only writes them.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

__all__ = ["Lanes", "interleaved", "nonces", "openings", "slices"]

_T = TypeVar("_T")
_local = threading.local()
_MAX_CACHED = 32


class Lanes:
    """``k`` slots of ``width`` bytes, one after the other in ``buf``; ``views[i]`` is slot
    ``i``. Not thread-safe: one owner at a time (a per-thread cache or an engine)."""

    __slots__ = ("buf", "k", "views", "width")

    def __init__(self, k: int, width: int) -> None:
        self.k, self.width = k, width
        self.buf = bytearray(k * width)
        view = memoryview(self.buf)
        self.views = [view[i : i + width] for i in range(0, k * width, width)]

    def fill(self, data: bytes) -> list[memoryview]:
        """The slots holding ``data`` (``k * width`` bytes)."""
        if len(data) != len(self.buf):
            raise ValueError("the data does not fill the lanes")
        self.buf[:] = data
        return self.views

    def clear(self) -> None:
        self.buf[:] = bytes(len(self.buf))

    def __repr__(self) -> str:
        return f"Lanes(k={self.k}, width={self.width})"


class _Nonces:
    """``k`` nonces (8 zero bytes || 4-byte counter) refilled by one ``struct`` call."""

    __slots__ = ("counters", "lanes", "pack")

    def __init__(self, k: int) -> None:
        self.lanes = Lanes(k, 12)
        self.counters = [v[8:] for v in self.lanes.views]
        self.pack = struct.Struct(">" + "8xI" * k).pack_into


def _cached(key: tuple[Any, ...], make: Callable[[], _T]) -> _T:
    cache: dict[tuple[Any, ...], Any] | None = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = {}
    hit = cache.get(key)
    if hit is None:
        if len(cache) >= _MAX_CACHED:
            cache.clear()
        hit = cache[key] = make()
    return hit


def nonces(first: int, k: int) -> tuple[list[memoryview], list[memoryview]]:
    """(nonces, their 4-byte counters) for the counters ``first .. first + k - 1``: views into
    this thread's buffer for ``k``, valid until its next call with the same ``k``."""
    n = _cached(("nonces", k), lambda: _Nonces(k))
    n.pack(n.lanes.buf, 0, *range(first, first + k))
    return n.lanes.views, n.counters


class _Openings:
    """``k`` values every ``stride`` bytes, each with its counter at ``offset`` and its
    ciphertext (tag last) after it, up to ``offset + length``."""

    __slots__ = ("cts", "lanes", "unpack")

    def __init__(self, k: int, stride: int, offset: int, length: int) -> None:
        self.lanes = Lanes(k, stride)
        self.cts = [v[offset + 4 : offset + length] for v in self.lanes.views]
        self.unpack = struct.Struct(">" + f"{offset}xI{stride - offset - 4}x" * k).unpack_from


def openings(
    data: bytes, k: int, stride: int, offset: int, length: int
) -> tuple[list[memoryview], list[memoryview]]:
    """(nonces, ciphertexts) of ``k`` values laid out every ``stride`` bytes of ``data`` as
    ``openings`` describes: views into this thread's buffers, valid until the next call."""
    o = _cached(("openings", k, stride, offset, length), lambda: _Openings(k, stride, offset, length))
    o.lanes.fill(data)
    n = _cached(("nonces", k), lambda: _Nonces(k))
    n.pack(n.lanes.buf, 0, *o.unpack(o.lanes.buf))
    return n.lanes.views, o.cts


def interleaved(k: int, *columns: bytes | Sequence[bytes | memoryview]) -> bytes:
    """The items ``i`` of the columns, for ``i < k``, joined in that order: a ``bytes``
    column is that constant every time, any other holds ``k`` items. One list of parts per
    thread, filled by slice assignments, costs less than joining a generator."""
    n = len(columns)
    parts: list[Any] = _cached(("parts", k, n), lambda: [b""] * (k * n))
    for j, column in enumerate(columns):
        parts[j::n] = [column] * k if isinstance(column, bytes) else column
    return b"".join(parts)


def slices(k: int, size: int, step: int | None = None) -> list[slice]:
    """``slice(i * step, i * step + size)`` for ``i < k`` (``step`` defaults to ``size``)."""
    stride = size if step is None else step
    return _cached(("slices", k, size, stride),
                   lambda: [slice(i, i + size) for i in range(0, k * stride, stride)])  # fmt: skip
