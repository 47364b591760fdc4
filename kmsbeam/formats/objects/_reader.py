"""``ObjectReader``: decrypts object stream v1 as a readable (and, when it can, seekable) file.

Each chunk is authenticated before a byte of it is returned. With the object's size known
(a seekable ``raw``, or ``size=``), the reader knows which chunk is the last and can seek to
any plaintext offset, reading only from the chunk that holds it; without it, it looks one
byte ahead to find the last chunk. Memory: two chunk buffers.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from collections.abc import Iterable
from typing import IO, Any, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsbeam.errors import AuthenticationError, ConfigurationError
from kmsbeam.keys.source import KeySource, check_context
from kmsbeam.formats.objects._format import (
    FIXED_SIZE,
    TAG_SIZE,
    ObjectHeader,
    chunk_key,
    chunk_nonce,
    plaintext_size,
)
from kmsbeam.formats.objects._writer import resolve_key_source
from kmsbeam.keys.trust import TrustedKeySources
from kmsbeam.keys.calls import count_call
from kmsbeam.keys.uri import SCHEMES

__all__ = ["ObjectReader", "read_header"]


def _read_exact(raw: Any, view: memoryview) -> int:
    """Fill ``view`` from ``raw``; returns how many bytes were read (less only at EOF)."""
    got = 0
    while got < len(view):
        n = raw.readinto(view[got:]) if hasattr(raw, "readinto") else None
        if n is None:
            chunk = raw.read(len(view) - got)
            n = len(chunk)
            view[got : got + n] = chunk
        if n == 0:
            break
        got += n
    return got


def read_header(raw: Any) -> tuple[ObjectHeader, int]:
    """Read and parse the header at the start of ``raw``; returns it and its size in bytes.

    Raises:
        MalformedValueError: not an object stream v1.
    """
    fixed = bytearray(FIXED_SIZE)
    n = _read_exact(raw, memoryview(fixed))
    block = ObjectHeader.key_block_size(bytes(fixed[:n]))
    rest = bytearray(block)
    if _read_exact(raw, memoryview(rest)) != block:
        raise AuthenticationError()
    return ObjectHeader.parse(bytes(fixed + rest)), FIXED_SIZE + block


def _unwrap(source: KeySource, header: ObjectHeader, context: dict[str, str], where: str) -> bytes:
    count_call("kms_calls_decrypt")
    if header.key_uri and header.key_uri != source.uri:  # maybe the wrong key: say so
        try:
            return source.decrypt_data_key(header.wrapped, context)
        except AuthenticationError:
            # the header's key URI is data: never repeat it (at most its scheme)
            scheme = header.key_uri.partition(":")[0]
            named = f"a {scheme} key" if scheme in SCHEMES else "another key"
            raise ConfigurationError(
                f"{where} was encrypted under another key ({named}) than {source.uri} can "
                "unwrap: read it with the key it was written with"
            ) from None
    return source.decrypt_data_key(header.wrapped, context)


class ObjectReader(io.BufferedIOBase):
    """A readable binary file over an encrypted object in ``raw``.

    Args:
        raw: the encrypted bytes, positioned at the start of the object.
        key: a key URI or ``KeySource`` to unwrap the data key with; None resolves the key
            URI in the header against ``key_sources`` (``kmsbeam.keys.trust``): the header is data,
            so it is only a hint and never makes the reader connect anywhere or load a module.
        key_sources: the caller's configured key sources (``TrustedKeySources`` or key URIs;
            default: ``KMSBEAM_KEY_SOURCES``); used only when ``key`` is None.
        require_keys: strict mode (``kmsbeam.keys.strict``): key URIs, or bare key ids of the
            reader's key source; a data key wrapped under any other master key raises
            ``KeyNotAllowedError`` before any key-source call.
        context: the encryption context; None uses the one stored in the header.
        metadata: the object's ``x-oss-meta-`` entries when it has them: their wrapped key
            (the current one after a rewrap) is used instead of the header's.
        size: the encrypted object's size, if known and ``raw`` cannot seek.
        where: how to name the object in error messages (a path).

    Raises:
        AuthenticationError: tampered, truncated, extended or reordered data, a wrong
            context; raised as soon as the damaged chunk is reached.
        ConfigurationError: ``key`` cannot unwrap a data key from another key.
        UntrustedKeySourceError: ``key`` is None and the header names no configured source.
    """

    def __init__(
        self,
        raw: IO[bytes] | Any,
        key: str | KeySource | None = None,
        *,
        context: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        size: int | None = None,
        where: str = "the object",
        close_raw: bool = True,
        key_sources: TrustedKeySources | Iterable[str] | None = None,
        require_keys: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self._raw = raw
        self._close_raw = close_raw
        header, self._hsize = read_header(raw)
        if metadata is not None:
            header = header.from_metadata(metadata, where)
        self.header = header
        if key is None:
            source = TrustedKeySources.of(key_sources).open(header.key_uri)
        else:
            source = resolve_key_source(key)
        ctx = header.context if context is None else check_context(context)
        if require_keys:
            from kmsbeam.keys.strict import KeyRequirement, qualify_key

            items = (require_keys,) if isinstance(require_keys, str) else tuple(require_keys)
            KeyRequirement([qualify_key(k, source.uri) for k in items]).check(header.wrapped)
        dek = _unwrap(source, header, ctx, where)
        header.check_key(dek)
        self._aead = AESGCM(chunk_key(dek, header.object_id))
        self._aad = header.preamble
        self._size = header.chunk_size
        if size is None and getattr(raw, "seekable", lambda: False)():
            size = raw.seek(0, io.SEEK_END)
            raw.seek(self._hsize)
        self._plain: int | None = None
        self._chunks = 0
        if size is not None:
            self._plain = plaintext_size(size, self._size, self._hsize)
            self._chunks = max(1, -(-self._plain // self._size))
        self._ct = bytearray(self._size + TAG_SIZE)
        self._buf = bytearray(self._size)
        self._view = memoryview(self._buf)[:0]
        self._pos = 0  # offset in the current chunk's plaintext
        self._start = 0  # plaintext offset of the current chunk
        self._index = 0  # the next chunk to read
        self._carry = b""  # one byte read ahead (size unknown)
        self._done = False

    def __repr__(self) -> str:
        return f"ObjectReader({self.header!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("an ObjectReader holds a data key and never pickles")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._plain is not None and bool(getattr(self._raw, "seekable", lambda: False)())

    @property
    def plaintext_size(self) -> int | None:
        """The plaintext size, when the object's size is known."""
        return self._plain

    def _load(self) -> tuple[memoryview, int, bool]:
        """Read the next chunk's ciphertext: (ciphertext view, plaintext length, last)."""
        size, ct = self._size, memoryview(self._ct)
        if self._plain is not None:
            last = self._index == self._chunks - 1
            plain = self._plain - self._index * size if last else size
            if _read_exact(self._raw, ct[: plain + TAG_SIZE]) != plain + TAG_SIZE:
                raise AuthenticationError()  # shorter than its size said
            return ct[: plain + TAG_SIZE], plain, last
        carry = len(self._carry)
        ct[:carry] = self._carry
        got = carry + _read_exact(self._raw, ct[carry:])
        if got == len(ct):
            self._carry = self._raw.read(1)
            last = not self._carry
        else:
            self._carry, last = b"", True
        if got < TAG_SIZE or (got == TAG_SIZE and self._index > 0):
            raise AuthenticationError()  # truncated, or an empty chunk no writer makes
        return ct[:got], got - TAG_SIZE, last

    def _next(self, into: memoryview | None) -> int:
        """Decrypt the next chunk into ``into`` if it fits there, else into the buffer."""
        if self._done:
            return 0
        ct, plain, last = self._load()
        target = into[:plain] if into is not None and len(into) >= plain else None
        out = target if target is not None else memoryview(self._buf)[:plain]
        try:
            self._aead.decrypt_into(chunk_nonce(self._index, last), ct, self._aad, out)
        except InvalidTag:
            raise AuthenticationError() from None
        self._start += len(self._view)
        self._index += 1
        self._done = last
        if target is not None:
            self._start += plain
            self._view, self._pos = memoryview(self._buf)[:0], 0
            return plain
        self._view, self._pos = out, 0
        return 0

    def readinto(self, b: Any) -> int:
        if self.closed:
            raise ValueError("read from a closed ObjectReader")
        out = memoryview(b).cast("B")
        n = 0
        while n < len(out):
            left = len(self._view) - self._pos
            if left:
                take = min(left, len(out) - n)
                out[n : n + take] = self._view[self._pos : self._pos + take]
                self._pos += take
                n += take
                continue
            if self._done:
                break
            n += self._next(out[n:])
        return n

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            parts: list[bytes] = []
            while True:
                chunk = self.read(max(self._size, 1 << 16))
                if not chunk:
                    return b"".join(parts)
                parts.append(chunk)
        buf = bytearray(size)
        n = self.readinto(buf)
        return bytes(buf[:n])

    def read1(self, size: int = -1) -> bytes:
        return self.read(size if size >= 0 else self._size)

    def tell(self) -> int:
        return self._start + self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if not self.seekable() or self._plain is None:
            raise io.UnsupportedOperation("seek needs a seekable raw stream of known size")
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.tell(), io.SEEK_END: self._plain}[whence]
        target = base + offset
        if target < 0:
            raise ValueError("negative seek position")
        start = self._start
        if start <= target < start + len(self._view) or target == self.tell():
            self._pos = target - start
            return target
        index = min(target // self._size, self._chunks - 1)
        self._raw.seek(self._hsize + index * (self._size + TAG_SIZE))
        self._index, self._done, self._carry = index, False, b""
        self._start, self._view, self._pos = index * self._size, memoryview(self._buf)[:0], 0
        if target < self._plain:
            self._next(None)
            self._pos = target - self._start
        else:
            self._start, self._done = target, True
        return target

    def close(self) -> None:
        if not self.closed:
            try:
                if self._close_raw:
                    self._raw.close()
            finally:
                self._buf = self._ct = bytearray()
                self._view = memoryview(self._buf)
                super().close()
