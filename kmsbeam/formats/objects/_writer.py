"""``ObjectWriter``: encrypts a stream into object stream v1, one chunk at a time.

Memory is bounded by two chunk buffers whatever the object size. A chunk is sealed only once
the writer knows whether it is the last one (more data arrived, or ``close()``), so the last
chunk carries the "last" nonce flag and a truncated object never authenticates. A whole chunk
written as ``bytes`` (immutable) waits for that decision as it is, without a copy.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import IO, Any, NoReturn

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsbeam.keys.calls import count_call
from kmsbeam.keys.source import DataKey, KeySource, check_context
from kmsbeam.formats.objects._format import (
    DEFAULT_CHUNK_SIZE,
    TAG_SIZE,
    ObjectHeader,
    chunk_key,
    chunk_nonce,
)

__all__ = ["ObjectWriter", "resolve_key_source"]


def resolve_key_source(key: str | KeySource) -> KeySource:
    """A key source from a key URI (opened through the per-process cache) or as given."""
    if isinstance(key, str):
        from kmsbeam.keys.registry import open_key_source

        return open_key_source(key)
    return key


class ObjectWriter(io.BufferedIOBase):
    """A writable binary file that encrypts what is written to it into ``raw``.

    One fresh data key per object (``generate_data_key(context)`` at construction). The
    object is complete only after ``close()``: leaving a ``with`` block by an exception, or
    calling ``abort()``, writes no last chunk and aborts ``raw`` when it can (the OSS
    multipart writer then leaves no object at all); a writer garbage-collected before
    ``close()`` is aborted too, never silently completed.

    Args:
        raw: the binary sink (a file, an OSS multipart writer, a Beam file handle).
        key: a key URI or an open ``KeySource``.
        context: the encryption context, bound by the key source and stored in the header.
        chunk_size: plaintext bytes per chunk (default 1 MiB).
        close_raw: close ``raw`` on ``close()`` (default) or leave it open.
    """

    def __init__(
        self,
        raw: IO[bytes] | Any,
        key: str | KeySource,
        *,
        context: Mapping[str, str] | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        close_raw: bool = True,
    ) -> None:
        source = resolve_key_source(key)
        ctx = check_context(context)
        count_call("kms_calls_generate_data_key")
        data_key = source.generate_data_key(ctx)
        count_call("data_keys_generated")
        self._setup(raw, data_key, source.uri, ctx, chunk_size, close_raw, None)

    @classmethod
    def with_data_key(
        cls,
        raw: IO[bytes] | Any,
        data_key: DataKey,
        key_uri: str,
        *,
        context: Mapping[str, str] | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        close_raw: bool = True,
        object_id: bytes | None = None,
    ) -> ObjectWriter:
        """A writer for a data key generated elsewhere (test vectors, a caller's own policy).

        A data key must never encrypt two objects with the same ``object_id``: leave it None
        (random) unless reproducing a vector.
        """
        self = cls.__new__(cls)
        self._setup(raw, data_key, key_uri, check_context(context), chunk_size, close_raw, object_id)
        return self

    def _setup(
        self, raw: Any, data_key: DataKey, key_uri: str, context: dict[str, str],
        chunk_size: int, close_raw: bool, object_id: bytes | None,
    ) -> None:  # fmt: skip
        super().__init__()
        dek = data_key.plaintext
        header = ObjectHeader.new(dek, data_key.wrapped, key_uri, context, chunk_size)
        if object_id is not None:
            header = ObjectHeader(chunk_size, object_id, header.commitment, key_uri,
                                  header.context, header.wrapped)  # fmt: skip
        self.header = header
        self._aead = AESGCM(chunk_key(dek, header.object_id))
        self._aad = header.preamble
        self._raw = raw
        self._close_raw = close_raw
        self._size = chunk_size
        self._buf = bytearray(chunk_size)
        self._out = bytearray(chunk_size + TAG_SIZE)
        self._fill = 0
        self._held: memoryview | None = None  # a whole chunk of the caller's bytes, not sealed yet
        self._index = 0
        self._finished = False
        self.bytes_in = 0
        self.bytes_out = 0
        self._emit(header.to_bytes())

    def __repr__(self) -> str:
        return f"ObjectWriter({self.header!r}, bytes_in={self.bytes_in})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("an ObjectWriter holds a data key and never pickles")

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.bytes_in

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = self._raw.write(view)
            if n is None:
                raise BlockingIOError("the sink of an ObjectWriter must be blocking")
            view = view[n:]
            self.bytes_out += n

    def _seal(self, data: memoryview | bytearray, last: bool) -> None:
        out = self._out if len(data) == self._size else bytearray(len(data) + TAG_SIZE)
        self._aead.encrypt_into(chunk_nonce(self._index, last), data, self._aad, out)
        self._index += 1
        self._emit(out)

    def write(self, data: Any) -> int:
        if self._finished:
            raise ValueError("write to a closed ObjectWriter")
        view = memoryview(data).cast("B")
        n, pos, size = len(view), 0, self._size
        keep = type(data) is bytes  # immutable: a whole chunk of it may wait without a copy
        while pos < n:
            if self._held is not None:  # more data follows: the held chunk is not the last
                self._seal(self._held, last=False)
                self._held = None
            elif self._fill == size:  # likewise for the buffered chunk
                self._seal(self._buf, last=False)
                self._fill = 0
            if self._fill == 0 and (n - pos > size or (keep and n - pos == size)):
                chunk = view[pos : pos + size]  # a whole chunk straight from the caller
                pos += size
                if pos < n:
                    self._seal(chunk, last=False)
                else:
                    self._held = chunk
                continue
            take = min(size - self._fill, n - pos)
            self._buf[self._fill : self._fill + take] = view[pos : pos + take]
            self._fill += take
            pos += take
        self.bytes_in += n
        return n

    def flush(self) -> None:
        """Chunks are written as they fill; the last one only on ``close()``."""

    def close(self) -> None:
        """Seal the last chunk and close (or flush) ``raw``: the object is complete."""
        if self._finished:
            return
        try:
            last = self._held if self._held is not None else memoryview(self._buf)[: self._fill]
            self._seal(last, last=True)
            self._finished = True
            if self._close_raw:
                self._raw.close()
            elif hasattr(self._raw, "flush"):
                self._raw.flush()
        except BaseException:
            self.abort()
            raise
        finally:
            self._drop()

    def abort(self) -> None:
        """Give up: no last chunk; ``raw.abort()`` if it has one (else it is closed as is)."""
        if self._finished:
            return
        self._finished = True
        self._drop()
        abort = getattr(self._raw, "abort", None)
        if abort is not None:
            abort()
        elif self._close_raw:
            self._raw.close()

    def _drop(self) -> None:
        self._buf = self._out = bytearray()
        self._held = None
        super().close()

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        if not getattr(self, "_finished", True):
            self.abort()
